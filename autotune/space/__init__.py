"""The search space: tuned and fixed parameters, objectives, rules and combination checks."""
