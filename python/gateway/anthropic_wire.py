"""Anthropic's wire vocabulary, shared by the Anthropic provider (upstream side) and the Anthropic dialect (caller
side): stop reasons, error types, and usage in Anthropic's terms. Neither side imports the other; the simulator
keeps its own copy on purpose (it is the test oracle)."""

from __future__ import annotations

from gateway.types import Usage

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Anthropic error type → HTTP status, for errors that arrive inside a 200 event stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def usage_to_wire(u: Usage) -> dict[str, int]:
    """Canonical usage in Anthropic's terms (input excludes cache reads and writes)."""
    return {
        "input_tokens": max(0, u.input_tokens - u.cached_tokens - u.cache_creation_tokens),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cached_tokens,
    }
