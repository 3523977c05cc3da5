"""What identifies an answer: the canonical key, the context fingerprint, and which requests may be cached.

The exact key hashes everything that determines the answer (model group, the model version that would serve it,
messages incl. the system prompt, tools, response_format, sampling parameters) together with the tenant and the
caller's namespace, so two tenants can never share an entry. Fields that only shape delivery (``stream``,
``stream_options``, ``user``, ``metadata``) are left out, so a streamed and a non-streamed ask share one entry.
Dicts are encoded with sorted keys, so field order never splits an entry.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from gateway.config import Config
from gateway.types import ChatRequest, Message

_ENC = msgspec.json.Encoder(order="deterministic")
# Request fields that change the answer. ``stream``/``stream_options``/``user``/``metadata`` only change delivery.
_ANSWER_FIELDS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
)
_DELIVERY_EXTRAS = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier"})


def _digest(parts: Any) -> str:
    return hashlib.blake2b(_ENC.encode(parts), digest_size=16).hexdigest()


def model_versions(cfg: Config) -> dict[str, str]:
    """Per model group, the upstream model versions that may serve it: part of every key, so a version change in
    the config (a new deployment model, a new pin) turns the old entries into misses on its own."""
    return {
        name: g.pin or ",".join(sorted({d.model for d in g.deployments})) for name, g in cfg.models.items()
    }


def version_for(versions: dict[str, str], group: str, pins: tuple[tuple[str, str], ...]) -> str:
    for g, model in pins:
        if g == group:
            return model
    return versions.get(group, "")


def exact_key(scope: tuple[str, str, str, str], req: ChatRequest) -> str:
    """``scope`` is (tenant, namespace, model group, model version)."""
    extra = {k: v for k, v in req.extra.items() if k not in _DELIVERY_EXTRAS} if req.extra else None
    fields = [getattr(req, f) for f in _ANSWER_FIELDS]
    return _digest((scope, req.messages, req.output_cap, fields, extra))


def final_user_text(req: ChatRequest) -> str | None:
    """The text of the last message when it is the user's (what the semantic cache embeds), else None."""
    m = req.messages[-1]
    if m.role != "user":
        return None
    c = m.content
    if isinstance(c, str):
        return c
    if not c or any(p.get("type") != "text" for p in c):
        return None  # images, audio, files: not comparable by text
    return "\n".join(str(p.get("text", "")) for p in c)


def context_fingerprint(scope: tuple[str, str, str, str], req: ChatRequest) -> str:
    """Everything except the final user turn: system prompt, earlier turns, tools, output format, sampling. Two
    requests are semantic neighbours only when this is equal (and the tenant is part of ``scope``)."""
    earlier: list[Message] = req.messages[:-1]
    extra = {k: v for k, v in req.extra.items() if k not in _DELIVERY_EXTRAS} if req.extra else None
    fields = [getattr(req, f) for f in _ANSWER_FIELDS]
    return _digest((scope, earlier, req.output_cap, fields, extra))


def bypass_reason(req: ChatRequest, max_temperature: float) -> str | None:
    """Why this request must neither be answered from nor stored in the cache, or None."""
    if req.n is not None and req.n > 1:
        return "n>1"
    if req.temperature is not None and req.temperature > max_temperature:
        return "temperature"
    last = req.messages[-1]
    if last.role == "tool" or last.tool_calls:
        return "tool_calls_pending"
    return None
