"""An AI gateway: one drop-in OpenAI/Anthropic-compatible endpoint for all of an organisation's LLM traffic."""

__version__ = "0.1.0"
