"""Prompt-injection decisions for one request.

Direct: what the caller wrote (user messages). Indirect: what arrived from elsewhere and the model will read as
data — tool / function results (OpenAI ``tool`` and ``function`` messages, Anthropic ``tool_result`` blocks,
which the dialects turn into ``tool`` messages) and text parts marked as documents. The two are scored
separately, with their own thresholds and actions, because an instruction inside a tool result is suspicious
where the same sentence from the user is not. The scan itself is one call into the Rust core per text.
"""

from __future__ import annotations

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


def split(messages: list[Message]) -> tuple[list[str], list[str]]:
    """(direct texts: user messages, indirect texts: tool results and documents)."""
    direct: list[str] = []
    indirect: list[str] = []
    for m in messages:
        if m.role in INDIRECT_ROLES:
            indirect.extend(_texts(m.content))
        elif m.role == "user":
            if isinstance(m.content, list):
                for part in m.content:
                    if isinstance(part, dict) and part.get("type") in ("document", "tool_result"):
                        indirect.extend(_texts([part]))
                    elif isinstance(part, dict):
                        direct.extend(_texts([part]))
            else:
                direct.extend(_texts(m.content))
    return direct, indirect


def scan(texts: list[str], indirect: bool) -> tuple[float, list[str]]:
    """Highest score over the texts and the union of the rules that fired (ids only, never text)."""
    scanner = models.injection_scanner()
    best = 0.0
    rules: list[str] = []
    for t in texts:
        if not t:
            continue
        score, ids, _, _ = scanner.scan(t, indirect)
        best = max(best, score)
        rules.extend(r for r in ids if r not in rules)
    return best, rules


def evaluate(messages: list[Message], profile: Any) -> dict[str, Any] | None:
    """The injection decision for a request, or None when nothing crossed a threshold.

    ``{"kind": "direct"|"indirect", "action": ..., "score": .., "rules": [...], "direct": .., "indirect": ..}``
    """
    direct, indirect = split(messages)
    d_score, d_rules = scan(direct, False) if direct else (0.0, [])
    i_score, i_rules = scan(indirect, True) if indirect else (0.0, [])
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
