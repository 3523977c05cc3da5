"""Google Gemini (Generative Language API / Vertex AI) wire format: generateContent,
streamGenerateContent (SSE with ``alt=sse``, JSON array otherwise), countTokens, errors."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from .engine import Req, RequestError, Result, ceil_int, count_tokens, uid
from .profiles import ModelProfile

_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "stop_sequence": "STOP", "tool_calls": "STOP"}
STREAM_GROUP = 4  # pieces per streamed chunk (Gemini streams in multi-token chunks)


def new_id() -> str:
    return "sim" + uid(12)


def parse_generate(data: Any, model: str) -> Req:
    if not isinstance(data, dict):
        raise RequestError("Invalid JSON payload received.")
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise RequestError("* GenerateContentRequest.contents: contents is not specified", param="contents")
    req = Req(model)
    texts = req.texts
    n_msgs = 0
    si = data.get("systemInstruction") or data.get("system_instruction")
    if isinstance(si, dict):
        n_msgs += 1
        for p in si.get("parts") or []:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                texts.append(p["text"])
    elif isinstance(si, str):
        n_msgs += 1
        texts.append(si)
    last_user = ""
    last_result = False
    for c in contents:
        if not isinstance(c, dict):
            raise RequestError("* GenerateContentRequest.contents: invalid content", param="contents")
        role = c.get("role") or "user"
        if role not in ("user", "model", "function", "tool"):
            raise RequestError(f"Please use a valid role: user, model. (got {role!r})", param="contents.role")
        user_texts = []
        has_result = False
        for p in c.get("parts") or []:
            if not isinstance(p, dict):
                continue
            t = p.get("text")
            if isinstance(t, str):
                texts.append(t)
                if role == "user":
                    user_texts.append(t)
            elif "functionCall" in p:
                texts.append(orjson.dumps((p["functionCall"] or {}).get("args") or {}).decode())
            elif "functionResponse" in p:
                texts.append(orjson.dumps((p["functionResponse"] or {}).get("response") or {}).decode())
                has_result = True
        if role != "model":
            if user_texts:
                last_user = "".join(user_texts)
            last_result = has_result
        else:
            last_result = False
    n_msgs += len(contents)
    req.n_messages = n_msgs
    req.last_user = last_user
    req.last_is_tool_result = last_result
    tools = data.get("tools")
    if isinstance(tools, list) and tools:
        for t in tools:
            if not isinstance(t, dict):
                continue
            for fd in t.get("functionDeclarations") or t.get("function_declarations") or []:
                if isinstance(fd, dict) and fd.get("name"):
                    schema = fd.get("parametersJsonSchema") or fd.get("parameters") or {}
                    req.tools.append((fd["name"], schema))
        req.tools_chars = len(orjson.dumps(tools))
    tc = data.get("toolConfig") or data.get("tool_config")
    if isinstance(tc, dict):
        fcc = tc.get("functionCallingConfig") or tc.get("function_calling_config") or {}
        mode = str(fcc.get("mode") or "AUTO").upper()
        allowed = fcc.get("allowedFunctionNames") or fcc.get("allowed_function_names") or []
        if mode == "NONE":
            req.tool_choice = "none"
        elif mode in ("ANY", "VALIDATED"):
            req.tool_choice = ("tool:" + allowed[0]) if len(allowed) == 1 else "required"
    gc = data.get("generationConfig") or data.get("generation_config") or {}
    if isinstance(gc, dict):
        mt = gc.get("maxOutputTokens", gc.get("max_output_tokens"))
        if mt is not None:
            if not isinstance(mt, int) or mt < 1:
                raise RequestError("max_output_tokens must be positive.", param="generationConfig")
            req.max_tokens = mt
        ss = gc.get("stopSequences") or gc.get("stop_sequences")
        if isinstance(ss, list):
            req.stop = [s for s in ss if isinstance(s, str)]
        cc = gc.get("candidateCount") or gc.get("candidate_count")
        if isinstance(cc, int) and cc > 1:
            req.n = min(cc, 8)
        mime = gc.get("responseMimeType") or gc.get("response_mime_type")
        schema = gc.get("responseJsonSchema") or gc.get("responseSchema") or gc.get("response_schema")
        if mime == "application/json" or schema:
            req.json_mode = True
            if isinstance(schema, dict):
                req.json_schema = schema
        seed = gc.get("seed")
        if isinstance(seed, int):
            req.seed = seed
        think = gc.get("thinkingConfig") or {}
        if isinstance(think, dict) and think.get("includeThoughts"):
            req.thinking_budget = int(think.get("thinkingBudget") or 1024)
    return req


def usage_meta(res: Result) -> dict[str, Any]:
    u: dict[str, Any] = {
        "promptTokenCount": res.prompt_tokens,
        "candidatesTokenCount": res.completion_tokens - res.reasoning_tokens,
        "totalTokenCount": res.prompt_tokens + res.completion_tokens,
    }
    if res.cached_tokens:
        u["cachedContentTokenCount"] = res.cached_tokens
    if res.reasoning_tokens:
        u["thoughtsTokenCount"] = res.reasoning_tokens
    u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": res.prompt_tokens}]
    return u


def _parts(ch, text: str | None = None) -> list[dict[str, Any]]:
    if ch.tool_calls:
        return [
            {"functionCall": {"name": name, "args": orjson.loads(args)}} for _, name, args in ch.tool_calls
        ]
    return [{"text": ch.text if text is None else text}]


def render_generate(req: Req, res: Result, prof: ModelProfile, usage: bool = True) -> bytes:
    cands = []
    for i, ch in enumerate(res.choices):
        cands.append(
            {
                "content": {"parts": _parts(ch), "role": "model"},
                "finishReason": _FINISH[ch.finish],
                "index": i,
            }
        )
    body: dict[str, Any] = {"candidates": cands}
    if usage:
        body["usageMetadata"] = usage_meta(res)
    body["modelVersion"] = req.model
    body["responseId"] = new_id()
    return orjson.dumps(body)


def stream_generate(
    req: Req, res: Result, prof: ModelProfile, usage: bool, sse: bool = True
) -> list[tuple[bytes, int]]:
    """``alt=sse``: ``data: {...}\\r\\n\\r\\n`` events; otherwise a streamed JSON array ``[{...},{...}]``."""
    rid = new_id()
    tail = b',"modelVersion":' + orjson.dumps(req.model) + b',"responseId":"' + rid.encode() + b'"}'
    objs: list[tuple[bytes, int]] = []
    n = len(res.choices)
    per_choice: list[list[tuple[bytes, int]]] = []
    for i, ch in enumerate(res.choices):
        seq: list[tuple[bytes, int]] = []
        if ch.tool_calls:
            cand = {"content": {"parts": _parts(ch), "role": "model"}, "index": i}
            seq.append((b'{"candidates":[' + orjson.dumps(cand) + b"]" + tail, len(ch.tool_calls)))
        else:
            pieces = ch.pieces
            pre = b'{"candidates":[{"content":{"parts":[{"text":'
            post = b'}],"role":"model"},"index":' + str(i).encode() + b"}]" + tail
            for k in range(0, len(pieces), STREAM_GROUP):
                grp = pieces[k : k + STREAM_GROUP]
                seq.append((pre + orjson.dumps("".join(grp)) + post, len(grp)))
        per_choice.append(seq)
    for group in itertools.zip_longest(*per_choice):
        objs.extend(c for c in group if c is not None)
    # final chunk(s): finishReason (+ usageMetadata)
    final_cands = [
        {
            "content": {"parts": [{"text": ""}], "role": "model"},
            "finishReason": _FINISH[ch.finish],
            "index": i,
        }
        for i, ch in enumerate(res.choices)
    ]
    final: dict[str, Any] = {"candidates": final_cands}
    if usage:
        final["usageMetadata"] = usage_meta(res)
    final_b = orjson.dumps(final)[:-1] + tail
    objs.append((final_b, 0))
    del n
    if sse:
        return [(b"data: " + b + b"\r\n\r\n", t) for b, t in objs]
    out: list[tuple[bytes, int]] = []
    for k, (b, t) in enumerate(objs):
        out.append(((b"[" if k == 0 else b",\r\n") + b, t))
    out.append((b"]", 0))
    return out


def render_count(req: Req) -> bytes:
    n = count_tokens(req)
    return orjson.dumps({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]})


def malformed_body(req: Req) -> bytes:
    return b'{"candidates":[{"content":{"parts":[{"text":"broken'


def malformed_chunk() -> bytes:
    return b'data: {"candidates":[{"content":{"parts":[{"te\r\n\r\n'


def render_models(names: list[str]) -> bytes:
    return orjson.dumps(
        {
            "models": [
                {
                    "name": "models/" + n,
                    "displayName": n,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                }
                for n in names
            ]
        }
    )


_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: (
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
    ),
    404: (
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for generateContent.",
    ),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def error(
    status: int,
    model: str = "",
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    gstatus, default = _STATUS.get(status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", "Error."))
    err: dict[str, Any] = {
        "code": status,
        "message": message or default.format(model=model),
        "status": gstatus,
    }
    headers = [("content-type", "application/json; charset=UTF-8")]
    if status == 429:
        ra = retry_after if retry_after is not None else 1.0
        err["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{ra:g}s"},
        ]
        headers.append(("retry-after", f"{ceil_int(ra)}"))
    elif status >= 500 and retry_after is not None:
        headers.append(("retry-after", f"{ceil_int(retry_after)}"))
    return status, headers, orjson.dumps({"error": err})
