"""autotune: a declarative autotuner for vLLM serving settings."""

__version__ = "0.1.0"
