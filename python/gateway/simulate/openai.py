"""OpenAI-compatible wire format: chat completions (JSON and SSE), embeddings, models, errors.
Also serves Azure OpenAI's URL form (the deployment name is the model)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from typing import Any

import orjson

from .engine import Req, RequestError, Result, ceil_int, tool_arg_pieces, uid
from .profiles import ModelProfile

try:  # numpy makes embeddings ~20x cheaper; optional
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

FINGERPRINT = "fp_sim0001"

JSON_HEADERS = [("content-type", "application/json")]
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

_FINISH = {"stop": "stop", "length": "length", "stop_sequence": "stop", "tool_calls": "tool_calls"}


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + "sim" + uid()


# --------------------------------------------------------------------------------------------- parsing


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                t = p.get("text")
                if isinstance(t, str):
                    parts.append(t)
                elif p.get("type") == "refusal" and isinstance(p.get("refusal"), str):
                    parts.append(p["refusal"])
            elif isinstance(p, str):
                parts.append(p)
        return "".join(parts)
    return str(content)


def parse_chat(data: Any, model_override: str | None = None) -> Req:
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    model = model_override or data.get("model")
    if not model or not isinstance(model, str):
        raise RequestError("you must provide a model parameter", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
            "array instead.",
            param="messages",
            code="empty_array",
        )
    req = Req(model)
    texts = req.texts
    last_user = None
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError("Missing required parameter: 'messages[].role'.", param="messages")
        role = m["role"]
        t = _content_text(m.get("content"))
        if t:
            texts.append(t)
        if role == "user":
            last_user = t
        tcs = m.get("tool_calls")
        if tcs:
            for tc in tcs:
                fn = (tc.get("function") or {}) if isinstance(tc, dict) else {}
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    texts.append(args)
    req.n_messages = len(messages)
    req.last_user = last_user or ""
    req.last_is_tool_result = messages[-1].get("role") in ("tool", "function")
    tools = data.get("tools")
    if tools:
        for t in tools:
            if isinstance(t, dict):
                fn = t.get("function") if t.get("type", "function") == "function" else None
                if isinstance(fn, dict) and fn.get("name"):
                    params = fn.get("parameters")
                    req.tools.append((fn["name"], params if isinstance(params, dict) else {}))
        req.tools_chars = len(orjson.dumps(tools))
    elif data.get("functions"):  # legacy function calling
        for fn in data["functions"]:
            if isinstance(fn, dict) and fn.get("name"):
                req.tools.append((fn["name"], fn.get("parameters") or {}))
    tc = data.get("tool_choice", data.get("function_call"))
    if isinstance(tc, str):
        req.tool_choice = tc
    elif isinstance(tc, dict):
        fn = tc.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tc.get("name")
        if name:
            req.tool_choice = "tool:" + name
        elif tc.get("type") == "allowed_tools":
            req.tool_choice = (tc.get("allowed_tools") or {}).get("mode") or "auto"
    mt = data.get("max_completion_tokens")
    if mt is None:
        mt = data.get("max_tokens")
    if mt is not None:
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise RequestError(
                f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got {mt} "
                "instead.",
                param="max_tokens",
                code="integer_below_min_value",
            )
        req.max_tokens = mt
    stop = data.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
    elif isinstance(stop, list):
        if len(stop) > 4:
            raise RequestError("Invalid 'stop': array too long (max 4).", param="stop")
        req.stop = [s for s in stop if isinstance(s, str)]
    n = data.get("n")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise RequestError("Invalid 'n': expected an integer between 1 and 128.", param="n")
        req.n = n
    req.stream = bool(data.get("stream"))
    so = data.get("stream_options")
    if req.stream and isinstance(so, dict) and so.get("include_usage"):
        req.include_usage = True
    rf = data.get("response_format")
    if isinstance(rf, dict):
        kind = rf.get("type")
        if kind == "json_object":
            req.json_mode = True
        elif kind == "json_schema":
            req.json_mode = True
            js = rf.get("json_schema")
            if isinstance(js, dict) and isinstance(js.get("schema"), dict):
                req.json_schema = js["schema"]
            else:
                req.json_schema = {"type": "object"}
    seed = data.get("seed")
    if isinstance(seed, int):
        req.seed = seed
    return req


# --------------------------------------------------------------------------------------------- rendering


def usage_dict(res: Result, include_details: bool = True) -> dict[str, Any]:
    u: dict[str, Any] = {
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
        "total_tokens": res.prompt_tokens + res.completion_tokens,
    }
    if include_details:
        u["prompt_tokens_details"] = {"cached_tokens": res.cached_tokens, "audio_tokens": 0}
        u["completion_tokens_details"] = {
            "reasoning_tokens": res.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return u


def _tool_call_objs(ch) -> list[dict[str, Any]]:
    return [
        {"id": "call_" + cid, "type": "function", "function": {"name": name, "arguments": args}}
        for cid, name, args in ch.tool_calls
    ]


def render_chat(req: Req, res: Result, prof: ModelProfile) -> bytes:
    choices = []
    for i, ch in enumerate(res.choices):
        if ch.tool_calls:
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": _tool_call_objs(ch),
                "refusal": None,
                "annotations": [],
            }
        else:
            msg = {"role": "assistant", "content": ch.text, "refusal": None, "annotations": []}
        choice = {"index": i, "message": msg, "logprobs": None, "finish_reason": _FINISH[ch.finish]}
        if ch.finish == "stop_sequence":
            choice["stop_reason"] = ch.stop_seq  # as vLLM names the stop string that cut the text
        choices.append(choice)
    return orjson.dumps(
        {
            "id": new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": usage_dict(res),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


def stream_chat(req: Req, res: Result, prof: ModelProfile, usage: bool) -> list[tuple[bytes, int]]:
    """SSE chunks as ``(bytes, tokens)``; ``tokens`` > 0 marks chunks paced by tokens_per_s."""
    cid = new_id()
    head = (
        b'data: {"id":"'
        + cid.encode()
        + b'","object":"chat.completion.chunk","created":'
        + str(int(time.time())).encode()
        + b',"model":'
        + orjson.dumps(req.model)
        + b',"service_tier":"default","system_fingerprint":"'
        + FINGERPRINT.encode()
        + b'","choices":[{"index":'
    )
    tail = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null}\n\n' if usage else b"}\n\n")
    out: list[tuple[bytes, int]] = []
    for i, ch in enumerate(res.choices):
        idx = str(i).encode()
        if ch.tool_calls:
            first = True
            for k, (tid, name, args) in enumerate(ch.tool_calls):
                start: dict[str, Any] = {
                    "tool_calls": [
                        {
                            "index": k,
                            "id": "call_" + tid,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
                if first:
                    start = {"role": "assistant", "content": None, "refusal": None, **start}
                    first = False
                out.append((head + idx + b',"delta":' + orjson.dumps(start) + tail, 0))
                for frag in tool_arg_pieces(args):
                    delta = {"tool_calls": [{"index": k, "function": {"arguments": frag}}]}
                    out.append((head + idx + b',"delta":' + orjson.dumps(delta) + tail, 1))
        else:
            out.append((head + idx + b',"delta":{"role":"assistant","content":"","refusal":null}' + tail, 0))
            pre = head + idx + b',"delta":{"content":'
            post = b"}" + tail
            for piece in ch.pieces:
                out.append((pre + orjson.dumps(piece) + post, 1))
    if len(res.choices) > 1:
        out = _interleave(out, len(res.choices), head)
    for i, ch in enumerate(res.choices):
        out.append(
            (
                head
                + str(i).encode()
                + b',"delta":{},"logprobs":null,"finish_reason":"'
                + _FINISH[ch.finish].encode()
                + (b'","stop_reason":' + orjson.dumps(ch.stop_seq) if ch.finish == "stop_sequence" else b'"')
                + (b'}],"usage":null}\n\n' if usage else b"}]}\n\n"),
                0,
            )
        )
    if usage:
        out.append(
            (
                head[: head.index(b'"choices":')]
                + b'"choices":[],"usage":'
                + orjson.dumps(usage_dict(res))
                + b"}\n\n",
                0,
            )
        )
    out.append((b"data: [DONE]\n\n", 0))
    return out


def _interleave(chunks: list[tuple[bytes, int]], n: int, head: bytes) -> list[tuple[bytes, int]]:
    """Round-robin the per-choice chunk sequences (as the real API interleaves choices)."""
    per: list[list[tuple[bytes, int]]] = [[] for _ in range(n)]
    hl = len(head)
    for c in chunks:
        b = c[0]
        j = b.index(b",", hl)
        per[int(b[hl:j])].append(c)
    out: list[tuple[bytes, int]] = []
    for group in itertools.zip_longest(*per):
        out.extend(c for c in group if c is not None)
    return out


def malformed_body(req: Req) -> bytes:
    return (
        b'{"id":"'
        + new_id().encode()
        + b'","object":"chat.completion","choices":[{"index":0,"message":{"role'
    )


def malformed_chunk() -> bytes:
    return (
        b'data: {"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{"delta":{"content":"\n\n'
    )


# --------------------------------------------------------------------------------------------- errors

_ERR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}
_MSG = {
    400: "Invalid request.",
    401: "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
    403: "You are not allowed to access this resource.",
    404: "The model `{model}` does not exist or you do not have access to it.",
    408: "Request timed out.",
    429: "Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1. "
    "Please try again in {retry}s.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.",
}


def error(
    status: int,
    model: str = "",
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    etype, dcode = _ERR.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    retry = retry_after if retry_after is not None else 1.0
    msg = message or _MSG.get(status, f"Simulated error {status}.").format(model=model, retry=f"{retry:g}")
    body = orjson.dumps({"error": {"message": msg, "type": etype, "param": param, "code": code or dcode}})
    headers = [("content-type", "application/json"), ("x-request-id", "req_" + new_id(""))]
    if status == 429 or (status >= 500 and retry_after is not None):
        headers.append(("retry-after", str(ceil_int(retry))))
        headers.append(("retry-after-ms", f"{int(retry * 1000)}"))
    if status == 429:
        headers += [
            ("x-ratelimit-limit-requests", "3"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", f"{retry:g}s"),
        ]
    return status, headers, body


# --------------------------------------------------------------------------------------------- embeddings

_EMB_CACHE: dict[tuple[str, str, int], tuple[bytes, Any]] = {}


def _embedding(model: str, text: str, dim: int) -> tuple[bytes, Any]:
    """(float32 little-endian bytes, list-or-array of floats): a deterministic unit vector."""
    key = (model, text, dim)
    hit = _EMB_CACHE.get(key)
    if hit is not None:
        return hit
    seed = int.from_bytes(hashlib.blake2b(f"{model}\x00{text}".encode(), digest_size=8).digest(), "little")
    if _np is not None:
        v = _np.random.default_rng(seed).standard_normal(dim).astype(_np.float32)
        v /= _np.linalg.norm(v) or 1.0
        raw = v.tobytes()
        floats: Any = v.tolist()
    else:  # pragma: no cover - pure Python fallback
        import array
        import math

        buf = hashlib.shake_256(seed.to_bytes(8, "little")).digest(dim * 2)
        ints = array.array("h", buf)
        norm = math.sqrt(sum(x * x for x in ints)) or 1.0
        fl = array.array("f", (x / norm for x in ints))
        raw = fl.tobytes()
        floats = fl.tolist()
    if len(_EMB_CACHE) > 2048:
        _EMB_CACHE.clear()
    _EMB_CACHE[key] = (raw, floats)
    return raw, floats


def parse_embeddings(data: Any, model_override: str | None) -> tuple[str, list[str], int, int | None, str]:
    """-> (model, inputs as strings, prompt token count, dimensions, encoding_format)."""
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    model = model_override or data.get("model")
    if not model or not isinstance(model, str):
        raise RequestError("you must provide a model parameter", param="model")
    inp = data.get("input")
    if inp is None or inp == "" or inp == []:
        raise RequestError("'input' is a required property", param="input")
    texts: list[str]
    tokens = 0
    if isinstance(inp, str):
        texts = [inp]
        tokens = (len(inp) + 3) >> 2
    elif isinstance(inp, list) and all(isinstance(x, int) for x in inp):
        texts = [" ".join(map(str, inp))]
        tokens = len(inp)
    elif isinstance(inp, list):
        texts = []
        for x in inp:
            if isinstance(x, str):
                texts.append(x)
                tokens += (len(x) + 3) >> 2
            elif isinstance(x, list):
                texts.append(" ".join(map(str, x)))
                tokens += len(x)
            else:
                raise RequestError("Invalid 'input': expected strings or token arrays.", param="input")
    else:
        raise RequestError("Invalid 'input'.", param="input")
    dims = data.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or dims < 1):
        raise RequestError("Invalid 'dimensions': expected a positive integer.", param="dimensions")
    fmt = data.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise RequestError(
            "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format"
        )
    return model, texts, max(tokens, 1), dims, fmt


def render_embeddings(model: str, texts: list[str], tokens: int, dim: int, fmt: str) -> bytes:
    data = []
    for i, t in enumerate(texts):
        raw, floats = _embedding(model, t, dim)
        emb = base64.b64encode(raw).decode() if fmt == "base64" else floats
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def render_models(names: list[str]) -> bytes:
    created = 1700000000
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": created, "owned_by": "simulator"} for n in names
            ],
        }
    )
