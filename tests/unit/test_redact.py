"""What records keep of caller-chosen text (the Redactor runs in the record writer's thread)."""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.telemetry.redact import WITHHELD, Redactor
from gateway.types import ChatRequest, Message

PROMPT = "Please review the quarterly figures for the Zephyr merger before Thursday's board call."


def ctx_with(error: tuple[str, str], prompt: str = PROMPT) -> RequestContext:
    ctx = RequestContext("chat", "openai")
    ctx.req = ChatRequest(model="gpt-4o", messages=[Message(role="user", content=prompt)])
    ctx.model = "gpt-4o"
    ctx.error = error
    return ctx


def test_an_upstream_error_quoting_the_prompt_is_withheld():
    r = Redactor("s" * 32, ["gpt-4o"])
    quoted = f"Invalid request: content '{PROMPT[10:60]}' violates the policy"
    rec = r.record(ctx_with(("invalid_request", f"The provider rejected the request: {quoted}")))
    assert rec.error_message == WITHHELD


def test_an_error_without_the_prompt_is_kept_and_its_pii_masked():
    r = Redactor("s" * 32, ["gpt-4o"])
    rec = r.record(ctx_with(("upstream_error", "Upstream a: account ops@example.com is over quota")))
    assert rec.error_message == "Upstream a: account <EMAIL_ADDRESS_1> is over quota"
    rec = r.record(ctx_with(("upstream_error", "Upstream a: server overloaded, try again")))
    assert rec.error_message == "Upstream a: server overloaded, try again"


def test_hashes_are_keyed_and_stable():
    a, b = Redactor("s" * 32, []), Redactor("t" * 32, [])
    assert a.ident("jane@example.com") == a.ident("jane@example.com") != b.ident("jane@example.com")
    assert a.ident("team-search") == "team-search"
    assert a.ident("x" * 500).startswith("h:")


def test_caller_ids_quoted_in_flags_and_messages_are_replaced_by_what_the_record_keeps():
    r = Redactor("s" * 32, ["gpt-4o"])
    ctx = ctx_with(("budget_exceeded", "The budget of user 'jane@example.com' would be exceeded"))
    ctx.req.user = "jane@example.com"
    ctx.flags["budget_soft_limit"] = ["user 'jane@example.com'"]
    rec = r.record(ctx)
    kept = r.ident("jane@example.com")
    assert rec.user == kept and "jane@example.com" not in str(rec)
    assert rec.flags["budget_soft_limit"] == [f"user '{kept}'"] and kept in rec.error_message
