"""Usage equality: for every (client dialect, provider, stream or not), the tokens the gateway records are the
tokens the upstream reported, and the tokens the client sees are the same numbers in its own dialect's terms.

The oracle is the simulator's own ledger (``GET /_sim/stats``: prompt and completion tokens per upstream model);
each case gets its own upstream model name, so the ledger row is that one request. The prompt asks the simulator
for cached and reasoning tokens too, so the cache and reasoning mappings are checked, not just the totals.
The table is printed (``pytest -s``) and written to ``bench-results/usage_table.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, base_config

DIALECTS = ["openai", "anthropic", "responses"]
PROVIDERS = ["openai", "azure", "anthropic", "gemini", "bedrock"]
# "openai-native": an OpenAI-compatible deployment with responses_api: native (its own /v1/responses answers)
CASES = [(d, p) for d in DIALECTS for p in PROVIDERS] + [("responses", "openai-native")]
ORDER = [*PROVIDERS, "openai-native"]
MODES = ["json", "stream"]
CACHED, REASONING = 5, 3
# Providers whose wire format reports reasoning tokens apart (Anthropic and Bedrock fold them into output).
REPORTS_REASONING = {"openai", "azure", "gemini", "openai-native"}
PROMPT = f"Account for me, please. [[sim:cached_tokens={CACHED}]] [[sim:reasoning_tokens={REASONING}]]"
SYSTEM = "You are a careful accountant."
TOOL = {
    "name": "lookup",
    "description": "Look a word up",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
}


def upstream(dialect: str, provider: str, mode: str) -> str:
    return f"usage-{dialect}-{provider}-{mode}"


def _deployment(provider: str, model: str, sim_url: str) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": model,
        "provider": provider,
        "model": model,
        "api_base": sim_url,
        "api_key": "k",
    }
    if provider == "openai-native":
        d["provider"], d["responses_api"] = "openai", "native"
    if d["provider"] == "openai":
        d["api_base"] = sim_url + "/v1"
    if provider == "bedrock":
        d["aws"] = {"access_key_id": "AKIDUSAGE", "secret_access_key": "usage-secret"}
    return d


@pytest.fixture(scope="module")
def ugw(simulator, start_gateway, tmp_path_factory):
    cfg = base_config(simulator.url, tmp_path_factory.mktemp("db") / "g.db")
    for d, p in CASES:
        for m in MODES:
            name = upstream(d, p, m)
            cfg["models"][name] = {"deployments": [_deployment(p, name, simulator.url)]}
    return start_gateway(cfg)


@pytest.fixture(scope="module")
def table() -> Iterator[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    yield rows
    if not rows:
        return
    head = (
        "| client dialect | provider | mode | upstream prompt | upstream completion | record input | record output "
        "| record cached | record reasoning | client in / out / cached | equal |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in sorted(
        rows, key=lambda r: (DIALECTS.index(r["dialect"]), ORDER.index(r["provider"]), r["mode"])
    ):
        c = r["client"]
        lines.append(
            f"| {r['dialect']} | {r['provider']} | {r['mode']} | {r['sim_prompt']} | {r['sim_completion']} "
            f"| {r['rec_in']} | {r['rec_out']} | {r['rec_cached']} | {r['rec_reasoning']} "
            f"| {c[0]} / {c[1]} / {c[2]} | {'yes' if r['equal'] else 'NO'} |"
        )
    text = "\n".join(lines)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "usage_table.md").write_text(
        "# Usage equality: gateway record vs upstream report\n\n"
        f"Prompt asks the simulator for {CACHED} cached and {REASONING} reasoning tokens. Upstream numbers are the "
        "simulator's ledger (`/_sim/stats`); record numbers are the gateway's audit record; client numbers are what "
        "the SDK saw (Anthropic dialect: input + cache reads, output, cache reads; Responses: input, output, cached).\n\n"
        + text
        + "\n"
    )
    print("\n" + text)


def _openai_call(gw: Any, model: str, stream: bool) -> tuple[str, tuple[int, int, int]]:
    client = gw.openai()
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "tools": [{"type": "function", "function": TOOL}],
        "max_tokens": 100,
    }
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
        chunks = list(raw.parse())
        usage = chunks[-1].usage
    else:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        usage = raw.parse().usage
    assert usage is not None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return raw.headers["x-gateway-request-id"], (usage.prompt_tokens, usage.completion_tokens, cached or 0)


def _anthropic_call(gw: Any, model: str, stream: bool) -> tuple[str, tuple[int, int, int]]:
    client = gw.anthropic()
    kwargs: dict[str, Any] = {
        "model": model,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": PROMPT}],
        "tools": [
            {"name": TOOL["name"], "description": TOOL["description"], "input_schema": TOOL["parameters"]}
        ],
        "max_tokens": 100,
    }
    if stream:
        with client.messages.with_streaming_response.create(stream=True, **kwargs) as raw:
            rid = raw.headers["x-gateway-request-id"]
            usage: Any = None
            for event in raw.parse():
                if event.type == "message_delta":
                    usage = event.usage
    else:
        raw = client.messages.with_raw_response.create(**kwargs)
        rid = raw.headers["x-gateway-request-id"]
        usage = raw.parse().usage
    assert usage is not None
    read = usage.cache_read_input_tokens or 0
    total_in = (usage.input_tokens or 0) + read + (usage.cache_creation_input_tokens or 0)
    return rid, (total_in, usage.output_tokens, read)


def _responses_call(gw: Any, model: str, stream: bool) -> tuple[str, tuple[int, int, int]]:
    client = gw.openai()
    kwargs: dict[str, Any] = {
        "model": model,
        "instructions": SYSTEM,
        "input": PROMPT,
        "tools": [{"type": "function", **TOOL, "strict": False}],
        "max_output_tokens": 100,
        "store": False,
    }
    if stream:
        with client.responses.with_streaming_response.create(stream=True, **kwargs) as raw:
            rid = raw.headers["x-gateway-request-id"]
            usage: Any = None
            for event in raw.parse():
                if event.type in ("response.completed", "response.incomplete"):
                    usage = event.response.usage
    else:
        raw = client.responses.with_raw_response.create(**kwargs)
        rid = raw.headers["x-gateway-request-id"]
        usage = raw.parse().usage
    assert usage is not None
    return rid, (usage.input_tokens, usage.output_tokens, usage.input_tokens_details.cached_tokens)


CALLS = {"openai": _openai_call, "anthropic": _anthropic_call, "responses": _responses_call}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("dialect", "provider"), CASES)
def test_recorded_usage_equals_upstream_usage(ugw, simulator, table, dialect, provider, mode):
    model = upstream(dialect, provider, mode)
    call = CALLS[dialect]
    rid, client = call(ugw, model, mode == "stream")
    rec = ugw.record(rid)
    sim = simulator.get("/_sim/stats")["by_model"][model]
    row = {
        "dialect": dialect,
        "provider": provider,
        "mode": mode,
        "sim_prompt": sim["prompt_tokens"],
        "sim_completion": sim["completion_tokens"],
        "rec_in": rec["input_tokens"],
        "rec_out": rec["output_tokens"],
        "rec_cached": rec["cached_tokens"],
        "rec_reasoning": rec["reasoning_tokens"],
        "client": client,
    }
    expected_reasoning = REASONING if provider in REPORTS_REASONING else 0
    row["equal"] = (
        sim["requests"] == 1
        and rec["input_tokens"] == sim["prompt_tokens"] == client[0]
        and rec["output_tokens"] == sim["completion_tokens"] == client[1]
        and rec["cached_tokens"] == CACHED == client[2]
        and rec["reasoning_tokens"] == expected_reasoning
        and rec["usage_estimated"] is False
    )
    table.append(row)
    assert sim["requests"] == 1
    assert rec["usage_estimated"] is False
    assert rec["input_tokens"] == sim["prompt_tokens"] == client[0]
    assert rec["output_tokens"] == sim["completion_tokens"] == client[1]
    assert rec["cached_tokens"] == CACHED == client[2]
    assert rec["reasoning_tokens"] == expected_reasoning
