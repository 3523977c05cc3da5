"""What a quarantined request leaves in the review store: its body with personal data and secrets masked.

The compliance stage runs before the PII stage (the profile chooses the PII policy), so the request it holds for
review is still the caller's raw text. Reviewers need the instructions that tripped the filter, not the caller's
e-mail addresses, card numbers or API keys: every string in the body is masked with every type the PII scanner
knows (``<EMAIL_ADDRESS_1>``, ``<AWS_ACCESS_KEY_1>``), whatever the request's own PII policy, and the mapping
back to the values is never stored. Where the gateway has entity recognition configured (``stages.pii.ner``
anywhere in the config), names and street addresses are masked too (``<PERSON_1>``, ``<LOCATION_1>``), by the
same detector the PII stage uses.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from gateway import _core
from gateway.types import ChatRequest


@functools.cache
def _scanner() -> _core.PiiScanner:
    return _core.PiiScanner(None)  # all types, secrets included


def _strings(node: Any, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, dict):
        for v in node.values():
            _strings(v, out)
    elif isinstance(node, list):
        for v in node:
            _strings(v, out)


def _put(node: Any, it: Any) -> Any:
    if isinstance(node, str):
        return next(it)
    if isinstance(node, dict):
        return {k: _put(v, it) for k, v in node.items()}
    if isinstance(node, list):
        return [_put(v, it) for v in node]
    return node


def masked_body(req: ChatRequest, ner: Any = None) -> dict[str, Any]:
    """The request as plain data with every detected PII value and secret replaced by its placeholder;
    with ``ner`` (a ``gateway.stages.ner.NerDetector``) names and addresses as well. Blocking: with a
    detector, run it on ``gateway.stages.ner.executor()``."""
    body: dict[str, Any] = msgspec.to_builtins(req)
    model = body.get("model")
    texts: list[str] = []
    _strings(body, texts)
    masked, mapping, _counts = _scanner().mask(texts, {}, None)
    if ner is not None and any(t.strip() for t in masked):
        from gateway.stages.ner import mask_spans

        masked, _ = mask_spans(masked, ner.detect(masked), mapping, set(ner.entities))
    out: dict[str, Any] = _put(body, iter(masked))
    if model is not None:
        out["model"] = model  # a model name is never personal data
    return out
