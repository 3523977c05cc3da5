"""Prompt-injection decisions for one request.

Direct: what the caller wrote (user messages). Indirect: what arrived from elsewhere and the model will read as
data — tool / function results (OpenAI ``tool`` and ``function`` messages, Anthropic ``tool_result`` blocks,
which the dialects turn into ``tool`` messages) and text parts marked as documents. The two are scored
separately, with their own thresholds and actions, because an instruction inside a tool result is suspicious
where the same sentence from the user is not. The scan itself is one call into the Rust core per text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway.compliance import models
from gateway.types import Message

INDIRECT_ROLES = frozenset({"tool", "function"})
# Higher wins when direct and indirect both fire.
SEVERITY = {"flag": 0, "restrict": 1, "quarantine": 2, "reject": 3}


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for part in content or ():
        if isinstance(part, dict):
            t = part.get("text")
            if isinstance(t, str):
                out.append(t)
            for value in (part.get("content"),):  # nested tool_result-like parts
                if value is not None and value is not content:
                    out.extend(_texts(value))
    return out


def texts(messages: list[Message]) -> Iterator[tuple[str, bool]]:
    """Every text the filter scores, with whether it is indirect (tool results and documents) or direct (what
    the user wrote), in one pass over the messages."""
    for m in messages:
        c = m.content
        if m.role in INDIRECT_ROLES:
            for t in _texts(c):
                yield t, True
        elif m.role == "user":
            if isinstance(c, str):
                yield c, False
            elif c:
                for part in c:
                    if isinstance(part, dict):
                        indirect = part.get("type") in ("document", "tool_result")
                        for t in _texts([part]):
                            yield t, indirect


def evaluate(messages: list[Message], profile: Any) -> dict[str, Any] | None:
    """The injection decision for a request, or None when nothing crossed a threshold. Direct and indirect
    texts are scored in the same pass (one call into the core per text); the highest score of each kind counts.

    ``{"kind": "direct"|"indirect", "action": ..., "score": .., "rules": [...], "direct": .., "indirect": ..}``
    """
    scanner = models.injection_scanner()
    d_score = i_score = 0.0
    d_rules: list[str] = []
    i_rules: list[str] = []
    for text, indirect in texts(messages):
        if not text:
            continue
        score, ids, _, _ = scanner.scan(text, indirect)
        if indirect:
            i_score = max(i_score, score)
            i_rules.extend(r for r in ids if r not in i_rules)
        else:
            d_score = max(d_score, score)
            d_rules.extend(r for r in ids if r not in d_rules)
    hits = []
    if d_score >= profile.injection_threshold:
        hits.append(("direct", profile.injection_action, d_score, d_rules))
    if i_score >= profile.indirect_threshold:
        hits.append(("indirect", profile.indirect_action, i_score, i_rules))
    if not hits:
        return None
    kind, action, score, rules = max(hits, key=lambda h: (SEVERITY[h[1]], h[2]))
    return {
        "kind": kind,
        "action": action,
        "score": round(score, 4),
        "rules": rules,
        "direct": round(d_score, 4),
        "indirect": round(i_score, 4),
    }
