"""The Optuna study: sampling candidates, screening, pruning, the budget, its storage."""
