"""Measuring one server: the workload, its request plan, the load client, metrics, stopping."""
