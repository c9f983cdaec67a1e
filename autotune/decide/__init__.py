"""Deciding between measured candidates: scores, Pareto fronts, sequential tests, verdicts."""
