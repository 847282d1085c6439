"""selectkit: choose which examples to fine-tune an LLM on."""

__version__ = "0.1.0"
