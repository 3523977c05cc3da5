"""PII: mask before the prompt leaves, unmask before the answer arrives.

Every text a model would see (message content, text parts, tool-call arguments, tool results) is scanned in one
call into the Rust core. Per entity type the policy is ``mask`` (stable numbered placeholders such as
``<EMAIL_ADDRESS_1>``), ``reject`` (a 400 naming the types, never the values), ``flag`` (recorded only) or
``allow`` (not scanned). The same value gets the same placeholder across the request's messages and, when the
caller sends a session id (``x-gateway-session`` header or ``metadata.session_id``), across the session's
requests: the mapping lives in the state backend with a TTL, under the sending key (another key, even of the same
tenant, never sees it). Responses and streams are unmasked on the way back;
in a stream a placeholder split across chunks is reassembled from a small look-behind, never by buffering.

Optionally (``ner:`` in the config, see gateway/stages/ner.py) a spaCy model then tags PERSON and LOCATION in the
already-masked texts, on one dedicated thread so the event loop keeps serving; their placeholders
(``<PERSON_1>``) share the mapping, so policies, session stability and unmasking work the same for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import _core
from gateway.config import PiiConfig
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.state.types import StateBackend
from gateway.types import ChatChunk, ChatRequest, ChatResponse, Message

VAULT = "pii_vault"  # ctx.scratch: placeholder -> original value
UNMASKERS = "pii_unmaskers"


class Policy:
    """One resolved PII policy: which types to scan, mask, reject."""

    def __init__(self, cfg: PiiConfig) -> None:
        known = _core.PiiScanner.entity_types()
        wanted = cfg.entities if cfg.entities is not None else known
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise ValueError(f"stages.pii.entities: unknown entity types {unknown}; known: {known}")
        action = {t: cfg.policies.get(t, cfg.default) for t in wanted}
        self.scan_types = [t for t, a in action.items() if a != "allow"]
        self.mask_types = {t for t, a in action.items() if a == "mask"}
        self.reject_types = {t for t, a in action.items() if a == "reject"}
        self.scanner = _core.PiiScanner(self.scan_types)
        self.ttl_s = cfg.session_ttl_s
        self.ner: Any = None  # gateway.stages.ner.NerDetector, loaded once here (never per request)
        self.ner_mask_types: set[str] = set()
        if cfg.ner is not None:
            ner_action = {t: cfg.policies.get(t, cfg.default) for t in cfg.ner.entities}
            ner_types = [t for t, a in ner_action.items() if a != "allow"]
            if ner_types:
                from gateway.stages.ner import NerDetector

                self.ner = NerDetector(cfg.ner.model, ner_types, rules=cfg.ner.rules)
                self.ner_mask_types = {t for t in ner_types if ner_action[t] == "mask"}
                self.reject_types |= {t for t in ner_types if ner_action[t] == "reject"}


# ---------------------------------------------------------------- pure helpers: where the texts are


def collect_texts(messages: list[Message]) -> list[str]:
    """Every string the model will read, in a fixed order that ``put_texts`` mirrors."""
    out: list[str] = []
    for m in messages:
        # ``reasoning`` (thinking) is left alone: it is model output produced from masked input, and providers
        # verify its signature when it is sent back, so rewriting it would break the conversation.
        c = m.content
        if isinstance(c, str):
            out.append(c)
        elif c:
            out.extend(p["text"] for p in c if p.get("type") == "text" and isinstance(p.get("text"), str))
        for tc in m.tool_calls or ():
            args = tc.get("function", {}).get("arguments")
            if isinstance(args, str):
                out.append(args)
    return out


def put_texts(messages: list[Message], texts: list[str]) -> None:
    it = iter(texts)
    for m in messages:
        c = m.content
        if isinstance(c, str):
            m.content = next(it)
        elif c:
            for p in c:
                if p.get("type") == "text" and isinstance(p.get("text"), str):
                    p["text"] = next(it)
        for tc in m.tool_calls or ():
            fn = tc.get("function", {})
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = next(it)


def counts_header(counts: dict[str, int]) -> str:
    return ",".join(f"{t}={n}" for t, n in sorted(counts.items()) if n)


def check_rejected(found: dict[str, int], policy: Policy) -> None:
    rejected = sorted(set(found) & policy.reject_types)
    if rejected:
        raise GatewayError(
            "pii_rejected",
            f"The request contains personal data of types {', '.join(rejected)}, which this key's policy "
            "does not allow to leave. Remove it (or ask an admin to mask it instead) and retry.",
            details={"entity_types": rejected},
        )


async def ner_mask(
    policy: Policy, texts: list[str], mapping: dict[str, str]
) -> tuple[list[str], dict[str, int]]:
    """PERSON/LOCATION over the structurally masked texts; extends ``mapping`` in place."""
    from gateway.stages.ner import executor, mask_spans

    if not any(t.strip() for t in texts):
        return texts, {}
    spans = await asyncio.get_running_loop().run_in_executor(executor(), policy.ner.detect, texts)
    return mask_spans(texts, spans, mapping, policy.ner_mask_types)


MAX_SESSION_ID = 128  # longer ids are refused: the id is part of a state key


def vault_key_for(ctx: RequestContext, req: ChatRequest) -> str | None:
    """The session vault's state key: bound to the key that sends the session id, never shared by a tenant's
    other keys. A session id names a conversation of one caller; another key (another team of the same tenant)
    sending the same id gets its own, empty vault, so it cannot read back the first caller's values."""
    session = ctx.session or (req.metadata or {}).get("session_id")
    p = ctx.principal
    if not session or p is None:
        return None
    if not isinstance(session, str) or len(session) > MAX_SESSION_ID or not session.isprintable():
        raise GatewayError(
            "invalid_request",
            f"The session id (x-gateway-session or metadata.session_id) must be a printable string of at most "
            f"{MAX_SESSION_ID} characters.",
            param="x-gateway-session",
        )
    return f"pii:{p.tenant}:{p.key_id}:{session}"


def masked_types(ctx: RequestContext) -> set[str]:
    """The entity types this request's prompt had masked (for other stages: the vault itself stays private)."""
    return {ph[1 : ph.rindex("_")] for ph in ctx.scratch.get(VAULT) or ()}


class PiiStage(Stage):
    name = "pii"

    def __init__(self, default: PiiConfig, profiles: dict[str, PiiConfig], state: StateBackend) -> None:
        self.default = Policy(default) if default.enabled else None
        self.profiles = {name: Policy(p) if p.enabled else None for name, p in profiles.items()}
        self.compliance: dict[str, tuple[PiiConfig, Policy | None]] = {}  # compiled per compliance profile
        self.state = state

    def policy_for(self, ctx: RequestContext) -> Policy | None:
        chosen = ctx.pii_override  # (profile name, PiiConfig) from the request's compliance profile
        if chosen is not None:
            name, cfg = chosen
            hit = self.compliance.get(name)
            if hit is None or hit[0] is not cfg:
                hit = self.compliance[name] = (cfg, Policy(cfg) if cfg.enabled else None)
            return hit[1]
        profile = ctx.principal.profile if ctx.principal else None
        if profile is not None and profile in self.profiles:
            return self.profiles[profile]
        return self.default

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        policy = self.policy_for(ctx)
        if policy is None:
            return
        texts = collect_texts(req.messages)
        vault_key = vault_key_for(ctx, req)
        known: dict[str, str] = await self.state.get_map(vault_key) if vault_key else {}
        masked, mapping, counts = policy.scanner.mask(texts, known, policy.mask_types)
        found = {t: n for t, n in counts.items() if n}
        if policy.ner is not None:
            check_rejected(found, policy)  # a structured type already refuses: spare the model run
            masked, ner_counts = await ner_mask(policy, masked, mapping)
            found.update((t, n) for t, n in ner_counts.items() if n)
        if not found:
            return
        ctx.flags["pii"] = found
        ctx.response_headers["x-gateway-pii"] = counts_header(found)
        check_rejected(found, policy)
        # compare the texts, not the mapping's size: a session's known value seen again adds no entry but
        # must still be masked
        if masked != texts:
            put_texts(req.messages, masked)
            ctx.scratch[VAULT] = {ph: value for value, ph in mapping.items()}
        if vault_key and len(mapping) > len(known):
            await self.state.put_map(vault_key, mapping, policy.ttl_s)

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        vault = ctx.scratch.get(VAULT)
        if not vault:
            return resp
        changed = False
        for c in resp.choices:
            m = c.message
            if isinstance(m.content, str) and "<" in m.content:
                new = _core.unmask(m.content, vault)
                changed |= new != m.content
                m.content = new
            for tc in m.tool_calls or ():
                fn = tc.get("function", {})
                args = fn.get("arguments")
                if isinstance(args, str) and "<" in args:
                    new = _core.unmask(args, vault)
                    changed |= new != args
                    fn["arguments"] = new
        if changed:
            resp.raw = None
        return resp

    def on_chunk(self, ctx: RequestContext, chunk: ChatChunk) -> ChatChunk | None:
        vault = ctx.scratch.get(VAULT)
        if not vault:
            return chunk
        unmaskers: dict[tuple[int, int], Any] = ctx.scratch.setdefault(UNMASKERS, {})
        changed = False
        for d in chunk.choices:
            if d.content:
                u = unmaskers.get((d.index, -1))
                if u is None:
                    u = unmaskers[(d.index, -1)] = _core.StreamUnmasker(vault)
                new = u.feed(d.content)
                changed |= new != d.content
                d.content = new
            for tc in d.tool_calls or ():
                fn = tc.get("function") or {}
                args = fn.get("arguments")
                if args:
                    key = (d.index, tc.get("index", 0))
                    u = unmaskers.get(key)
                    if u is None:
                        u = unmaskers[key] = _core.StreamUnmasker(vault)
                    new = u.feed(args)
                    changed |= new != args
                    fn["arguments"] = new
        if changed:
            chunk.raw = None
        return chunk

    def on_stream_end(self, ctx: RequestContext) -> list[ChatChunk]:
        """Whatever look-behind is left (a '<' that never became a placeholder) goes out as a last chunk."""
        unmaskers = ctx.scratch.get(UNMASKERS)
        if not unmaskers:
            return []
        from gateway.types import Delta

        deltas = []
        for (index, tool), u in unmaskers.items():
            rest = u.flush()
            if not rest:
                continue
            if tool < 0:
                deltas.append(Delta(index=index, content=rest))
            else:
                deltas.append(
                    Delta(index=index, tool_calls=[{"index": tool, "function": {"arguments": rest}}])
                )
        return [ChatChunk(id="", model=ctx.upstream_model or "", choices=deltas)] if deltas else []
