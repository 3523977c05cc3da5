"""Canonical-side helpers shared by the adapters that do not speak OpenAI (Anthropic, Gemini, Bedrock).

Each adapter's module holds its own wire format; what is here only reads the canonical (OpenAI-shaped) request:
data URLs, tool-call arguments, system messages, and the rule for request fields a wire format can't express.
That rule is "refuse, never drop silently": a field the target has no equivalent for is a 400
``unsupported_feature`` naming the field and the deployment, so the caller learns it at once.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.config import Deployment
from gateway.errors import GatewayError
from gateway.types import ChatRequest, Message

# OpenAI request fields that only steer OpenAI's own storage or cache routing: meaningless elsewhere, safe to skip;
# and ``responses``, the Responses-only fields a native Responses upstream takes (see providers/openai_responses.py).
IGNORABLE_EXTRAS = frozenset({"store", "prompt_cache_key", "safety_identifier", "responses"})

DEFAULT_MAX_TOKENS = 4096
"""Output cap sent to upstreams that require one (Anthropic, Bedrock's Claude) when the caller set none."""


def now() -> int:
    return int(time.time())


def unsupported(dep: Deployment, what: str, hint: str = "") -> GatewayError:
    msg = f"Deployment {dep.id!r} ({dep.provider}) has no equivalent for {what}"
    msg += f"; {hint}" if hint else "; remove it or use a model group backed by a provider that supports it."
    return GatewayError("unsupported_feature", msg)


def check_extras(req: ChatRequest, dep: Deployment, handled: frozenset[str]) -> None:
    """Refuse request fields outside the canonical model that this adapter does not translate."""
    for key in req.extra:
        if key not in handled and key not in IGNORABLE_EXTRAS:
            raise unsupported(dep, f"the request field `{key}`")


def check_common(req: ChatRequest, dep: Deployment) -> None:
    """Canonical fields the non-OpenAI adapters all lack."""
    if req.n is not None and req.n > 1:
        raise unsupported(dep, "`n` > 1", "send one request per completion.")


def assistant_message(
    texts: list[str], calls: list[Any], reasoning: list[str], extra: dict[str, Any] | None = None
) -> Message:
    """The canonical answer from a provider's pieces: text only when there is some or no tool call to carry."""
    return Message(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        reasoning="".join(reasoning) if reasoning else None,
        extra=extra or None,
    )


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media type>;base64,<data>`` → (media type, base64 data); None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        raise GatewayError(
            "invalid_request", "An image data URL must be base64: data:<media type>;base64,<data>."
        )
    return head[:-7] or "application/octet-stream", data


def image_url_of(part: dict[str, Any]) -> str:
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise GatewayError("invalid_request", "An image_url content part needs image_url.url.")
    return url


def parse_arguments(args: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string in the canonical model) as the object other formats want."""
    if isinstance(args, dict):
        return args
    if not args:
        return {}
    try:
        value = orjson.loads(args)
    except orjson.JSONDecodeError:
        raise GatewayError(
            "invalid_request",
            "A tool call's function.arguments is not valid JSON; send the arguments as a JSON object.",
        ) from None
    if not isinstance(value, dict):
        raise GatewayError("invalid_request", "A tool call's function.arguments must be a JSON object.")
    return value


def dump_arguments(value: Any) -> str:
    return orjson.dumps(value if value is not None else {}).decode()


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message's content (text parts joined; other parts contribute nothing)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def split_system(messages: list[Message]) -> tuple[list[Message], list[Message]]:
    """(system and developer messages, the rest). Formats with a separate system field hoist them all."""
    system = [m for m in messages if m.role in ("system", "developer")]
    if not system:
        return [], messages
    return system, [m for m in messages if m.role not in ("system", "developer")]


def tool_names(messages: list[Message]) -> dict[str, str]:
    """tool_call id → function name, for formats whose tool results name the function instead of the call."""
    out: dict[str, str] = {}
    for m in messages:
        for tc in m.tool_calls or ():
            fn = tc.get("function") or {}
            if tc.get("id") and fn.get("name"):
                out[tc["id"]] = fn["name"]
    return out


def json_schema_of(req: ChatRequest) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for; ``{"type": "object"}`` for plain JSON mode; None for text."""
    rf = req.response_format
    if not rf:
        return None
    kind = rf.get("type")
    if kind == "json_schema":
        js = rf.get("json_schema") or {}
        schema = js.get("schema") if isinstance(js, dict) else None
        return schema if isinstance(schema, dict) else {"type": "object"}
    if kind == "json_object":
        return {"type": "object"}
    return None


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)
