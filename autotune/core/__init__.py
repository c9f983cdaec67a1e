"""Foundations that import nothing else of autotune: errors, statistics, units, events, config."""
