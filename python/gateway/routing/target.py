"""A deployment at run time (config, adapter, price, health): what the router plans over and what served a
request (``ctx.target``)."""

from __future__ import annotations

from gateway.config import Config, Deployment, ModelGroup
from gateway.pricing import price_for
from gateway.providers.base import Provider
from gateway.routing.health import Health


class Target:
    """A deployment at run time: its config, adapter, price and health."""

    __slots__ = ("dep", "health", "price", "provider", "unit_cost")

    def __init__(self, dep: Deployment, provider: Provider, cfg: Config, group: ModelGroup) -> None:
        self.dep = dep
        self.provider = provider
        self.price = price_for(dep, cfg)
        self.unit_cost = self.price.input + self.price.output
        self.health = Health(
            failure_threshold=group.failure_threshold, open_s=group.open_s, stall_s=group.stall_s
        )

    # the strategy Candidate protocol
    @property
    def weight(self) -> float:
        return self.dep.weight

    @property
    def priority(self) -> int:
        return self.dep.priority

    @property
    def latency_ms(self) -> float:
        return self.health.latency_ms(False)

    @property
    def inflight(self) -> int:
        return self.health.inflight
