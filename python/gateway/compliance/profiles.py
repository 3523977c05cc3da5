"""Which compliance profile governs a request: bindings resolved most-specific-first.

Order: the key, then each of the request's tags, its team, its tenant, the model group asked for, then the
default profile. Bindings and profiles come from the config (``stages.compliance``) overlaid with those an admin
set at run time (``PUT /admin/compliance/...``, stored like budget rules and seen by every worker within a
second). A profile is compiled once (thresholds filled in from the calibrated defaults) and cached until its
definition changes; which profile a caller gets (key, tags, team, tenant, model group) is cached too, and the
whole cache is dropped when the run-time rules change, so an admin's change is seen as soon as it is read.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.compliance import models
from gateway.config import ComplianceConfig, ComplianceProfile
from gateway.context import RequestContext

SCOPES = ("key", "tag", "team", "tenant", "model")
MAX_RESOLVED = 4096  # cached (caller, tags, group) resolutions per worker
KIND = "compliance"  # the policy-store kind; scope "profile" holds run-time profile definitions


class Resolved:
    """A profile with every default filled in, ready for the request path."""

    __slots__ = (
        "allowed_groups",
        "canary",
        "content",
        "content_actions",
        "content_floors",
        "content_rules",
        "content_thresholds",
        "filters",
        "header",
        "indirect_action",
        "indirect_threshold",
        "injection",
        "injection_action",
        "injection_threshold",
        "max_tokens",
        "name",
        "pii",
        "restrict_to",
        "shadow",
        "stream_hold",
    )

    def __init__(self, name: str, p: ComplianceProfile) -> None:
        d = models.defaults()
        self.name = name
        self.shadow = p.shadow
        self.canary = p.canary
        self.max_tokens = p.max_tokens
        self.allowed_groups = set(p.allowed_groups) if p.allowed_groups is not None else None
        self.pii = p.pii
        inj = p.injection
        self.injection = inj is not None
        self.injection_action = inj.action if inj else "flag"
        self.injection_threshold = (
            inj.threshold if inj and inj.threshold is not None else d["injection_threshold"]
        )
        self.indirect_action = (inj.indirect_action or inj.action) if inj else "flag"
        self.indirect_threshold = (
            inj.indirect_threshold if inj and inj.indirect_threshold is not None else d["indirect_threshold"]
        )
        self.restrict_to = inj.restrict_to if inj else None
        c = p.content
        self.content = c
        self.content_thresholds = {**models.content_thresholds(), **(c.thresholds if c else {})}
        self.content_actions = dict(c.categories) if c else {}
        if p.canary:  # a leaked canary is blocked unless the profile says otherwise
            self.content_actions.setdefault("canary", "block")
        # category -> (threshold, action) for every category this profile acts on (not "allow"): the output
        # filter looks each finding up once, and a finding of a category not in it costs nothing more
        self.content_rules: dict[str, tuple[float, str]] = {}
        scanned = models.content_scanner().categories
        for cat in {*scanned, *self.content_actions}:
            action = self.content_action(cat)
            if action != "allow":
                self.content_rules[cat] = (self.content_thresholds.get(cat, 0.5), action)
        # per scanned category, the score from which a finding is returned at all (the core drops the rest
        # and skips what no category needs): most answers then come back with no findings to look at
        inf = float("inf")
        self.content_floors = [self.content_rules[c][0] if c in self.content_rules else inf for c in scanned]
        self.header = f"profile={name}"  # x-gateway-compliance when nothing was decided
        self.stream_hold = stream_hold(self.content_rules, self.shadow)
        self.filters = c is not None or p.canary  # whether answers go through the output filter at all

    def content_action(self, category: str) -> str:
        c = self.content
        return self.content_actions.get(category) or (c.default if c is not None else "allow")


def stream_hold(rules: dict[str, tuple[float, str]], shadow: bool) -> str:
    """What a stream's output filter holds back (``_core.ContentStream``): the unfinished last word when PII is
    cut out (any word may begin an e-mail address), only a word that may begin a secret or canary when only those
    are, nothing when no span is cut (flagged spans are still found, over the look-behind)."""
    cuts = {c for c, (_, action) in rules.items() if action in ("redact", "block")} if not shadow else set()
    if "pii" in cuts:
        return "word"
    return "secrets" if cuts & {"secrets", "canary"} else "nothing"


class Profiles:
    """Config + run-time bindings and profiles; ``resolve`` is one dict lookup per request once a caller has been
    seen (a few more the first time)."""

    def __init__(self, cfg: ComplianceConfig, policies: Any) -> None:
        self.cfg = cfg
        self.policies = policies  # gateway.state.policies.Policies (run-time rules), or None
        self._compiled: dict[str, tuple[Any, Resolved]] = {}
        # (key id, key name, tags, team, tenant, group) -> (profile, via), valid for one version of the run-time
        # rules (``_seen``: the rules object it was built from; Policies replaces it only when they change)
        self._resolved: dict[tuple[Any, ...], tuple[Resolved | None, str]] = {}
        self._seen: Any = None

    def _runtime(self) -> dict[str, dict[str, Any]]:
        if self.policies is None:
            return {}
        return self.policies.raw.get(KIND, {})

    def profile(self, name: str) -> Resolved | None:
        rt = self._runtime().get("profile", {})
        source: Any = rt.get(name)
        if source is None:
            source = self.cfg.profiles.get(name)
        if source is None:
            return None
        hit = self._compiled.get(name)
        if hit is not None and hit[0] is source:
            return hit[1]
        prof = source if isinstance(source, ComplianceProfile) else msgspec.convert(source, ComplianceProfile)
        resolved = Resolved(name, prof)
        self._compiled[name] = (source, resolved)
        return resolved

    def binding(self, ctx: RequestContext, group: str | None) -> tuple[str, str] | None:
        """(scope, profile name) of the most specific binding for this request."""
        rt, cf = self._runtime(), self.cfg.bindings
        p = ctx.principal
        candidates: list[tuple[str, str | None]] = [
            ("key", p.key_id if p else None),
            ("key", p.name if p else None),
        ]
        candidates += [("tag", t) for t in ctx.tags or ()]
        candidates += [("team", p.team if p else None), ("tenant", p.tenant if p else None), ("model", group)]
        for scope, ident in candidates:
            if ident is None:
                continue
            name = rt.get(scope, {}).get(ident)
            if name is None:
                name = cf.get(scope, {}).get(ident)
            if name is not None:
                return scope, name["profile"] if isinstance(name, dict) else name
        return None

    def for_group(self, group: str) -> Resolved | None:
        """The profile bound to a model group (run time before config), if any."""
        name: Any = self._runtime().get("model", {}).get(group) or self.cfg.bindings.get("model", {}).get(
            group
        )
        if isinstance(name, dict):
            name = name.get("profile")
        return self.profile(name) if name else None

    def resolve(self, ctx: RequestContext, group: str | None) -> tuple[Resolved | None, str]:
        """The profile for this request and what chose it (``key:…``, ``tenant:…``, ``default``), cached per
        caller and model group until the run-time rules change."""
        version = self.policies.raw if self.policies is not None else None
        if version is not self._seen:
            self._resolved.clear()
            self._seen = version
        p = ctx.principal
        k = (
            (p.key_id, p.name, p.team, p.tenant) if p is not None else None,
            tuple(ctx.tags) if ctx.tags else None,
            group,
        )
        hit = self._resolved.get(k)
        if hit is None:
            if len(self._resolved) >= MAX_RESOLVED:  # callers choose tags: keep the cache bounded
                self._resolved.clear()
            hit = self._resolved[k] = self._resolve(ctx, group)
        return hit

    def _resolve(self, ctx: RequestContext, group: str | None) -> tuple[Resolved | None, str]:
        b = self.binding(ctx, group)
        if b is not None:
            return self.profile(b[1]), b[0]
        if self.cfg.default is not None:
            return self.profile(self.cfg.default), "default"
        return None, "none"
