"""Legacy ``POST /v1/completions`` (text in, text out): LlamaIndex's ``OpenAILike`` and older clients call it.

The prompt becomes one ``user`` message of the canonical request, so every provider can answer it and every stage
applies; the answer goes back as a ``text_completion`` (or its SSE chunks). As in OpenAI's API, ``max_tokens``
defaults to 16. What only a raw completion model can do (``echo``, ``suffix``, ``logprobs``, ``best_of``, several
prompts or token-id prompts) is refused with ``unsupported_feature``.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.dialects.openai import SSE_DONE, error_body, load_json_object
from gateway.errors import GatewayError, unsupported_feature
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Message, Usage

_TYPED = frozenset(
    {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "stream", "user", "seed"}
)
_PASSED = frozenset({"presence_penalty", "frequency_penalty", "logit_bias"})  # OpenAI upstreams take them
_REFUSED = ("echo", "suffix", "logprobs", "best_of")
_FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter"}


def _unsupported(what: str) -> GatewayError:
    return unsupported_feature(
        f"{what} on /v1/completions", "use /v1/chat/completions, or call a completion model directly"
    )


def parse_chat(body: bytes) -> ChatRequest:
    data = load_json_object(body)
    for key in data:
        if key in _REFUSED:
            v = data[key]
            if v is not None and v is not False and v != "" and not (key == "best_of" and v == 1):
                raise _unsupported(f"`{key}`")
        elif key not in _TYPED and key not in _PASSED and key != "stream_options":
            raise _unsupported(f"the request field `{key}`")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError("invalid_request", "Missing required parameter: 'model'.", param="model")
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise _unsupported("several prompts or token-id prompts in one request (send one string per request)")
    if not isinstance(prompt, str):
        raise GatewayError("invalid_request", "prompt: Input should be a string", param="prompt")
    from gateway.dialects.openai import CHAT_FIELDS, convert

    fields = {k: v for k, v in data.items() if k in _TYPED and k != "prompt"}
    fields["messages"] = [{"role": "user", "content": prompt}]
    fields.setdefault("max_tokens", 16)
    if data.get("stream_options") is not None:
        fields["stream_options"] = data["stream_options"]
    fields.update((k, data[k]) for k in _PASSED if k in data)
    req: ChatRequest = convert(fields, ChatRequest, CHAT_FIELDS)
    if req.n is not None and req.n > 1:
        raise _unsupported("`n` > 1")
    req.messages = [Message(role="user", content=prompt)]
    return req


def _usage(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    }


def _text(m: Message) -> str:
    if isinstance(m.content, str):
        return m.content
    return "".join(p.get("text", "") for p in m.content or () if p.get("type") == "text")


def render_response(resp: ChatResponse) -> bytes:
    return orjson.dumps(
        {
            "id": resp.id if resp.id.startswith("cmpl-") else f"cmpl-{resp.id}",
            "object": "text_completion",
            "created": resp.created,
            "model": resp.model,
            "choices": [
                {
                    "text": _text(c.message),
                    "index": c.index,
                    "logprobs": None,
                    "finish_reason": _FINISH.get(c.finish_reason or "stop", "stop"),
                }
                for c in resp.choices
            ],
            "usage": _usage(resp.usage),
        }
    )


class CompletionsStream:
    """Canonical chunks → ``text_completion`` SSE chunks; a usage chunk when the caller asked for one."""

    counts_prompt = False  # the prompt's tokens are reported with the final usage only

    def __init__(self, req: ChatRequest) -> None:
        self.want_usage = req.wants_usage_in_stream
        self.model = req.model
        self.id = ""
        self.created = 0

    def _frame(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id if self.id.startswith("cmpl-") else f"cmpl-{self.id}",
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            obj["usage"] = _usage(usage)
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def chunk(self, c: ChatChunk) -> bytes | None:
        self.id, self.created, self.model = c.id or self.id, c.created or self.created, c.model or self.model
        choices = [
            {
                "text": d.content or "",
                "index": d.index,
                "logprobs": None,
                "finish_reason": _FINISH.get(d.finish_reason, "stop") if d.finish_reason else None,
            }
            for d in c.choices
            if d.content or d.finish_reason
        ]
        return self._frame(choices) if choices else None

    def end(self, usage: Usage, last: ChatChunk | None) -> bytes:
        return (self._frame([], usage) if self.want_usage else b"") + SSE_DONE

    def error(self, err: GatewayError) -> bytes:
        return b"data: " + error_body(err) + b"\n\n"


class CompletionsDialect:
    name = "openai"
    parse_chat = staticmethod(parse_chat)
    render_response = staticmethod(render_response)
    error_body = staticmethod(error_body)
    stream = CompletionsStream
    stream_content_type = "text/event-stream"
