"""Structured output: the answer must match the request's ``response_format`` JSON schema.

Schemas are compiled once in the Rust core and cached by hash. On invalid or malformed output the stage asks the
same deployment again (``retries`` times), then the group's other deployments, then answers with a clear error;
the record's flags say what happened. Streams can't be retried after their first byte: they are validated at
the end and the result is recorded (``schema_valid``).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import _core
from gateway.config import ValidateConfig
from gateway.context import RequestContext
from gateway.errors import GatewayError, UpstreamError
from gateway.pipeline import Stage
from gateway.types import ChatRequest, ChatResponse

SCHEMA = "validate_schema"


def schema_of(req: ChatRequest) -> Any | None:
    """The JSON schema the request asks for, if any (``response_format: {type: json_schema, ...}``)."""
    rf = req.response_format
    if not rf or rf.get("type") != "json_schema":
        return None
    js = rf.get("json_schema") or {}
    return js.get("schema")


def problems(validator: Any, resp: ChatResponse) -> list[str]:
    out = []
    for c in resp.choices:
        text = c.message.content
        if not isinstance(text, str):
            out.append(f"choice {c.index}: no text content")
            continue
        errs = validator.errors(text, 5)
        out.extend(f"choice {c.index}: {e}" for e in errs)
    return out


class ValidateStage(Stage):
    name = "validate"

    def __init__(self, cfg: ValidateConfig, router: Any) -> None:
        self.cfg = cfg
        self.router = router

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        schema = schema_of(req)
        if schema is None:
            return
        try:
            ctx.scratch[SCHEMA] = _core.compile_schema(orjson.dumps(schema))
        except ValueError as e:
            raise GatewayError(
                "invalid_request",
                f"response_format.json_schema.schema is not a valid JSON schema: {e}",
                param="response_format.json_schema.schema",
            ) from None

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        validator = ctx.scratch.get(SCHEMA)
        if validator is None:
            return resp
        errs = problems(validator, resp)
        if not errs:
            ctx.flags["schema_valid"] = True
            return resp
        req, group = ctx.req, ctx.scratch["group"]
        assert req is not None
        history = [f"{ctx.deployment}: {errs[0]}"]
        tried: set[str] = set()
        for attempt in range(
            self.cfg.retries + (len(self.router.targets[group]) if self.cfg.fallback else 0)
        ):
            same = attempt < self.cfg.retries
            if not same:
                tried.add(ctx.deployment or "")
            try:
                resp = await self.router.complete(
                    ctx, group, req, only=ctx.deployment if same else None, exclude=tried
                )
            except (GatewayError, UpstreamError):
                break
            errs = problems(validator, resp)
            if not errs:
                ctx.flags["schema_valid"] = True
                ctx.flags["schema_repairs"] = history
                return resp
            history.append(f"{ctx.deployment}: {errs[0]}")
        ctx.flags["schema_valid"] = False
        ctx.flags["schema_repairs"] = history
        raise GatewayError(
            "schema_validation_failed",
            f"The model's output did not match the requested JSON schema after {len(history)} attempts "
            f"(last: {history[-1]}). Simplify the schema or try another model.",
        )
