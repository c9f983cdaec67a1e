"""One tuning run end to end: inputs, trials, confirmation, conclusion, re-tunes, validation."""
