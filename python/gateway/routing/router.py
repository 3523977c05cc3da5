"""The router: model group → ordered deployments → an answer, with failover.

``plan`` (built on the pure functions in ``select.py``) yields the deployments to try, in order: the group's own
that satisfy the caller's hard constraints and are healthy, ordered by the group's strategy, then its fallback
groups'. ``_attempts`` walks that plan: a retryable upstream error moves on to the next deployment, bounded by the
group's ``max_attempts`` and total time budget; a context overflow or a content-policy refusal moves to the
group's ``context_fallback`` / ``content_policy_fallback``. Non-stream calls may be hedged; a stream fails over
the same way until its first chunk has arrived (``ttft_timeout_s`` bounds the wait for it). When nothing can
serve, the group's ``on_unavailable`` policy decides: fail fast, or downgrade to a named group.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from gateway.config import Config, ModelGroup
from gateway.context import UPSTREAM_TRACEPARENT, Acceptance, Attempt, GroupAccess, RequestContext
from gateway.errors import GatewayError, UpstreamError
from gateway.http import HttpClient
from gateway.providers import make_provider
from gateway.quality.loop import QualityLoop
from gateway.quality.signals import prompt_hash, quality_event, refusal_text, refused
from gateway.quality.table import SPEND_AWARE, QualityPolicy, prompt_chars
from gateway.routing.metering import MeteredStream, aclose_quietly, charge_attempt, estimate_prompt
from gateway.routing.quota import within_quota
from gateway.routing.select import Caller, eligible, fits_context, order, reachable_groups
from gateway.routing.target import Target
from gateway.state.types import StateBackend
from gateway.telemetry.metrics import METRICS
from gateway.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    Usage,
)

R = TypeVar("R")


class RetryBudget:
    """Retries may add at most ``ratio`` of the group's requests (plus a small floor) per window: when a provider
    is failing, a storm of retries only makes it worse, so past the budget the caller gets the error instead."""

    __slots__ = ("floor", "ratio", "requests", "retries", "started", "window_s")

    def __init__(self, ratio: float = 0.2, floor: int = 10, window_s: float = 10.0) -> None:
        self.ratio, self.floor, self.window_s = ratio, floor, window_s
        self.requests = self.retries = 0
        self.started = time.monotonic()

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self.started > self.window_s:
            self.requests = self.retries = 0
            self.started = now

    def request(self) -> None:
        self._roll()
        self.requests += 1

    def allow(self) -> bool:
        if self.retries >= self.floor + self.ratio * self.requests:
            return False
        self.retries += 1
        return True


def backoff_s(failures: int, base_ms: float, max_ms: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(failures-1))], so retries from many callers spread out."""
    return rng.uniform(0, min(max_ms, base_ms * 2 ** (failures - 1))) / 1000


def pace_note(pace: dict[str, Any] | None) -> str:
    """Why a request was served thriftily: which budget its spend is on course to exhaust."""
    if not pace:
        return ""
    return f" (budget of {pace['scope']}: on course for ${pace['projected_usd']:.4f} of ${pace['usd']:.4f})"


class Router:
    def __init__(
        self,
        cfg: Config,
        http: HttpClient,
        rng: random.Random | None = None,
        state: StateBackend | None = None,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.rng = rng or random.Random()
        self.groups: dict[str, ModelGroup] = dict(cfg.models)
        self.targets: dict[str, list[Target]] = {
            name: [Target(d, make_provider(d, http), cfg, g) for d in g.deployments]
            for name, g in cfg.models.items()
        }
        self.aliases = {a: name for name, g in cfg.models.items() for a in g.aliases}
        # What ``RequestContext.may_route`` checks a group change against (allow-lists name groups or aliases).
        self.access: dict[str, GroupAccess] = {
            name: GroupAccess(frozenset((name, *g.aliases)), frozenset(d.region for d in g.deployments))
            for name, g in cfg.models.items()
        }
        self._reachable: dict[str, list[Target]] = {}
        self._pending: set[asyncio.Future[Any]] = set()  # fire-and-forget state writes (kept referenced)
        rp = cfg.retries
        self.retries = {name: RetryBudget(rp.budget_ratio, rp.budget_min, rp.window_s) for name in cfg.models}
        # The ``quality`` strategy's routing tables (a bench's proposal), per group that uses it.
        self.quality: dict[str, QualityPolicy] = {}
        for name, g in cfg.models.items():
            if g.strategy == "quality":
                prices = {t.dep.id: t.unit_cost for t in self.targets[name]}
                self.quality[name] = QualityPolicy(g, cfg.models, prices)
        self.loop = QualityLoop(self.quality, state, on_change=quality_event(cfg)) if self.quality else None
        # Groups with one deployment and nothing to decide: the hot path skips planning for them.
        self.plain = {
            name
            for name, g in cfg.models.items()
            if len(g.deployments) == 1
            and not (g.fallbacks or g.pin or g.canary or g.context_fallback or g.content_policy_fallback)
            and g.deployments[0].context_window is None
        }

    def reachable_targets(self, group: str) -> list[Target]:
        """Every deployment a request to ``group`` may end up on: its own and those of the groups it may fall back
        or degrade to, transitively (what a budget prices a request at before knowing which one serves)."""
        hit = self._reachable.get(group)
        if hit is None:
            names = reachable_groups(self.groups, group)
            hit = self._reachable[group] = [t for n in names for t in self.targets[n]]
        return hit

    def resolve(self, model: str) -> str | None:
        """The group a requested model name refers to (a group name or one of its aliases)."""
        if model in self.groups:
            return model
        return self.aliases.get(model)

    def group_names(self) -> list[str]:
        return sorted(self.groups)

    # ------------------------------------------------------------ planning

    def caller(self, ctx: RequestContext, group: str) -> Caller:
        p = ctx.principal
        user = ctx.req.user if ctx.req is not None else None
        canary = self.groups[group].canary
        sticky = (user if canary is not None and canary.sticky_by == "user" and user else None) or (
            p.key_id if p else ""
        )
        pin = dict(p.pins).get(group) if p and p.pins else None
        return Caller(
            sticky=sticky,
            residency=p.residency if p else (),
            pin=pin,
            prompt_bound=ctx.body_bytes,
        )

    def _prompt_tokens(self, ctx: RequestContext, bound: int, targets: list[Target]) -> int:
        """Exact prompt tokens, counted only when the byte bound would not fit some deployment's window."""
        if ctx.req is None or all(
            t.dep.context_window is None or bound <= t.dep.context_window for t in targets
        ):
            return bound
        from gateway import tokens

        return tokens.count_request(ctx.req, targets[0].dep.model, targets[0].dep.provider)

    def plan(
        self,
        ctx: RequestContext,
        group: str,
        only: str | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
        extra: list[tuple[str, str]] | None = None,
    ) -> Iterator[tuple[Target, str]]:
        """Deployments to try, in order, with the reason for each.

        ``only`` restricts the plan to one deployment (a retry on the same one); ``exclude`` skips some;
        ``extra`` is a list of (group, reason) the caller of ``plan`` may append to while iterating (fallbacks
        decided by the errors seen so far). A fallback group the caller may not use (``ctx.may_route``: the
        key's allow-list, its regions) is skipped, never tried."""
        p = ctx.principal
        if group in self.plain and only is None and not exclude and not (p and (p.residency or p.pins)):
            t = self.targets[group][0]
            if t.health.available():
                yield t, "only"
            return
        seen: set[str] = set(exclude)
        chain: list[tuple[str, str]] = [
            (group, ""),
            *((fb, f"fallback to {fb}") for fb in self.groups[group].fallbacks),
        ]
        extra = extra if extra is not None else []
        any_in_region = False
        i = 0
        while i < len(chain) + len(extra):
            name, why = chain[i] if i < len(chain) else extra[i - len(chain)]
            i += 1
            if name != group and not ctx.may_route(name):
                ctx.note_refused(name, why)
                continue
            g = self.groups[name]
            caller = self.caller(ctx, name)
            allowed, note = eligible(name, g, self.targets[name], caller)
            if only is not None:
                allowed = [t for t in allowed if t.dep.id == only]
            any_in_region = any_in_region or bool(allowed)
            tokens = self._prompt_tokens(ctx, caller.prompt_bound, allowed)
            fitting = [t for t in allowed if fits_context(t, tokens)]
            if allowed and not fitting and g.context_fallback:
                extra.append(
                    (g.context_fallback, f"context {tokens} tokens > window, to {g.context_fallback}")
                )
            now = time.monotonic()
            healthy = [t for t in fitting if t.dep.id not in seen and t.health.available(now)]
            if not healthy:
                continue
            ordered, reason = order(
                g,
                healthy,
                self.rng,
                ctx.stream,
                now,
                self.quality.get(name),
                ctx.category,
                caller.sticky,
                ctx.thrifty,
                lambda: prompt_chars(m.content for m in req.messages) if (req := ctx.req) is not None else 0,
            )
            if ctx.thrifty and SPEND_AWARE in reason:
                reason += pace_note(ctx.flags.get("budget_pace"))
            for j, t in enumerate(ordered):
                if t.dep.id in seen:
                    continue
                seen.add(t.dep.id)
                first = note or reason
                yield t, (why or first) if j == 0 else (why or "failover")
        if ctx.principal and ctx.principal.residency and not any_in_region:
            raise GatewayError(
                "residency_violation",
                f"No deployment of model {group!r} is in your allowed regions ({', '.join(ctx.principal.residency)});"
                " the gateway never routes outside them. Ask an admin for a model group with a deployment there.",
            )

    # ------------------------------------------------------------ execution

    async def _attempts(
        self,
        ctx: RequestContext,
        group: str,
        call: Callable[[Target], Awaitable[R]],
        only: str | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
        degrade: bool = True,
    ) -> R:
        g = self.groups[group]
        deadline = time.monotonic() + g.timeout_s
        last: UpstreamError | None = None
        notes: list[str] = []
        budget = ctx.attempts + g.max_attempts
        extra: list[tuple[str, str]] = []
        plan = self.plan(ctx, group, only, exclude, extra)
        retries = self.retries[group]
        retries.request()
        failed = 0  # upstream failures so far: the next attempt is a retry
        for target, reason in plan:
            if ctx.attempts >= budget or time.monotonic() >= deadline:
                break
            if failed:  # a retry: within the group's retry budget, after a full-jitter backoff (issue 5)
                if not retries.allow():
                    ctx.flags["retry_budget_exhausted"] = True
                    METRICS.inc("retry_budget_refusals")
                    break
                pause = backoff_s(
                    failed, self.cfg.retries.backoff_ms, self.cfg.retries.backoff_max_ms, self.rng
                )
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            cap = target.dep.max_concurrency
            if cap is not None and target.health.inflight >= cap:  # this worker's requests in flight to it
                notes.append(f"{target.dep.id} at its concurrency limit")
                continue
            if (target.dep.rpm or target.dep.tpm) and not await self._within_quota(ctx, target):
                notes.append(f"{target.dep.id} over its quota")
                continue
            try:
                result = await self._one(ctx, target, call, g, plan, reason, deadline)
            except UpstreamError as e:
                last = e
                failed += 1
                notes.append(f"{'timeout' if e.timeout else e.status} from {e.deployment}")
                fb = {"context_length": g.context_fallback, "content_policy": g.content_policy_fallback}.get(
                    e.kind or ""
                )
                if fb:
                    extra.append((fb, f"fallback to {fb} after {e.kind}"))
                # another deployment may have a larger window or a different policy; a plain 4xx won't change
                if not e.retryable and not e.kind:
                    break
                continue
            if notes:
                ctx.route = f"{ctx.route} after {', '.join(notes)}"
            return result
        if notes:
            ctx.flags["failed_attempts"] = notes
        down = g.on_unavailable.group
        if (
            degrade
            and g.on_unavailable.action == "downgrade"
            and down
            and ctx.reroute(down, f"{group} unavailable")
        ):
            ctx.flags["degraded_to"] = down
            return await self._attempts(ctx, down, call, degrade=False)
        if last is not None:
            err = last.to_gateway_error()
            if len(notes) > 1:  # the caller learns that failing over was tried, and where
                err.message += f" Tried {len(notes)} deployments: {', '.join(notes)}."
                err.details = {**(err.details or {}), "attempts": notes}
            if ctx.flags.get("retry_budget_exhausted"):
                err.message += " Retries for this model are paused (too many recent failures); retry later."
            raise err
        raise GatewayError(
            "no_healthy_deployment",
            f"Every deployment of model {group!r} is cooling down, has an open circuit or is stalled; retry in a few "
            "seconds or use another model.",
            headers={"retry-after": "5"},
        )

    async def _one(
        self,
        ctx: RequestContext,
        target: Target,
        call: Callable[[Target], Awaitable[R]],
        g: ModelGroup,
        plan: Iterator[tuple[Target, str]],
        reason: str,
        deadline: float,
    ) -> R:
        """One attempt — or, with hedging, a race between it and the next deployment in the plan."""
        delay_ms = None
        if g.hedge is not None and not ctx.stream:
            delay_ms = (
                g.hedge.after_ms
                if g.hedge.after_ms is not None
                else target.health.p95_ms(g.hedge.min_samples)
            )
        if delay_ms is None:
            return await self._call(ctx, target, call, reason)
        started = time.perf_counter_ns()
        primary = asyncio.ensure_future(self._call(ctx, target, call, reason))
        done, _ = await asyncio.wait({primary}, timeout=delay_ms / 1000)
        if done:
            return primary.result()
        backup_target = next(plan, None)
        if backup_target is None or time.monotonic() >= deadline:
            return await primary
        ctx.flags["hedged"] = True
        backup = asyncio.ensure_future(
            self._call(ctx, backup_target[0], call, f"hedge after {delay_ms:.0f}ms")
        )
        pending = {primary, backup}
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    for loser in pending:
                        loser.cancel()
                        self._charge_cancelled(ctx, backup_target[0] if loser is backup else target)
                        if loser is primary:  # its latency was at least this long: keep the p95 honest
                            target.health.samples.append((time.perf_counter_ns() - started) / 1e6)
                    return task.result()
                error = task.exception()
        assert error is not None
        raise error

    async def _within_quota(self, ctx: RequestContext, t: Target) -> bool:
        """A deployment's own RPM/TPM quota (the provider's limit for that key): skip it when exhausted, so the
        request goes elsewhere instead of collecting a 429. Tokens are charged as prompt + output bound."""
        if self.state is None:
            return True
        return await within_quota(self.state, t.dep, ctx.req)

    def _charge_cancelled(self, ctx: RequestContext, t: Target) -> None:
        """A cancelled hedge was still sent: charge its prompt (estimated) so the cost is honest."""
        if ctx.req is None:
            return
        charge_attempt(ctx, t, estimate_prompt(ctx, t))
        ctx.flags["hedge_cancelled"] = t.dep.id

    async def _call(
        self, ctx: RequestContext, target: Target, call: Callable[[Target], Awaitable[R]], reason: str
    ) -> R:
        ctx.attempts += 1
        target.health.begin()
        t0 = time.perf_counter_ns()
        attempt = None
        if ctx.trace is not None:  # this attempt becomes a child span; its traceparent goes upstream
            attempt = Attempt(target.dep.id, target.dep.provider, target.dep.model, reason, t0)
            ctx.attempt_log.append(attempt)
            UPSTREAM_TRACEPARENT.set(ctx.trace.upstream_header())
        try:
            result = await call(target)
        except UpstreamError as e:
            e.deployment = e.deployment or target.dep.id
            if e.retry_after is not None:  # the upstream's word, within the operator's bound
                e.retry_after = min(e.retry_after, self.cfg.retries.max_retry_after_s)
            if attempt is not None:
                attempt.status, attempt.error = e.status, "timeout" if e.timeout else f"http_{e.status}"
            target.health.failure(e)
            if e.status == 429 and self.state is not None:  # cool it down for every replica, off the hot path
                fut = asyncio.ensure_future(self.state.set_cooldown(target.dep.id, e.retry_after or 1.0))
                self._pending.add(fut)
                fut.add_done_callback(self._pending.discard)
            raise
        except asyncio.CancelledError:
            if ctx.flags.get("client_disconnected") and ctx.req is not None:
                # the caller left (gateway/edge.py): the call was sent, so its prompt is paid for
                charge_attempt(ctx, target, estimate_prompt(ctx, target))
                ctx.flags["cancelled_attempt"] = target.dep.id
            raise
        finally:
            target.health.end()
            t1 = time.perf_counter_ns()
            ctx.upstream_ns += t1 - t0
            if attempt is not None:
                attempt.end_ns = t1
                UPSTREAM_TRACEPARENT.set(None)
        self._served(ctx, target, reason)
        return result

    async def sync_cooldowns(self, every_s: float = 0.5) -> None:
        """Adopt cooldowns other replicas have set (a 429 seen anywhere cools the deployment everywhere)."""
        state = self.state
        if state is None:
            return
        by_id = {t.dep.id: t for targets in self.targets.values() for t in targets}
        ids = list(by_id)
        while True:
            await asyncio.sleep(every_s)
            if self.loop is not None:  # the quality posteriors other replicas have updated
                await self.loop.sync()
            now_wall, now = time.time(), time.monotonic()
            shared = await state.cooldowns(ids)
            for dep, until in shared.items():
                by_id[dep].health.cool(now + (until - now_wall), now)
            for (
                dep,
                t,
            ) in by_id.items():  # cleared by an operator elsewhere (a fresh own 429 has not landed yet)
                h = t.health
                if dep not in shared and h.cooldown_until > now and now - h.cooled_at > 2 * every_s:
                    h.cooldown_until = 0.0

    def health_report(self) -> dict[str, dict[str, object]]:
        """This worker's view of every deployment: circuit, cooldown left, failures."""
        now = time.monotonic()
        return {t.dep.id: t.health.report(now) for targets in self.targets.values() for t in targets}

    async def clear_cooldowns(self, deployment: str | None) -> list[str]:
        """Forget cooldowns and open circuits (one deployment or all), here and in the shared state."""
        ids = [t.dep.id for targets in self.targets.values() for t in targets]
        if deployment is not None:
            ids = [d for d in ids if d == deployment]
        for targets in self.targets.values():
            for t in targets:
                if t.dep.id in ids:
                    t.health.clear()
        if self.state is not None:
            await self.state.clear_cooldowns(ids)
        return ids

    def _served(self, ctx: RequestContext, target: Target, reason: str) -> None:
        ctx.deployment = target.dep.id
        ctx.provider = target.dep.provider
        ctx.upstream_model = target.dep.model
        ctx.region = target.dep.region
        ctx.route = reason
        ctx.target = target

    async def complete(
        self,
        ctx: RequestContext,
        group: str,
        req: ChatRequest,
        only: str | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
        accept: Acceptance | None = None,
    ) -> ChatResponse:
        """One answer; its usage and cost are charged to ``ctx`` (every attempt that returned is paid for).

        With ``accept``, an answer it rejects is asked for again: of the same deployment ``accept.retries``
        times, then (``accept.fallback``) of the group's other deployments; ``accept.failure`` when none passes."""
        resp = await self._complete(ctx, group, req, only, exclude)
        if ctx.group in self.quality and self.loop is not None:
            self._signals(ctx, req, resp)
        if accept is None or accept.check(ctx, ctx.deployment or "", resp):
            return resp
        if ctx.group in self.quality and self.loop is not None:
            self.signal(ctx.group or "", ctx.category, ctx.deployment or "", 0.0, "schema")
        tried = set(exclude)
        for attempt in range(accept.retries + (len(self.targets[group]) if accept.fallback else 0)):
            same = attempt < accept.retries
            if not same:
                tried.add(ctx.deployment or "")
            try:
                resp = await self._complete(ctx, group, req, ctx.deployment if same else None, tried)
            except (GatewayError, UpstreamError):
                break
            if accept.check(ctx, ctx.deployment or "", resp):
                return resp
        raise accept.failure(ctx)

    def _quality_group(self, deployment: str | None) -> str | None:
        for name in self.quality:
            if any(t.dep.id == deployment for t in self.targets[name]):
                return name
        return None

    def rates(self, deployment: str | None, category: str | None) -> bool:
        """Whether feedback on an answer from ``deployment`` in ``category`` updates a quality estimate."""
        g = self._quality_group(deployment)
        return g is not None and category is not None and category in self.quality[g].rows

    async def feedback(
        self, deployment: str | None, category: str | None, score: float
    ) -> dict[str, Any] | None:
        """A caller's rating of an answer: updates the estimate of the deployment that served it, in its
        category, in the ``quality`` group it belongs to; returns the demotion it caused, if any."""
        g = self._quality_group(deployment)
        if g is None or self.loop is None or deployment is None:
            return None
        return await self.loop.observe(g, category, deployment, score, "feedback")

    def signal(self, group: str, category: str | None, deployment: str, score: float, source: str) -> None:
        """An automatic quality signal, applied off the request (its state write is not awaited)."""
        assert self.loop is not None
        fut = asyncio.ensure_future(self.loop.observe(group, category, deployment, score, source))
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def _signals(self, ctx: RequestContext, req: ChatRequest, resp: ChatResponse) -> None:
        """What an answer of a ``quality`` group tells without the caller saying anything: a refusal counts
        against the deployment; so does the caller asking the same prompt again soon after (for the earlier
        answer). A schema-validation failure is counted where the router hears of it (``accept``)."""
        if refused(resp):
            self.signal(ctx.group or "", ctx.category, ctx.deployment or "", 0.0, "refusal")
            ctx.flags["quality_refusal"] = True
        self._retry_signal(ctx, req)

    def _retry_signal(self, ctx: RequestContext, req: ChatRequest) -> None:
        """The caller asking a recent prompt again counts against the answer it got then; this answer is
        remembered in turn."""
        loop = self.loop
        assert loop is not None
        key = ctx.principal.key_id if ctx.principal is not None else ""
        h = prompt_hash(req)
        earlier = loop.retried(key, h)
        if earlier is not None:
            self.signal(*earlier, 0.0, "caller_retry")
            ctx.flags["quality_retry_of"] = earlier[2]
        if ctx.category is not None:
            loop.remember(key, h, ctx.group or "", ctx.category, ctx.deployment or "")

    def _stream_end(self, stream: MeteredStream) -> None:
        """A stream that ran to its end, read whole: against the request's acceptance predicate (a JSON schema:
        too late to ask again, so the result is recorded, ``schema_valid``) and, for a ``quality`` group, for
        the signals a whole answer gives (a failed schema, a content filter, a refusal in the streamed text)."""
        ctx = stream.ctx
        text = "".join(stream.texts)
        quality = ctx.group in self.quality and self.loop is not None
        accept = ctx.accept
        if accept is not None and (ctx.req is None or (ctx.req.n or 1) == 1):
            whole = ChatResponse("", "", [Choice(index=0, message=Message("assistant", text))], Usage())
            if not accept.check(ctx, ctx.deployment or "", whole):
                accept.failure(ctx)  # (it records the failure in the flags; the stream has been delivered)
                if quality:
                    self.signal(ctx.group or "", ctx.category, ctx.deployment or "", 0.0, "schema")
        if quality and (stream.filtered or refusal_text(text)):
            self.signal(ctx.group or "", ctx.category, ctx.deployment or "", 0.0, "refusal")
            ctx.flags["quality_refusal"] = True

    async def _complete(
        self,
        ctx: RequestContext,
        group: str,
        req: ChatRequest,
        only: str | None,
        exclude: set[str] | frozenset[str],
    ) -> ChatResponse:
        refusal_fallback = self.groups[group].content_policy_fallback is not None

        async def call(t: Target) -> ChatResponse:
            t0 = time.perf_counter_ns()
            resp = await t.provider.complete(req)
            charge_attempt(ctx, t, resp.usage)
            if refusal_fallback and any(c.finish_reason == "content_filter" for c in resp.choices):
                raise UpstreamError(
                    400, "refused on content policy", deployment=t.dep.id, kind="content_policy"
                )
            t.health.success((time.perf_counter_ns() - t0) / 1e6)
            return resp

        return await self._attempts(ctx, group, call, only, exclude)

    async def embed(self, ctx: RequestContext, group: str, req: EmbeddingRequest) -> EmbeddingResponse:
        async def call(t: Target) -> EmbeddingResponse:
            resp = await t.provider.embed(req)
            charge_attempt(ctx, t, resp.usage)
            return resp

        return await self._attempts(ctx, group, call)

    async def open_stream(
        self, ctx: RequestContext, group: str, req: ChatRequest
    ) -> tuple[list[ChatChunk], MeteredStream]:
        """The first batch of chunks and the rest of the stream, metered (it charges the deployment when it ends).
        Failover is possible only until the first batch."""
        ttft_timeout = self.groups[group].ttft_timeout_s

        async def call(t: Target) -> tuple[list[ChatChunk], MeteredStream]:
            t0 = time.perf_counter_ns()
            it = aiter(t.provider.stream(req))
            try:
                first = await (
                    anext(it) if ttft_timeout is None else asyncio.wait_for(anext(it), ttft_timeout)
                )
            except StopAsyncIteration:
                raise UpstreamError(502, "empty stream", deployment=t.dep.id, bad_response=True) from None
            except TimeoutError:
                await aclose_quietly(it)
                raise UpstreamError(
                    504, f"no first token within {ttft_timeout}s", deployment=t.dep.id, timeout=True
                ) from None
            except UpstreamError:
                await aclose_quietly(it)
                raise
            t.health.success(ttft_ms=(time.perf_counter_ns() - t0) / 1e6)
            return first, MeteredStream(ctx, req, t, first, it)

        first, rest = await self._attempts(ctx, group, call)
        quality = ctx.group in self.quality and self.loop is not None
        if quality:
            self._retry_signal(ctx, req)
        if quality or ctx.accept is not None:
            rest.on_end = self._stream_end
        return first, rest
