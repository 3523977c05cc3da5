"""The request's task category: ``x-gateway-category`` or ``metadata.category`` when the caller knows it, else
the quality group's classifier when it is confident enough (else none: the group's default, strong model).

The category labels the record and is echoed in ``x-gateway-category``; the ``quality`` strategy routes by it.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.context import RequestContext
from gateway.pipeline import Stage
from gateway.quality.table import prompt_chars
from gateway.types import ChatRequest, ChatResponse

MAX_LEN = 64


def last_user_text(req: ChatRequest) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            c = m.content
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
    return ""


class CategoryStage(Stage):
    name = "category"

    def __init__(self, cfg: Config) -> None:
        # group -> (classifier, confidence bar, the categories' route groups)
        self.classifiers: dict[str, tuple[Any, float, Any]] = {}
        for name, g in cfg.models.items():
            q = g.quality
            if g.strategy == "quality" and q is not None and q.classifier:
                from gateway.quality.classifier import Classifier, RouteGroups

                clf = Classifier.load(q.classifier)
                self.classifiers[name] = (clf, q.min_confidence, RouteGroups(clf.labels, q))

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> ChatResponse | None:
        h = ctx.headers
        given = h.get("x-gateway-category") if h is not None else None
        if not given and req.metadata:
            m = req.metadata.get("category")
            given = m if isinstance(m, str) else None
        if given:
            ctx.category = given.strip()[:MAX_LEN] or None
        elif ctx.group in self.classifiers:
            clf, bar, rg = self.classifiers[ctx.group]
            groups = rg.at(lambda: prompt_chars(m.content for m in req.messages))
            cat, conf = clf.predict_grouped(last_user_text(req), groups, rg.n)
            if conf >= bar:
                ctx.category = cat
                ctx.flags["category_inferred"] = round(conf, 3)
            else:
                ctx.flags["category_unsure"] = {"guess": cat, "confidence": round(conf, 3)}
        if ctx.category is not None and ctx.category.isascii() and ctx.category.isprintable():
            ctx.response_headers["x-gateway-category"] = (
                ctx.category
            )  # (a header carries printable ASCII only)
        return None
