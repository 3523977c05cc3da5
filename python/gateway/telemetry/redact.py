"""What a record may keep of text the caller chose outside the prompt.

The README promises no prompt text or personal data in records. Besides the prompt, a caller chooses its ``user``,
tags, agent and run ids, the model name, and, indirectly, error texts (an unknown model is quoted back; an upstream
may quote the prompt in its error). Records keep such values only when they are short and carry no PII (the same
Rust scanner the PII stage uses, every type); otherwise a keyed hash (``h:`` + 16 hex digits) stands in, stable
for one ``server.key_secret`` so reports can still group by it. Error texts are cut short, have the caller's ids
replaced by what the record keeps of them, and are withheld when they quote the request's messages; PII left in
them is masked. This runs in the record writer's thread, off the request path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from typing import Any

from gateway import _core
from gateway.config import Config
from gateway.context import Record, RequestContext

MAX_ID = 128  # the longest caller-chosen id a record keeps as it is
MAX_TAGS = 16  # tags a record keeps
MAX_MESSAGE = 512  # characters of an error message a record keeps
ECHO = 16  # an error text sharing this many characters in a row with the prompt quotes it
WITHHELD = "[error text withheld: it quotes the request]"


def known_models(cfg: Config) -> set[str]:
    """Model names a record keeps as they are: the gateway's own groups and aliases."""
    return {*cfg.models, *(a for g in cfg.models.values() for a in g.aliases)}


class Redactor:
    def __init__(self, secret: str | None, known_models: Iterable[str]) -> None:
        # without a configured secret, hashes are stable only within this process
        self._mac = hmac.new(secret.encode() if secret else os.urandom(32), digestmod=hashlib.sha256)
        self.scanner = _core.PiiScanner(_core.PiiScanner.entity_types())
        self.known_models = frozenset(known_models)

    def hashed(self, value: str) -> str:
        m = self._mac.copy()
        m.update(value.encode("utf-8", "surrogatepass"))
        return "h:" + m.hexdigest()[:16]

    def ident(self, value: str | None) -> str | None:
        """An id as a record may keep it: itself if short, printable and free of PII, else its keyed hash."""
        if value is None:
            return None
        if len(value) > MAX_ID or not value.isprintable() or self.scanner.scan(value):
            return self.hashed(value)
        return value

    def record(self, ctx: RequestContext) -> Record:
        rec = ctx.record()
        swaps: dict[str, str] = {}

        def keep(value: str | None) -> str | None:
            kept = self.ident(value)
            if value and kept != value:
                swaps[value] = kept or ""
            return kept

        rec.user = keep(rec.user)
        rec.agent = keep(rec.agent)
        rec.agent_run = keep(rec.agent_run)
        rec.category = keep(rec.category)  # a caller may name it (x-gateway-category, metadata.category)
        if rec.tags:
            if len(rec.tags) > MAX_TAGS:
                rec.flags = {**(rec.flags or {}), "tags_dropped": len(rec.tags) - MAX_TAGS}
            rec.tags = [t for t in (keep(t) for t in rec.tags[:MAX_TAGS]) if t is not None]
        if rec.model_requested is not None and rec.model_requested not in self.known_models:
            rec.model_requested = keep(rec.model_requested)
        if rec.error_message:
            rec.error_message = self.message(rec.error_message, swaps, ctx)
        if rec.flags and swaps:  # labels such as "user 'jane@example.com'" in budget flags
            rec.flags = _swapped(rec.flags, swaps)
        return rec

    def message(self, text: str, swaps: dict[str, str], ctx: RequestContext) -> str:
        text = _swap(text, swaps)[:MAX_MESSAGE]  # ids quoted in the message, as the record keeps them
        if quotes_prompt(text, ctx):
            return WITHHELD
        if self.scanner.scan(text):
            (masked,), _, _ = self.scanner.mask([text], {}, None)
            text = masked
        return text


def _swap(text: str, swaps: dict[str, str]) -> str:
    for raw, kept in sorted(swaps.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(raw, kept).replace(repr(raw)[1:-1], kept)
    return text


def _swapped(node: Any, swaps: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _swap(node, swaps)
    if isinstance(node, dict):
        return {k: _swapped(v, swaps) for k, v in node.items()}
    if isinstance(node, list):
        return [_swapped(v, swaps) for v in node]
    return node


def prompt_texts(ctx: RequestContext) -> list[str]:
    req = ctx.req
    if req is None:
        return []
    out: list[str] = []
    for m in req.messages:
        c = m.content
        if isinstance(c, str):
            out.append(c)
        elif c:
            out.extend(p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
        for tc in m.tool_calls or ():
            args = tc.get("function", {}).get("arguments") if isinstance(tc, dict) else None
            if isinstance(args, str):
                out.append(args)
    return out


def quotes_prompt(text: str, ctx: RequestContext) -> bool:
    """Whether ``text`` shares ``2 * ECHO`` characters in a row with a message of the request.

    Such a run contains one of the prompt's pieces cut at multiples of ECHO; those pieces go in a set, so a
    megabyte prompt costs one pass of slicing, not a substring search per window of the error."""
    if len(text) < 2 * ECHO:
        return False
    windows = {text[i : i + ECHO] for i in range(len(text) - ECHO + 1)}
    for p in prompt_texts(ctx):
        if any(p[i : i + ECHO] in windows for i in range(0, len(p) - ECHO + 1, ECHO)):
            return True
    return False
