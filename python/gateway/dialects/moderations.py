"""``POST /v1/moderations``, answered by the gateway's own content classifier (the compliance layer's output
content scanner, run on the caller's text instead of a model's answer), in OpenAI's shape.

No upstream is called and nothing is charged. The classifier scores seven text classes; they map onto OpenAI's
categories (``dangerous`` is OpenAI's ``illicit``). OpenAI's finer sub-categories (``…/threatening``,
``…/intent``, ``…/instructions``, ``…/graphic``, ``illicit/violent``) have no model here: they are reported with
score 0, not flagged, and an empty ``category_applied_input_types`` (the spec's way to say "not applied").
A category is flagged from the threshold calibrated for it on the classifier's training split.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.compliance import models
from gateway.dialects.openai import load_json_object
from gateway.errors import invalid_request, unsupported_feature

MODEL = "gateway-content-filter"
"""What the response's ``model`` names: the classifier that answered, whatever the request asked for."""

# OpenAI category -> the classifier's text category scoring it (None: not scored here)
CATEGORIES: dict[str, str | None] = {
    "hate": "hate",
    "hate/threatening": None,
    "harassment": "harassment",
    "harassment/threatening": None,
    "illicit": "dangerous",
    "illicit/violent": None,
    "self-harm": "self-harm",
    "self-harm/intent": None,
    "self-harm/instructions": None,
    "sexual": "sexual",
    "sexual/minors": "sexual/minors",
    "violence": "violence",
    "violence/graphic": None,
}

# Inputs at least this large in all are classified on a worker thread, off the event loop the worker shares.
OFF_LOOP_CHARS = 64 * 1024


def parse(body: bytes) -> tuple[str, list[str]]:
    """(the model asked for, the texts to classify): ``input`` as a string, a list of strings, or a list of
    ``{"type": "text", "text": …}`` objects. Images are refused (the classifier reads text only)."""
    data = load_json_object(body)
    for key in data:
        if key not in ("input", "model"):
            raise unsupported_feature(f"the request field `{key}` on /v1/moderations")
    model = data.get("model", "omni-moderation-latest")
    if not isinstance(model, str):
        raise invalid_request("model: Input should be a string", "model")
    raw = data.get("input")
    if isinstance(raw, str):
        return model, [raw]
    if not isinstance(raw, list) or not raw:
        raise invalid_request(
            "Missing required parameter: 'input' (a string, a list of strings or a list of text objects).",
            "input",
        )
    texts = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif isinstance(item, dict) and item.get("type") == "image_url":
            raise unsupported_feature(
                "image moderation (the gateway's classifier reads text)", "send the text only"
            )
        else:
            raise invalid_request(
                f"input.{i}: Input should be a string or an object {{type: text, text: …}}", f"input.{i}"
            )
    return model, texts


def result(text: str, thresholds: dict[str, float]) -> dict[str, Any]:
    """One input's moderation object."""
    scores: dict[str, float] = {}
    for category, score, _start, _end, _detail in models.content_scanner().scan(text):
        if score > scores.get(category, 0.0):
            scores[category] = score
    flags: dict[str, bool] = {}
    out_scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    for name, ours in CATEGORIES.items():
        score = round(scores.get(ours, 0.0), 6) if ours else 0.0
        out_scores[name] = score
        flags[name] = ours is not None and score >= thresholds.get(ours, 0.5)
        applied[name] = ["text"] if ours else []
    return {
        "flagged": any(flags.values()),
        "categories": flags,
        "category_scores": out_scores,
        "category_applied_input_types": applied,
    }


def _results(texts: list[str]) -> list[dict[str, Any]]:
    thresholds = models.content_thresholds()
    return [result(t, thresholds) for t in texts]


async def classify(texts: list[str]) -> list[dict[str, Any]]:
    if sum(len(t) for t in texts) >= OFF_LOOP_CHARS:
        return await asyncio.to_thread(_results, texts)
    return _results(texts)


def render(request_id: str, results: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"id": f"modr-{request_id}", "model": MODEL, "results": results})
