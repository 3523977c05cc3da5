"""Provider simulator: a real HTTP server speaking the OpenAI, Azure OpenAI, Anthropic, Gemini and Bedrock
wire formats, with deterministic output and configurable latency / fault injection per model.

Entry point: :func:`gateway.simulate.server.main` (``gateway simulate`` / ``python -m gateway.simulate``).
"""

from gateway.providers.eventstream import EventStreamDecoder, EventStreamError, encode_event, encode_message

__all__ = ["EventStreamDecoder", "EventStreamError", "encode_event", "encode_message", "main"]


def main(argv: list[str] | None = None) -> int:
    from .server import main as _main

    return _main(argv)
