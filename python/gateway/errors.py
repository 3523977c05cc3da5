"""Errors are contracts: every one has a status, a stable code and a message that says what to do next.

Stages, the router and providers raise :class:`GatewayError`; the caller's dialect renders it in its own shape
(OpenAI ``{"error": {...}}`` or Anthropic ``{"type": "error", "error": {...}}``). The codes below are documented
in README.md and never change meaning.
"""

from __future__ import annotations

from typing import Any

# code -> (HTTP status, OpenAI error type). Anthropic's type is derived from the status in its dialect.
CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "invalid_request_error"),
    "invalid_request": (400, "invalid_request_error"),
    "invalid_config": (400, "invalid_request_error"),
    "unsupported_feature": (400, "invalid_request_error"),
    "pii_rejected": (400, "invalid_request_error"),
    "prompt_injection": (400, "invalid_request_error"),
    "content_filtered": (400, "invalid_request_error"),
    "quarantined": (403, "permission_error"),
    "schema_validation_failed": (502, "api_error"),
    "missing_api_key": (401, "authentication_error"),
    "invalid_api_key": (401, "authentication_error"),
    "model_not_allowed": (403, "permission_error"),
    "residency_violation": (403, "permission_error"),
    "model_not_found": (404, "not_found_error"),
    "not_found": (404, "not_found_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "body_too_large": (413, "invalid_request_error"),
    "request_timeout": (408, "invalid_request_error"),
    "client_disconnected": (499, "invalid_request_error"),  # recorded only: nobody is left to answer
    "rate_limited": (429, "rate_limit_error"),
    "budget_exceeded": (429, "insufficient_quota"),
    "approval_required": (402, "insufficient_quota"),
    "upstream_rate_limited": (429, "rate_limit_error"),
    "upstream_error": (502, "api_error"),
    "upstream_bad_response": (502, "api_error"),
    "upstream_unavailable": (503, "api_error"),
    "no_healthy_deployment": (503, "api_error"),
    "state_unavailable": (503, "api_error"),
    "upstream_timeout": (504, "api_error"),
    "internal_error": (500, "api_error"),
    "not_implemented": (501, "api_error"),
}


class GatewayError(Exception):
    """An answer the gateway gives instead of a completion."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.status = status or CODES[code][0]
        self.type = CODES[code][1]
        self.headers = headers or {}
        self.details = details


def invalid_request(message: str, param: str | None = None) -> GatewayError:
    """A request the caller must fix (wrong type, missing field), in the wording of the dialect that parsed it."""
    return GatewayError("invalid_request", message, param=param)


def unsupported_feature(what: str, advice: str = "remove it, or call the provider directly") -> GatewayError:
    """A request feature the gateway has no translation for: refused by name, never dropped silently."""
    return GatewayError("unsupported_feature", f"The gateway does not serve {what}; {advice}.")


class UpstreamError(Exception):
    """A provider answered with an error (or not at all). The router decides whether to retry elsewhere."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        deployment: str = "",
        timeout: bool = False,
        bad_response: bool = False,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.deployment = deployment
        self.timeout = timeout
        self.bad_response = bad_response
        # "context_length" or "content_policy": failures a different model group may not have
        self.kind = kind

    @property
    def retryable(self) -> bool:
        return self.timeout or self.bad_response or self.status in (408, 409, 429) or self.status >= 500

    def to_gateway_error(self) -> GatewayError:
        """What the caller sees when no deployment could serve: the upstream's own message (never a credential)."""
        if self.timeout:
            code = "upstream_timeout"
        elif self.status == 429:
            code = "upstream_rate_limited"
        elif self.status == 503:
            code = "upstream_unavailable"
        elif self.bad_response:
            code = "upstream_bad_response"
        elif 400 <= self.status < 500:
            # The upstream rejected the request itself: pass its status through so the caller can fix it.
            return GatewayError(
                "invalid_request",
                f"The provider rejected the request: {self.message}",
                status=self.status if self.status != 401 else 502,
            )
        else:
            code = "upstream_error"
        headers = {"retry-after": str(max(1, round(self.retry_after)))} if self.retry_after else None
        return GatewayError(
            code, f"Upstream {self.deployment or 'provider'}: {self.message}", headers=headers
        )
