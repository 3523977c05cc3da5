"""Response enrichment: the ``x-gateway-*`` headers that tell the caller what the gateway did.

For streams only what is known before the first byte is sent (request id, deployment, route, cache); tokens and
cost of a stream travel in its final usage chunk and in the record.
"""

from __future__ import annotations

import time

from gateway.context import RequestContext


def enrich_headers(ctx: RequestContext, content_type: str) -> list[tuple[str, str]]:
    headers = [
        ("content-type", content_type),
        ("x-gateway-request-id", ctx.request_id),
        # the ids the official SDKs expose as ``_request_id`` (openai: x-request-id, anthropic: request-id)
        ("x-request-id", ctx.request_id),
        ("request-id", ctx.request_id),
        ("x-gateway-cache", ctx.cache),
    ]
    if ctx.deployment is not None:
        total_ms = (time.perf_counter_ns() - ctx.started) / 1e6
        upstream_ms = ctx.upstream_ns / 1e6
        headers += [
            ("x-gateway-model", ctx.deployment),
            ("x-gateway-provider", ctx.provider or ""),
            ("x-gateway-region", ctx.region or ""),
            ("x-gateway-route", ctx.route or ""),
            ("x-gateway-attempts", str(ctx.attempts)),
            ("x-gateway-upstream-ms", f"{upstream_ms:.2f}"),
            ("x-gateway-overhead-ms", f"{max(0.0, total_ms - upstream_ms):.2f}"),
        ]
        if not ctx.stream:
            u = ctx.usage
            headers += [
                ("x-gateway-tokens-input", str(u.input_tokens)),
                ("x-gateway-tokens-output", str(u.output_tokens)),
                ("x-gateway-tokens-cached", str(u.cached_tokens)),
                ("x-gateway-cost-usd", f"{ctx.cost:.8f}"),
            ]
    if ctx.response_headers:
        headers.extend(ctx.response_headers.items())
    return headers
