"""Prices and cost: the built-in table (community list prices, USD per million tokens) plus config overrides."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import orjson

from gateway.config import Config, Deployment, Price
from gateway.context import RequestContext
from gateway.types import Usage

MICRO = 1_000_000  # approval tokens count integer micro-dollars
NANO = 1_000_000_000  # budget counters count integer nano-dollars: exact, and fine enough that their sum is
# the records' sum (whole micro-dollars, rounded per request, drifted ~4% at 13 µ$ a request)


def to_micros(usd: float) -> int:
    """Whole micro-dollars, rounded to the nearest."""
    return math.floor(usd * MICRO + 0.5)


def to_nanos(usd: float) -> int:
    """Whole nano-dollars, rounded to the nearest (what a budget counter adds)."""
    return math.floor(usd * NANO + 0.5)


@lru_cache(maxsize=1)
def builtin_table() -> dict[str, dict[str, float]]:
    return orjson.loads(resources.files("gateway.data").joinpath("prices.json").read_bytes())


def lookup(model: str) -> dict[str, float] | None:
    """The table's row for an upstream model name, tolerating provider prefixes (``openai/gpt-4o``)."""
    table = builtin_table()
    row = table.get(model)
    if row is None and "/" in model:
        row = table.get(model.split("/", 1)[1])
    return row


def price_for(dep: Deployment, cfg: Config) -> Price:
    """Deployment price, else a config override by model name, else the built-in table, else free."""
    if dep.price is not None:
        return dep.price
    if dep.model in cfg.prices:
        return cfg.prices[dep.model]
    row = lookup(dep.model)
    if row is None:
        return Price()
    return Price(
        input=row.get("input", 0.0),
        output=row.get("output", 0.0),
        cached_input=row.get("cached_input"),
        cache_creation=row.get("cache_creation"),
    )


def cost(usage: Usage, price: Price) -> float:
    """USD for one call. Cached input tokens are billed at the cached rate and cache writes at the creation rate
    when the price has them; both are part of ``input_tokens`` (the whole prompt), so neither is billed twice."""
    cached = usage.cached_tokens
    fresh = usage.input_tokens - cached - usage.cache_creation_tokens
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    creation_rate = price.cache_creation if price.cache_creation is not None else price.input
    total = (
        fresh * price.input
        + cached * cached_rate
        + usage.cache_creation_tokens * creation_rate
        + usage.output_tokens * price.output
    )
    return total / 1_000_000


def context_window(model: str) -> int | None:
    row = lookup(model)
    return int(row["context_window"]) if row and "context_window" in row else None


def charge(ctx: RequestContext, usage: Usage, price: Price) -> None:
    """Add one upstream call's usage and cost to the request (a request may pay for retries and hedges)."""
    ctx.usage = ctx.usage.plus(usage)
    ctx.cost += cost(usage, price)
