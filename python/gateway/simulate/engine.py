"""Wire-format independent core of the simulator: the normalised request, directives, deterministic
output (lorem text, echo, JSON instances of a schema, tool calls) and token accounting."""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import math
import os
import re
from typing import Any

import orjson

from .profiles import ModelProfile

WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
]
_NWORDS = len(WORDS)

_uid_counter = itertools.count(1)
_uid_prefix = ""


def _new_uid_prefix() -> None:
    """Per-process random prefix (re-drawn after fork, so workers never hand out the same ids)."""
    global _uid_counter, _uid_prefix
    _uid_prefix = os.urandom(4).hex()
    _uid_counter = itertools.count(1)


_new_uid_prefix()
os.register_at_fork(after_in_child=_new_uid_prefix)


def uid(width: int = 10) -> str:
    """A unique hex id (per-process random prefix + counter)."""
    return f"{_uid_prefix}{next(_uid_counter):0{width}x}"


def ceil_int(x: float) -> int:
    """Seconds for a Retry-After header: a non-negative integer, rounded up."""
    return max(0, math.ceil(x))


_PIECE_RE = re.compile(r"\s*\S+|\s+$")
_TOOL_HINT_RE = re.compile(r"\b(tool|tools|weather|function)\b", re.IGNORECASE)


class RequestError(Exception):
    """A client error detected while parsing a request (rendered in the provider's error shape)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


class Req:
    """A request normalised across wire formats."""

    __slots__ = (
        "include_usage",
        "json_mode",
        "json_schema",
        "last_is_tool_result",
        "last_user",
        "max_tokens",
        "model",
        "n",
        "n_messages",
        "seed",
        "stop",
        "stream",
        "texts",
        "thinking_budget",
        "tool_choice",
        "tools",
        "tools_chars",
    )

    def __init__(self, model: str):
        self.model = model
        self.texts: list[str] = []  # every piece of text the model receives, in order (for echo/counting)
        self.n_messages = 0
        self.last_user = ""  # text of the last user message (directives live here)
        self.last_is_tool_result = False  # last message carries tool results -> answer with text
        self.tools: list[tuple[str, dict[str, Any]]] = []  # (name, JSON schema of the arguments)
        self.tools_chars = 0
        self.tool_choice: str | None = None  # None/"auto" | "none" | "required" | "tool:<name>"
        self.max_tokens: int | None = None
        self.stop: list[str] = []
        self.n = 1
        self.stream = False
        self.include_usage = False
        self.json_mode = False  # output must be a JSON document
        self.json_schema: dict[str, Any] | None = None
        self.seed: int | None = None
        self.thinking_budget = 0


class Choice:
    __slots__ = ("finish", "pieces", "stop_seq", "text", "tokens", "tool_calls")

    def __init__(self) -> None:
        self.text = ""
        self.pieces: list[str] = []
        self.tool_calls: list[tuple[str, str, str]] = []  # (id suffix, name, arguments JSON)
        self.finish = "stop"  # stop | length | stop_sequence | tool_calls
        self.stop_seq: str | None = None
        self.tokens = 0


class Result:
    __slots__ = (
        "cached_tokens",
        "choices",
        "completion_tokens",
        "prompt_tokens",
        "reasoning_tokens",
        "thinking",
    )

    def __init__(self) -> None:
        self.choices: list[Choice] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0  # includes reasoning tokens
        self.cached_tokens = 0
        self.reasoning_tokens = 0
        self.thinking = ""  # Anthropic thinking text (when the request enables thinking)


# --------------------------------------------------------------------------------------------- tokens


def count_tokens(req: Req) -> int:
    """Deterministic prompt-size approximation: ceil(chars/4) per text + 3 per message + 3 + tools."""
    total = 3 + 3 * req.n_messages
    for t in req.texts:
        total += (len(t) + 3) >> 2
    if req.tools_chars:
        total += (req.tools_chars + 3) >> 2
    return total


def split_pieces(text: str) -> list[str]:
    """Split text into stream pieces (~tokens); their concatenation is the text."""
    return _PIECE_RE.findall(text)


# --------------------------------------------------------------------------------------------- directives

TEXT_KEYS = frozenset({"output", "json"})
KNOWN_KEYS = frozenset(
    {
        "fail",
        "fail_times",
        "retry_after",
        "drop_after",
        "latency_ms",
        "ttft_ms",
        "tps",
        "output",
        "json",
        "no_usage",
        "echo",
        "echo_key",
        "tool",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
    }
)
_DIR_OPEN = "[[sim"
_KEY_RE = re.compile(r"[a-z_]+")
_JSON_DECODER = json.JSONDecoder()


def parse_directives(text: str, model: str, out: dict[str, str] | None = None) -> dict[str, str] | None:
    """Extract ``[[sim:key=value]]`` / ``[[sim@model:key=value]]`` / ``[[sim:key=value@model]]``
    directives that apply to ``model``. Returns ``out`` (created when needed) or None."""
    pos = text.find(_DIR_OPEN)
    while pos >= 0:
        i = pos + 5
        scope = None
        if text.startswith("@", i):
            j = text.find(":", i)
            if j < 0:
                break
            scope = text[i + 1 : j].strip()
            i = j
        if not text.startswith(":", i):
            pos = text.find(_DIR_OPEN, pos + 5)
            continue
        m = _KEY_RE.match(text, i + 1)
        if not m:
            pos = text.find(_DIR_OPEN, pos + 5)
            continue
        key = m.group(0)
        i = m.end()
        value = ""
        end = -1
        if text.startswith("=", i):
            i += 1
            if key == "json":
                try:
                    _obj, j = _JSON_DECODER.raw_decode(text, i)
                    value = text[i:j]
                    end = text.find("]]", j)
                except ValueError:
                    end = text.find("]]", i)
                    value = text[i:end] if end >= 0 else ""
            else:
                end = text.find("]]", i)
                value = text[i:end] if end >= 0 else ""
        else:
            end = text.find("]]", i)
        if end < 0:
            break
        if key not in TEXT_KEYS and scope is None and "@" in value:
            value, scope = value.split("@", 1)
        if scope is None or scope == model or fnmatch.fnmatchcase(model, scope):
            if out is None:
                out = {}
            out[key] = value.strip() if key not in TEXT_KEYS else value
        pos = text.find(_DIR_OPEN, end + 2)
    return out


HEADER_DIRECTIVES = (
    ("x-sim-fail", "fail"),
    ("x-sim-retry-after", "retry_after"),
    ("x-sim-fail-after-chunks", "drop_after"),
    ("x-sim-latency-ms", "latency_ms"),
    ("x-sim-ttft-ms", "ttft_ms"),
    ("x-sim-tps", "tps"),
    ("x-sim-output", "output"),
    ("x-sim-json", "json"),
    ("x-sim-output-tokens", "output_tokens"),
    ("x-sim-echo", "echo"),
    ("x-sim-tool", "tool"),
    ("x-sim-fail-times", "fail_times"),
)


def header_directives(headers: Any, model: str, out: dict[str, str] | None) -> dict[str, str] | None:
    """Per-request ``x-sim-*`` header overrides (take precedence over message directives)."""
    get = headers.get
    for hname, key in HEADER_DIRECTIVES:
        v = get(hname)
        if v is not None:
            scope = None
            if key not in TEXT_KEYS and "@" in v:
                v, scope = v.split("@", 1)
            if scope is None or scope == model or fnmatch.fnmatchcase(model, scope):
                if out is None:
                    out = {}
                if key == "echo" and v.strip().lower() in ("0", "false", "no"):
                    continue
                out[key] = v
    v = get("x-sim-usage")
    if v is not None and v.strip().lower() in ("0", "false", "no", "off"):
        if out is None:
            out = {}
        out["no_usage"] = ""
    return out


def directive_int(d: dict[str, str] | None, key: str, default: int | None = None) -> int | None:
    if d is None:
        return default
    v = d.get(key)
    if v is None or v == "":
        return default
    try:
        return int(float(v))
    except ValueError:
        return default


def directive_float(d: dict[str, str] | None, key: str, default: float | None = None) -> float | None:
    if d is None:
        return default
    v = d.get(key)
    if v is None or v == "":
        return default
    try:
        return float(v)
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------- text


_LOREM_CACHE: dict[tuple[str, int], list[str]] = {}


def lorem_pieces(key: str, n: int) -> list[str]:
    """``n`` lorem-ipsum pieces chosen by a hash of ``key`` (deterministic). Cached."""
    ck = (key, n)
    pieces = _LOREM_CACHE.get(ck)
    if pieces is not None:
        return pieces
    if n <= 0:
        return []
    digest = hashlib.shake_256(key.encode()).digest(n)
    words = [WORDS[b % _NWORDS] for b in digest]
    words[0] = words[0].capitalize()
    pieces = [words[0]] + [" " + w for w in words[1:]]
    # punctuation: a comma now and then, a full stop at the end
    for i in range(7, n - 1, 9):
        pieces[i] += ","
    pieces[-1] += "."
    if len(_LOREM_CACHE) > 4096:
        _LOREM_CACHE.clear()
    _LOREM_CACHE[ck] = pieces
    return pieces


def short_hash(*parts: Any, size: int = 12) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- JSON schema


def instance_for_schema(schema: Any, name: str = "value", root: Any = None, depth: int = 0) -> Any:
    """A minimal deterministic instance satisfying ``schema`` (required properties with values of the
    right type; enums/consts pick the first; $ref, allOf/anyOf/oneOf, min/max bounds honoured).
    Accepts Gemini's OpenAPI-style uppercase type names too."""
    if root is None:
        root = schema
    if not isinstance(schema, dict) or depth > 24:
        return {} if depth == 0 else None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve_ref(root, ref)
        if target is not None:
            merged = {k: v for k, v in schema.items() if k != "$ref"}
            merged = {**target, **merged}
            return instance_for_schema(merged, name, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "default" in schema and schema.get("default") is not None and depth > 0:
        return schema["default"]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        req: list[str] = list(merged.get("required") or [])
        props: dict[str, Any] = dict(merged.get("properties") or {})
        for sub in all_of:
            if isinstance(sub, dict) and "$ref" in sub:
                sub = _resolve_ref(root, sub["$ref"]) or {}
            if isinstance(sub, dict):
                for k, v in sub.items():
                    if k == "required":
                        req += [r for r in v if r not in req]
                    elif k == "properties":
                        props.update(v)
                    else:
                        merged.setdefault(k, v)
        merged["properties"] = props
        merged["required"] = req
        return instance_for_schema(merged, name, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        alts = schema.get(key)
        if isinstance(alts, list) and alts:
            # prefer a non-null alternative
            alt = next((a for a in alts if not (isinstance(a, dict) and _type_of(a) == "null")), alts[0])
            if isinstance(alt, dict):
                base = {k: v for k, v in schema.items() if k != key}
                return instance_for_schema({**base, **alt}, name, root, depth + 1)
    typ = _type_of(schema)
    if typ == "object":
        out: dict[str, Any] = {}
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        if isinstance(props, dict):
            for pname in required:
                if pname in props:
                    out[pname] = instance_for_schema(props[pname], pname, root, depth + 1)
                else:
                    out[pname] = f"sim_{pname}"
        min_props = schema.get("minProperties") or 0
        if isinstance(props, dict) and len(out) < min_props:
            for pname, psch in props.items():
                if len(out) >= min_props:
                    break
                if pname not in out:
                    out[pname] = instance_for_schema(psch, pname, root, depth + 1)
        return out
    if typ == "array":
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        n = max(int(schema.get("minItems") or 0), 1)
        if schema.get("maxItems") is not None:
            n = min(n, int(schema["maxItems"]))
        if isinstance(prefix, list) and prefix:
            return [instance_for_schema(p, name, root, depth + 1) for p in prefix]
        if not isinstance(items, dict):
            items = {"type": "string"}
        return [instance_for_schema(items, name, root, depth + 1) for _ in range(n)]
    if typ == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            s = "2024-01-01T00:00:00Z"
        elif fmt == "date":
            s = "2024-01-01"
        elif fmt == "time":
            s = "00:00:00Z"
        elif fmt == "email":
            s = "user@example.com"
        elif fmt in ("uri", "url"):
            s = "https://example.com"
        elif fmt == "uuid":
            s = "00000000-0000-4000-8000-000000000000"
        elif fmt == "ipv4":
            s = "192.0.2.1"
        else:
            s = f"sim_{name}"
        min_len = int(schema.get("minLength") or 0)
        if len(s) < min_len:
            s = s + "x" * (min_len - len(s))
        max_len = schema.get("maxLength")
        if max_len is not None and len(s) > int(max_len):
            s = s[: int(max_len)]
        return s
    if typ in ("integer", "number"):
        lo = schema.get("minimum")
        hi = schema.get("maximum")
        xlo = schema.get("exclusiveMinimum")
        xhi = schema.get("exclusiveMaximum")

        def num(x: Any) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool)

        v: float = 1
        if num(lo) and v < lo:
            v = lo
        if num(xlo) and v <= xlo:
            v = xlo + 1
        if num(hi) and v > hi:
            v = hi
        if num(xhi) and v >= xhi:
            if typ == "integer":
                v = math.ceil(xhi) - 1
            else:
                low = xlo if num(xlo) else (lo if num(lo) else xhi - 1)
                v = (low + xhi) / 2
        mult = schema.get("multipleOf")
        if isinstance(mult, int | float) and mult:
            v = (math.ceil(v / mult) or 1) * mult
        return int(v) if typ == "integer" else v
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    if "properties" in schema:
        return instance_for_schema({**schema, "type": "object"}, name, root, depth)
    return f"sim_{name}" if depth else {}


def _type_of(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        non_null = [x for x in t if str(x).lower() != "null"]
        t = non_null[0] if non_null else (t[0] if t else None)
    if isinstance(t, str):
        t = t.lower()
        if schema.get("nullable") and t == "null":
            return "null"
        return t
    return None


def _resolve_ref(root: Any, ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node if isinstance(node, dict) else None


# --------------------------------------------------------------------------------------------- generation


def wants_tool_calls(req: Req, d: dict[str, str] | None) -> list[tuple[str, dict[str, Any]]]:
    """Which tools to call (empty: answer with text)."""
    tools = req.tools
    if not tools:
        return []
    choice = req.tool_choice
    if choice == "none":
        return []
    if choice is not None and choice.startswith("tool:"):
        name = choice[5:]
        for t in tools:
            if t[0] == name:
                return [t]
        return [(name, {})]
    if d is not None and "tool" in d:
        name = d["tool"]
        if name:
            for t in tools:
                if t[0] == name:
                    return [t]
        return [tools[0]]
    text = req.last_user
    if "[[sim" in text:
        text = _DIRECTIVE_RE.sub("", text)
    if choice == "required":
        return [_pick_tools(req, text)[0]] if req.last_is_tool_result else _pick_tools(req, text)
    if req.last_is_tool_result or (d is not None and ("output" in d or "json" in d)):
        return []
    if _TOOL_HINT_RE.search(text) or any(t[0] in text for t in tools):
        return _pick_tools(req, text)
    return []


_DIRECTIVE_RE = re.compile(r"\[\[sim.*?\]\]", re.DOTALL)


def _pick_tools(req: Req, text: str) -> list[tuple[str, dict[str, Any]]]:
    named = [t for t in req.tools if t[0] in text]
    return named or [req.tools[0]]


def generate(req: Req, prof: ModelProfile, d: dict[str, str] | None) -> Result:
    res = Result()
    res.prompt_tokens = prompt = count_tokens(req)
    cached = prof.cached_tokens
    if prof.cache_ratio:
        cached += int(prompt * prof.cache_ratio)
    cached = directive_int(d, "cached_tokens", cached) or 0
    res.cached_tokens = min(cached, prompt)
    reasoning = directive_int(d, "reasoning_tokens", prof.reasoning_tokens) or 0
    if req.thinking_budget:
        think_n = max(1, min(prof.thinking_tokens, req.thinking_budget))
        res.thinking = "".join(lorem_pieces(f"think|{req.model}|{req.last_user}", think_n))
        reasoning = max(reasoning, think_n)
    res.reasoning_tokens = reasoning

    calls = wants_tool_calls(req, d)
    explicit: str | None = None
    if d is not None:
        if "json" in d:
            explicit = d["json"]
        elif "output" in d:
            explicit = d["output"]
        elif "echo" in d:
            explicit = "\n".join(req.texts)
    if explicit is None and (prof.echo or req.last_user.startswith("#echo")):
        explicit = "\n".join(req.texts)
    out_n = directive_int(d, "output_tokens", prof.output_tokens) or 0
    max_tokens = req.max_tokens
    completion = 0
    for i in range(req.n):
        ch = Choice()
        if calls:
            for j, (name, schema) in enumerate(calls):
                args = orjson.dumps(instance_for_schema(schema or {"type": "object"})).decode()
                call_id = short_hash(req.model, req.last_user, name, i, j, size=12)
                ch.tool_calls.append((call_id, name, args))
                ch.tokens += 8 + ((len(args) + 3) >> 2)
            ch.finish = "tool_calls"
        else:
            if explicit is not None:
                pieces = split_pieces(explicit)
            elif req.json_mode:
                if req.json_schema is not None:
                    doc = instance_for_schema(req.json_schema)
                else:
                    doc = {"result": "".join(_lorem_for(req, out_n, i))}
                pieces = split_pieces(orjson.dumps(doc).decode())
            else:
                pieces = _lorem_for(req, out_n, i)
            if max_tokens is not None and len(pieces) > max_tokens:
                pieces = pieces[:max_tokens]
                ch.finish = "length"
            text = "".join(pieces)
            if req.stop:
                best = -1
                for s in req.stop:
                    if s:
                        k = text.find(s)
                        if k >= 0 and (best < 0 or k < best):
                            best = k
                            ch.stop_seq = s
                if best >= 0:
                    text = text[:best]
                    pieces = split_pieces(text)
                    ch.finish = "stop_sequence"
            ch.text = text
            ch.pieces = pieces
            ch.tokens = len(pieces)
        completion += ch.tokens
        res.choices.append(ch)
    res.completion_tokens = completion + reasoning
    return res


def _lorem_for(req: Req, n: int, i: int) -> list[str]:
    key = f"{req.model}|{req.last_user}|{req.seed}|{i}"
    return lorem_pieces(key, n)


def tool_arg_pieces(args: str, size: int = 8) -> list[str]:
    """Split a tool-call arguments JSON string into streaming fragments."""
    return [args[i : i + size] for i in range(0, len(args), size)] or [""]
