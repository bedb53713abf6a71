"""durabatch: durable batch LLM processing of documents."""

__version__ = "0.1.0"
