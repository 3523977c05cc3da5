"""The Rust-backed stages through the real gateway: PII masking/unmasking, rate limits, schema validation."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import KEY_A, base_config

KEY_STRICT = "gw-test-strict-pii-key-00000000000000000000"
KEY_RL = "gw-test-rate-limited-key-000000000000000000"
KEY_TPM = "gw-test-token-limited-key-00000000000000000"

EMAIL, PHONE, CARD, SSN = "jane.doe@example.com", "+1 415 555 2671", "4111 1111 1111 1111", "536-22-8745"


@pytest.fixture(scope="module")
def sgw(simulator, start_gateway, tmp_path_factory):
    s = simulator.url + "/v1"
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    cfg["keys"] += [
        {"key": KEY_STRICT, "name": "strict", "tenant": "tenant-a", "profile": "strict"},
        {"key": KEY_RL, "name": "rl", "tenant": "tenant-rl"},
        {"key": KEY_TPM, "name": "tpm", "tenant": "tenant-tpm"},
    ]
    cfg["stages"] = {
        "pii": {"enabled": True, "default": "mask", "policies": {"IP_ADDRESS": "flag"}},
        "profiles": {
            "strict": {"pii": {"enabled": True, "default": "mask", "policies": {"US_SSN": "reject"}}}
        },
        "limits": {"enabled": True, "keys": {"rl": {"rpm": 3}, "tpm": {"tpm": 2000}}},
        "validate": {"enabled": True, "retries": 1, "fallback": True},
    }
    cfg["models"]["pii-echo"] = {
        "deployments": [{"id": "pii-echo", "model": "pii-echo", "api_base": s, "api_key": "k"}]
    }
    cfg["models"]["structured"] = {
        "strategy": "priority",
        "deployments": [
            {"id": "json-bad", "model": "json-bad", "api_base": s, "api_key": "k", "priority": 0},
            {"id": "json-good", "model": "json-good", "api_base": s, "api_key": "k", "priority": 1},
        ],
    }
    cfg["models"]["structured-bad"] = {
        "deployments": [{"id": "json-bad-only", "model": "json-bad-only", "api_base": s, "api_key": "k"}]
    }
    return start_gateway(cfg)


def upstream_texts(simulator, model: str) -> str:
    body = simulator.get(f"/_sim/last?model={model}")["body"]
    return json.dumps(body["messages"])


# ---------------------------------------------------------------- PII


def test_pii_is_masked_upstream_and_unmasked_for_the_caller(sgw, simulator):
    prompt = f"#echo Contact {EMAIL} or {PHONE}; card {CARD}. Again: {EMAIL}"
    raw = sgw.openai().chat.completions.with_raw_response.create(
        model="pii-echo",
        messages=[{"role": "system", "content": f"Known user {EMAIL}"}, {"role": "user", "content": prompt}],
    )
    seen = upstream_texts(simulator, "pii-echo")
    for value in (EMAIL, PHONE, CARD):
        assert value not in seen
    assert "<EMAIL_ADDRESS_1>" in seen and "<PHONE_NUMBER_1>" in seen and "<CREDIT_CARD_1>" in seen
    assert "<EMAIL_ADDRESS_2>" not in seen  # the same value gets the same placeholder in every message
    reply = raw.parse().choices[0].message.content
    assert prompt in reply and f"Known user {EMAIL}" in reply  # the echo comes back with the real values
    assert "<EMAIL_ADDRESS_1>" not in reply
    assert raw.headers["x-gateway-pii"] == "CREDIT_CARD=1,EMAIL_ADDRESS=3,PHONE_NUMBER=1"
    rec = sgw.record(raw.headers["x-gateway-request-id"])
    assert rec["flags"]["pii"] == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 3, "PHONE_NUMBER": 1}
    assert EMAIL not in json.dumps(rec)  # counts, never values


def test_pii_unmasked_in_streams_even_when_placeholders_split(sgw):
    prompt = f"#echo mail {EMAIL} call {PHONE} and {EMAIL} [[sim:tps=0]]"
    chunks = list(
        sgw.openai().chat.completions.create(
            model="pii-echo",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    text = "".join(pieces)
    assert prompt in text and "<EMAIL" not in text
    assert len(pieces) > 5  # streamed in pieces, not buffered into one


def test_pii_session_keeps_placeholders_stable_across_requests(sgw, simulator):
    client = sgw.openai()
    for msg in (f"#echo first {EMAIL}", f"#echo other a@b.co then {EMAIL}"):
        client.chat.completions.create(
            model="pii-echo",
            messages=[{"role": "user", "content": msg}],
            extra_headers={"x-gateway-session": "conv-1"},
        )
    seen = upstream_texts(simulator, "pii-echo")
    assert "then <EMAIL_ADDRESS_1>" in seen and "other <EMAIL_ADDRESS_2>" in seen


def test_pii_in_tool_arguments_and_results_is_masked(sgw, simulator):
    messages = [
        {"role": "user", "content": "look up my account"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"email": EMAIL})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"owner phone {PHONE}"},
        {"role": "user", "content": "#echo thanks"},
    ]
    sgw.openai().chat.completions.create(model="pii-echo", messages=messages)
    seen = upstream_texts(simulator, "pii-echo")
    assert EMAIL not in seen and PHONE.replace(" ", "") not in seen.replace(" ", "")


def test_pii_reject_policy_names_types_never_values(sgw):
    with pytest.raises(openai.BadRequestError) as e:
        sgw.openai(KEY_STRICT).chat.completions.create(
            model="pii-echo", messages=[{"role": "user", "content": f"my ssn is {SSN}"}]
        )
    assert e.value.code == "pii_rejected" and "US_SSN" in e.value.message and SSN not in e.value.message


def test_pii_flag_policy_records_but_does_not_mask(sgw, simulator):
    raw = sgw.openai().chat.completions.with_raw_response.create(
        model="pii-echo", messages=[{"role": "user", "content": "#echo server 10.1.2.3 is down"}]
    )
    assert "10.1.2.3" in upstream_texts(simulator, "pii-echo")
    assert raw.headers["x-gateway-pii"] == "IP_ADDRESS=1"


# ---------------------------------------------------------------- rate limits


def test_rpm_limit_returns_429_with_headers(sgw):
    client = sgw.openai(KEY_RL)
    for i in range(3):
        ok = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.headers["x-ratelimit-limit-requests"] == "3"
        assert ok.headers["x-ratelimit-remaining-requests"] == str(2 - i)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    err = e.value
    assert err.code == "rate_limited" and "key 'rl' requests per minute" in err.message
    h = err.response.headers
    assert int(h["retry-after"]) >= 1
    assert h["x-ratelimit-limit-requests"] == "3" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    assert sgw.record(h["x-gateway-request-id"])["error_code"] == "rate_limited"


def test_tpm_limit_counts_prompt_and_max_tokens(sgw):
    client = sgw.openai(KEY_TPM)
    with pytest.raises(openai.BadRequestError) as e:  # never fits: a 429 would be retried forever
        client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=5000, messages=[{"role": "user", "content": "hi"}]
        )
    assert "tokens per minute" in e.value.message and "at all" in e.value.message
    ok = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 2000


# ---------------------------------------------------------------- schema validation

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
RF = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
BAD = '[[sim@json-bad*:json={"name": 42}]]'


def test_valid_structured_output_passes(sgw):
    raw = sgw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", response_format=RF, messages=[{"role": "user", "content": "a person"}]
    )
    data = json.loads(raw.parse().choices[0].message.content)
    assert set(data) == {"name", "age"}
    assert sgw.record(raw.headers["x-gateway-request-id"])["flags"]["schema_valid"] is True


def test_invalid_output_is_retried_then_falls_back(sgw):
    raw = sgw.openai().chat.completions.with_raw_response.create(
        model="structured", response_format=RF, messages=[{"role": "user", "content": f"a person {BAD}"}]
    )
    assert raw.headers["x-gateway-model"] == "json-good"
    data = json.loads(raw.parse().choices[0].message.content)
    assert isinstance(data["age"], int)
    rec = sgw.record(raw.headers["x-gateway-request-id"])
    assert rec["flags"]["schema_valid"] is True
    assert [r.split(":")[0] for r in rec["flags"]["schema_repairs"]] == [
        "json-bad",
        "json-bad",
    ]  # first + 1 retry
    assert rec["attempts"] == 3


def test_invalid_output_everywhere_is_a_clear_error(sgw):
    with pytest.raises(openai.InternalServerError) as e:
        sgw.openai().chat.completions.create(
            model="structured-bad", response_format=RF, messages=[{"role": "user", "content": f"x {BAD}"}]
        )
    assert e.value.code == "schema_validation_failed" and "JSON schema" in e.value.message
    rec = sgw.record(e.value.response.headers["x-gateway-request-id"])
    assert rec["flags"]["schema_valid"] is False and len(rec["flags"]["schema_repairs"]) == 2


def test_invalid_schema_in_request_is_a_400(sgw):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError) as e:
        sgw.openai(KEY_A).chat.completions.create(
            model="gpt-4o-mini", response_format=bad, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.param == "response_format.json_schema.schema"
