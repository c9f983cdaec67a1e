"""The model to serve: resolving its name or path, its tokenizer, the built-in test model."""
