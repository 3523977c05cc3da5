"""The router: model group → ordered deployments → an answer, with failover.

For each request it takes the group's deployments, drops those the caller may not use (residency) or that are
unhealthy (cooldown, open circuit), orders the rest by the group's strategy, and tries them in turn. A retryable
upstream error moves on to the next deployment, then to the group's fallback groups, bounded by the group's
``max_attempts`` and time budget. A stream fails over the same way until its first chunk has arrived.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from gateway.config import Config, Deployment, ModelGroup
from gateway.context import RequestContext
from gateway.errors import GatewayError, UpstreamError
from gateway.pricing import charge, price_for
from gateway.providers import make_provider
from gateway.providers.base import Provider
from gateway.routing.health import Health
from gateway.routing.strategies import STRATEGIES
from gateway.types import ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse

R = TypeVar("R")


class Target:
    """A deployment at run time: its config, adapter, price and health."""

    __slots__ = ("dep", "health", "price", "provider", "unit_cost")

    def __init__(self, dep: Deployment, provider: Provider, cfg: Config) -> None:
        self.dep = dep
        self.provider = provider
        self.price = price_for(dep, cfg)
        self.unit_cost = self.price.input + self.price.output
        self.health = Health()

    # the strategy Candidate protocol
    @property
    def weight(self) -> float:
        return self.dep.weight

    @property
    def priority(self) -> int:
        return self.dep.priority

    @property
    def latency_ms(self) -> float:
        return self.health.latency_ms()

    @property
    def inflight(self) -> int:
        return self.health.inflight


class Router:
    def __init__(self, cfg: Config, http: Any, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.rng = rng or random.Random()
        self.groups: dict[str, ModelGroup] = dict(cfg.models)
        self.targets: dict[str, list[Target]] = {
            name: [Target(d, make_provider(d, http), cfg) for d in g.deployments] for name, g in cfg.models.items()
        }
        self.aliases = {a: name for name, g in cfg.models.items() for a in g.aliases}

    def resolve(self, model: str) -> str | None:
        """The group a requested model name refers to (a group name or one of its aliases)."""
        if model in self.groups:
            return model
        return self.aliases.get(model)

    def group_names(self) -> list[str]:
        return sorted(self.groups)

    # ------------------------------------------------------------ planning

    def plan(
        self, ctx: RequestContext, group: str, only: str | None = None, exclude: set[str] | frozenset[str] = frozenset()
    ) -> Iterator[tuple[Target, str]]:
        """Deployments to try, in order, with the reason for each: the group's own, then its fallbacks'.
        ``only`` restricts the plan to one deployment (a retry on the same one); ``exclude`` skips some."""
        residency = ctx.principal.residency if ctx.principal else ()
        seen: set[str] = set(exclude)
        chain = [group, *self.groups[group].fallbacks]
        any_in_region = False
        for i, name in enumerate(chain):
            allowed = [
                t
                for t in self.targets[name]
                if (not residency or t.dep.region in residency) and (only is None or t.dep.id == only)
            ]
            any_in_region = any_in_region or bool(allowed)
            now = time.monotonic()
            healthy = [t for t in allowed if t.health.available(now)]
            if not healthy:
                continue
            ordered, reason = STRATEGIES[self.groups[name].strategy](healthy, self.rng)
            for j, t in enumerate(ordered):
                if t.dep.id in seen:
                    continue
                seen.add(t.dep.id)
                if i == 0:
                    yield t, reason if j == 0 else "failover"
                else:
                    yield t, f"fallback to group {name}"
        if residency and not any_in_region:
            raise GatewayError(
                "residency_violation",
                f"No deployment of model {group!r} is in your allowed regions ({', '.join(residency)}); "
                "the gateway never routes outside them. Ask an admin for a model group with a deployment there.",
            )

    # ------------------------------------------------------------ execution

    async def _attempts(
        self,
        ctx: RequestContext,
        group: str,
        call: Callable[[Target], Awaitable[R]],
        only: str | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> R:
        g = self.groups[group]
        deadline = time.monotonic() + g.timeout_s
        last: UpstreamError | None = None
        notes: list[str] = []
        budget = ctx.attempts + g.max_attempts
        for target, reason in self.plan(ctx, group, only, exclude):
            if ctx.attempts >= budget or time.monotonic() >= deadline:
                break
            ctx.attempts += 1
            target.health.begin()
            t0 = time.perf_counter_ns()
            try:
                result = await call(target)
            except UpstreamError as e:
                e.deployment = e.deployment or target.dep.id
                target.health.failure(e)
                last = e
                notes.append(f"{e.status if not e.timeout else 'timeout'} from {target.dep.id}")
                if not e.retryable:
                    break
                continue
            finally:
                target.health.end()
                ctx.upstream_ns += time.perf_counter_ns() - t0
            if notes:
                reason = f"{reason} after {', '.join(notes)}"
            self._served(ctx, target, reason)
            return result
        if notes:
            ctx.flags["failed_attempts"] = notes
        if last is not None:
            raise last.to_gateway_error()
        raise GatewayError(
            "no_healthy_deployment",
            f"Every deployment of model {group!r} is cooling down or has an open circuit; retry in a few seconds "
            "or use another model.",
            headers={"retry-after": "5"},
        )

    def _served(self, ctx: RequestContext, target: Target, reason: str) -> None:
        ctx.deployment = target.dep.id
        ctx.provider = target.dep.provider
        ctx.upstream_model = target.dep.model
        ctx.region = target.dep.region
        ctx.route = reason
        ctx.scratch["target"] = target

    async def complete(
        self,
        ctx: RequestContext,
        group: str,
        req: ChatRequest,
        only: str | None = None,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> ChatResponse:
        """One answer; its usage and cost are charged to ``ctx`` (every attempt that returned is paid for)."""

        async def call(t: Target) -> ChatResponse:
            t0 = time.perf_counter_ns()
            resp = await t.provider.complete(req)
            t.health.success((time.perf_counter_ns() - t0) / 1e6)
            charge(ctx, resp.usage, t.price)
            return resp

        return await self._attempts(ctx, group, call, only, exclude)

    async def embed(self, ctx: RequestContext, group: str, req: EmbeddingRequest) -> EmbeddingResponse:
        async def call(t: Target) -> EmbeddingResponse:
            resp = await t.provider.embed(req)
            charge(ctx, resp.usage, t.price)
            return resp

        return await self._attempts(ctx, group, call)

    async def open_stream(
        self, ctx: RequestContext, group: str, req: ChatRequest
    ) -> tuple[ChatChunk, AsyncIterator[ChatChunk]]:
        """The first chunk and the rest of the stream. Failover is possible only until the first chunk."""

        async def call(t: Target) -> tuple[ChatChunk, AsyncIterator[ChatChunk]]:
            t0 = time.perf_counter_ns()
            it = aiter(t.provider.stream(req))
            try:
                first = await anext(it)
            except StopAsyncIteration:
                raise UpstreamError(502, "empty stream", deployment=t.dep.id, bad_response=True) from None
            except UpstreamError:
                await _aclose(it)
                raise
            t.health.success((time.perf_counter_ns() - t0) / 1e6, ttft_ms=(time.perf_counter_ns() - t0) / 1e6)
            return first, it

        return await self._attempts(ctx, group, call)


async def _aclose(it: AsyncIterator[Any]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except (Exception, asyncio.CancelledError):
            pass
