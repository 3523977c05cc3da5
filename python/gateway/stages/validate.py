"""Structured output: the answer must match the request's ``response_format`` JSON schema.

Schemas are compiled once in the Rust core and cached by hash. On invalid or malformed output the router (given
this stage's predicate as ``ctx.accept``) asks the same deployment again (``retries`` times), then the group's
other deployments, then answers with a clear error; the record's flags say what happened. Streams can't be retried
after their first byte: the router checks a stream's whole text against the same predicate when it ends and the
result is recorded (``schema_valid``, ``schema_repairs``).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import _core
from gateway.config import ValidateConfig
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.pipeline import Stage
from gateway.types import ChatRequest, ChatResponse


def schema_of(req: ChatRequest) -> Any | None:
    """The JSON schema the request asks for, if any (``response_format: {type: json_schema, ...}``)."""
    rf = req.response_format
    if not rf or rf.get("type") != "json_schema":
        return None
    js = rf.get("json_schema") or {}
    return js.get("schema")


def problems(validator: _core.JsonSchema, resp: ChatResponse) -> list[str]:
    out = []
    for c in resp.choices:
        text = c.message.content
        if not isinstance(text, str):
            out.append(f"choice {c.index}: no text content")
            continue
        errs = validator.errors(text, 5)
        out.extend(f"choice {c.index}: {e}" for e in errs)
    return out


class SchemaAcceptance:
    """The router's predicate for this request (``ctx.accept``): an answer must match the schema. Keeps the
    history of rejected answers for the record's flags (``schema_repairs``)."""

    __slots__ = ("fallback", "history", "retries", "validator")

    def __init__(self, validator: _core.JsonSchema, cfg: ValidateConfig) -> None:
        self.validator = validator
        self.retries = cfg.retries
        self.fallback = cfg.fallback
        self.history: list[str] = []

    def check(self, ctx: RequestContext, deployment: str, resp: ChatResponse) -> bool:
        errs = problems(self.validator, resp)
        if errs:
            self.history.append(f"{deployment}: {errs[0]}")
            return False
        ctx.flags["schema_valid"] = True
        if self.history:
            ctx.flags["schema_repairs"] = self.history
        return True

    def failure(self, ctx: RequestContext) -> GatewayError:
        history = self.history
        ctx.flags["schema_valid"] = False
        ctx.flags["schema_repairs"] = history
        return GatewayError(
            "schema_validation_failed",
            f"The model's output did not match the requested JSON schema after {len(history)} attempts "
            f"(last: {history[-1]}). Simplify the schema or try another model.",
        )


class ValidateStage(Stage):
    """Compiles the request's schema and hands the router its predicate; the router does the repairs (one
    failover loop). ``post`` checks only answers the router did not produce (a stage's short-circuit)."""

    name = "validate"

    def __init__(self, cfg: ValidateConfig) -> None:
        self.cfg = cfg

    async def pre(self, ctx: RequestContext, req: ChatRequest) -> None:
        schema = schema_of(req)
        if schema is None:
            return
        try:
            validator = _core.compile_schema(orjson.dumps(schema))
        except ValueError as e:
            raise GatewayError(
                "invalid_request",
                f"response_format.json_schema.schema is not a valid JSON schema: {e}",
                param="response_format.json_schema.schema",
            ) from None
        ctx.accept = SchemaAcceptance(validator, self.cfg)

    async def post(self, ctx: RequestContext, resp: ChatResponse) -> ChatResponse:
        accept = ctx.accept
        if accept is None or "schema_valid" in ctx.flags:
            return resp
        if not accept.check(ctx, ctx.deployment or "", resp):
            raise accept.failure(ctx)
        return resp
