"""gateway._core tokens: counts agree with the tiktoken package, chat accounting, helpers."""

from __future__ import annotations

import base64
import glob
import os
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._core import Tokenizer, encoding_for_model, estimate_tokens

O200K = Tokenizer("o200k_base")
CL100K = Tokenizer("cl100k_base")

# tiktoken's own pattern strings (tiktoken_ext/openai_public.py).
PAT = {
    "o200k_base": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
SPECIAL = {
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    "cl100k_base": {"<|endoftext|>": 100257},
}


@cache
def reference(name: str):
    """The tiktoken package's Encoding, built from the rank file inside the tiktoken-rs crate
    (tiktoken itself would download it)."""
    tiktoken = pytest.importorskip("tiktoken")
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    files = sorted(glob.glob(str(cargo_home / "registry/src/*/tiktoken-rs-*/assets" / f"{name}.tiktoken")))
    if not files:
        pytest.skip(f"{name}.tiktoken not found in the cargo registry (build the Rust core first)")
    ranks = {}
    for line in Path(files[-1]).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=name, pat_str=PAT[name], mergeable_ranks=ranks, special_tokens=SPECIAL[name]
    )


def test_known_counts():
    assert O200K.count("hello world") == 2
    assert O200K.encode("hello world") == [24912, 2375]
    assert O200K.decode(O200K.encode("héllo wörld 👋")) == "héllo wörld 👋"
    assert O200K.count("") == 0
    assert O200K.count_batch(["hello world", "", "a"]) == [2, 0, 1]
    assert O200K.encoding == "o200k_base" and CL100K.encoding == "cl100k_base"
    with pytest.raises(ValueError):
        Tokenizer("p50k_base")


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_matches_tiktoken(name, text):
    ours = O200K if name == "o200k_base" else CL100K
    assert ours.encode(text) == reference(name).encode_ordinary(text)


def test_matches_tiktoken_on_long_mixed_text():
    text = ("def f(x):\n    return x**2  # Ünïcödé, 数字 12345, <|endoftext|>\n" * 400) + "  \n\n\t end"
    assert O200K.count(text) == len(reference("o200k_base").encode_ordinary(text))
    assert CL100K.count(text) == len(reference("cl100k_base").encode_ordinary(text))


def test_count_messages_cookbook_accounting():
    n = O200K.count
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "bob", "content": "Hi there"},
    ]
    expected = (3 + n("system") + n("You are terse.")) + (3 + n("user") + n("bob") + 1 + n("Hi there")) + 3
    assert O200K.count_messages(messages) == expected


def test_count_messages_parts_images_and_tool_calls():
    n = O200K.count
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://x/z.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    expected = (
        (3 + n("user") + n("What is this?") + 85 + 765)
        + (3 + n("assistant") + n("lookup") + n('{"q": 1}'))
        + (3 + n("tool") + n("42"))
        + 3
    )
    assert O200K.count_messages(messages) == expected


def test_count_messages_tools_formula():
    n = O200K.count
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "City name."},
                        "unit": {"type": "string", "description": "Unit", "enum": ["c", "f"]},
                    },
                },
            },
        }
    ]
    msgs = [{"role": "user", "content": "hi"}]
    base = O200K.count_messages(msgs)
    tool_tokens = (
        7
        + n("get_weather:Get the weather")
        + 3
        + (3 + n("city:string:City name"))
        + (3 - 3 + 3 + n("c") + 3 + n("f") + n("unit:string:Unit"))
        + 12
    )
    assert O200K.count_messages(msgs, tools) == base + tool_tokens
    assert O200K.count_messages(msgs, []) == base
    with pytest.raises(TypeError):
        O200K.count_messages(["not a dict"])


def test_estimate_and_model_mapping():
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_tokens(text) == -(-O200K.count(text) * 11 // 10)
    assert estimate_tokens("") == 0
    for model in [
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "o1",
        "o3-mini",
        "gpt-4.1",
        "gpt-5",
        "openai/gpt-4o",
        "claude-x",
    ]:
        assert encoding_for_model(model) == "o200k_base", model
    for model in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo"]:
        assert encoding_for_model(model) == "cl100k_base", model
