"""Provider quotas of deployments (``Deployment.rpm/tpm``): the router charges them before it tries a deployment
and skips one that is over its quota, so the request goes elsewhere instead of collecting the provider's 429."""

from __future__ import annotations

from gateway import tokens
from gateway.config import Deployment
from gateway.state.types import LimitCheck, StateBackend, scope_tag
from gateway.types import ChatRequest


def deployment_checks(dep: Deployment, req: ChatRequest | None) -> list[LimitCheck]:
    """A deployment's provider quota (per minute): one request, and prompt + output bound tokens."""
    tag = scope_tag("deployment", dep.id)
    out = []
    if dep.rpm:
        out.append(
            LimitCheck(f"{tag}:quota:rpm", dep.rpm, 60.0, 1, f"deployment '{dep.id}' requests per minute")
        )
    if dep.tpm and req is not None:
        n = tokens.count_request(req, dep.model, dep.provider) + (req.output_cap or 0)
        out.append(
            LimitCheck(f"{tag}:quota:tpm", dep.tpm, 60.0, n, f"deployment '{dep.id}' tokens", "tokens")
        )
    return out


async def within_quota(state: StateBackend, dep: Deployment, req: ChatRequest | None) -> bool:
    """For the router: charge the deployment's quota buckets, or say it is over quota (then skip it)."""
    checks = deployment_checks(dep, req)
    return not checks or (await state.acquire(checks)).allowed
