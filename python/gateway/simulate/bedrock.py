"""AWS Bedrock Runtime Converse wire format: /model/{modelId}/converse (JSON) and /converse-stream
(AWS event-stream binary framing), SigV4 header checks (optionally full verification), errors."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from gateway.providers.eventstream import encode_event, encode_exception, encode_message

from .engine import Req, RequestError, Result, ceil_int, uid
from .profiles import ModelProfile

STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_calls": "tool_use",
}


def new_request_id() -> str:
    u = uid(24)
    return f"{u[:8]}-{u[8:12]}-4{u[13:16]}-8{u[17:20]}-{u[20:32]}"


def _validation(msg: str) -> RequestError:
    return RequestError(msg, status=400, code="ValidationException")


def parse_converse(data: Any, model: str) -> Req:
    if not isinstance(data, dict):
        raise _validation("Malformed input request, please reformat your input and try again.")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _validation(
            "1 validation error detected: Value null at 'messages' failed to satisfy constraint: "
            "Member must not be null"
        )
    req = Req(model)
    texts = req.texts
    n_msgs = 0
    system = data.get("system")
    if isinstance(system, list) and system:
        n_msgs += 1
        for b in system:
            if isinstance(b, dict) and isinstance(b.get("text"), str):
                texts.append(b["text"])
    last_user = ""
    last_result = False
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise _validation(
                f"1 validation error detected: Value '{role}' at 'messages.{i + 1}.member.role' failed to "
                "satisfy constraint: Member must satisfy enum value set: [user, assistant]"
            )
        content = m.get("content")
        if not isinstance(content, list):
            raise _validation(f"Value at 'messages.{i + 1}.member.content' must be a list of content blocks")
        user_texts = []
        has_result = False
        for b in content:
            if not isinstance(b, dict):
                continue
            t = b.get("text")
            if isinstance(t, str):
                texts.append(t)
                if role == "user":
                    user_texts.append(t)
            elif "toolUse" in b:
                texts.append(orjson.dumps((b["toolUse"] or {}).get("input") or {}).decode())
            elif "toolResult" in b:
                has_result = True
                for sub in (b["toolResult"] or {}).get("content") or []:
                    if isinstance(sub, dict):
                        if isinstance(sub.get("text"), str):
                            texts.append(sub["text"])
                        elif "json" in sub:
                            texts.append(orjson.dumps(sub["json"]).decode())
            elif "reasoningContent" in b:
                rt = ((b["reasoningContent"] or {}).get("reasoningText") or {}).get("text")
                if isinstance(rt, str):
                    texts.append(rt)
        if role == "user":
            if user_texts:
                last_user = "".join(user_texts)
            last_result = has_result
        else:
            last_result = False
    n_msgs += len(messages)
    req.n_messages = n_msgs
    req.last_user = last_user
    req.last_is_tool_result = last_result
    tc = data.get("toolConfig")
    if isinstance(tc, dict):
        tools = tc.get("tools") or []
        for t in tools:
            spec = t.get("toolSpec") if isinstance(t, dict) else None
            if isinstance(spec, dict) and spec.get("name"):
                schema = (spec.get("inputSchema") or {}).get("json") or {}
                req.tools.append((spec["name"], schema))
        if tools:
            req.tools_chars = len(orjson.dumps(tools))
        choice = tc.get("toolChoice")
        if isinstance(choice, dict):
            if "any" in choice:
                req.tool_choice = "required"
            elif isinstance(choice.get("tool"), dict) and choice["tool"].get("name"):
                req.tool_choice = "tool:" + choice["tool"]["name"]
    ic = data.get("inferenceConfig")
    if isinstance(ic, dict):
        mt = ic.get("maxTokens")
        if mt is not None:
            if not isinstance(mt, int) or mt < 1:
                raise _validation(
                    "1 validation error detected: Value at 'inferenceConfig.maxTokens' failed to satisfy "
                    "constraint: Member must have value greater than or equal to 1"
                )
            req.max_tokens = mt
        ss = ic.get("stopSequences")
        if isinstance(ss, list):
            req.stop = [s for s in ss if isinstance(s, str)]
    return req


# --------------------------------------------------------------------------------------------- rendering


def usage_dict(res: Result) -> dict[str, Any]:
    u = {
        "inputTokens": res.prompt_tokens - res.cached_tokens,
        "outputTokens": res.completion_tokens,
        "totalTokens": res.prompt_tokens + res.completion_tokens,
    }
    if res.cached_tokens:
        u["cacheReadInputTokens"] = res.cached_tokens
        u["cacheWriteInputTokens"] = 0
    return u


def _content(ch) -> list[dict[str, Any]]:
    if ch.tool_calls:
        return [
            {"toolUse": {"toolUseId": "tooluse_" + cid, "name": name, "input": orjson.loads(args)}}
            for cid, name, args in ch.tool_calls
        ]
    return [{"text": ch.text}]


def render_converse(req: Req, res: Result, prof: ModelProfile, latency_ms: int) -> bytes:
    ch = res.choices[0]
    return orjson.dumps(
        {
            "output": {"message": {"role": "assistant", "content": _content(ch)}},
            "stopReason": _STOP[ch.finish],
            "usage": usage_dict(res),
            "metrics": {"latencyMs": latency_ms},
        }
    )


def stream_converse(
    req: Req, res: Result, prof: ModelProfile, usage: bool, latency_ms: int = 0
) -> list[tuple[bytes, int]]:
    ch = res.choices[0]
    out: list[tuple[bytes, int]] = [(encode_event("messageStart", b'{"role":"assistant"}'), 0)]
    if ch.tool_calls:
        for k, (cid, name, args) in enumerate(ch.tool_calls):
            start = {
                "start": {"toolUse": {"toolUseId": "tooluse_" + cid, "name": name}},
                "contentBlockIndex": k,
            }
            out.append((encode_event("contentBlockStart", orjson.dumps(start)), 0))
            for frag in _arg_frags(args):
                delta = {"delta": {"toolUse": {"input": frag}}, "contentBlockIndex": k}
                out.append((encode_event("contentBlockDelta", orjson.dumps(delta)), 1))
            out.append((encode_event("contentBlockStop", b'{"contentBlockIndex":%d}' % k), 0))
    else:
        for piece in ch.pieces:
            payload = b'{"delta":{"text":' + orjson.dumps(piece) + b'},"contentBlockIndex":0}'
            out.append((encode_event("contentBlockDelta", payload), 1))
        out.append((encode_event("contentBlockStop", b'{"contentBlockIndex":0}'), 0))
    out.append((encode_event("messageStop", b'{"stopReason":"' + _STOP[ch.finish].encode() + b'"}'), 0))
    if usage:
        meta = {"usage": usage_dict(res), "metrics": {"latencyMs": latency_ms}}
        out.append((encode_event("metadata", orjson.dumps(meta)), 0))
    return out


def _arg_frags(args: str) -> list[str]:
    return [args[i : i + 8] for i in range(0, len(args), 8)] or [""]


def malformed_body(req: Req) -> bytes:
    return b'{"output":{"message":{"role":"assistant","content":[{"te'


def malformed_chunk() -> bytes:
    msg = bytearray(encode_event("contentBlockDelta", b'{"delta":{"text":"broken"},"contentBlockIndex":0}'))
    msg[-1] ^= 0xFF  # corrupt the message CRC
    return bytes(msg)


def stream_exception(status: int, message: str) -> bytes:
    etype = _ERR.get(status, ("InternalServerException", ""))[0]
    etype = etype[0].lower() + etype[1:]
    return encode_exception(etype, orjson.dumps({"message": message}))


# --------------------------------------------------------------------------------------------- errors

_ERR = {
    400: ("ValidationException", "Malformed input request, please reformat your input and try again."),
    401: ("UnrecognizedClientException", "The security token included in the request is invalid."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: (
        "ResourceNotFoundException",
        "Could not resolve the foundation model from the provided model identifier.",
    ),
    408: ("ModelTimeoutException", "Model has timed out in processing the request."),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}


def error(
    status: int,
    model: str = "",
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    etype, default = _ERR.get(
        status, ("InternalServerException" if status >= 500 else "ValidationException", "Error")
    )
    if code and code[0].isupper():
        etype = code
    headers = [
        ("content-type", "application/json"),
        ("x-amzn-requestid", new_request_id()),
        ("x-amzn-errortype", f"{etype}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
    ]
    if status == 429 and retry_after is not None:
        headers.append(("retry-after", str(ceil_int(retry_after))))
    return status, headers, orjson.dumps({"message": message or default})


# --------------------------------------------------------------------------------------------- SigV4


def check_auth(
    authz: str | None,
    headers: Any,
    method: str,
    model: str,
    op: str,
    query: str,
    body: bytes,
    secret: str | None,
    access_key: str | None,
) -> tuple[int, str, str] | None:
    """None if acceptable, else (status, error type, message). Bedrock API keys (``Bearer``) pass."""
    if not authz:
        return 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
    if authz.startswith("Bearer "):
        return None
    if not authz.startswith("AWS4-HMAC-SHA256 "):
        return (
            403,
            "IncompleteSignatureException",
            "Unsupported authorization scheme (expected AWS4-HMAC-SHA256)",
        )
    fields: dict[str, str] = {}
    for part in authz[len("AWS4-HMAC-SHA256 ") :].split(","):
        k, _, v = part.strip().partition("=")
        fields[k] = v
    cred, signed, sig = fields.get("Credential"), fields.get("SignedHeaders"), fields.get("Signature")
    if not cred or not signed or not sig:
        return (
            403,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
        )
    cparts = cred.split("/")
    if len(cparts) != 5 or cparts[4] != "aws4_request":
        return 403, "IncompleteSignatureException", f"Credential should be scoped to a valid region: '{cred}'"
    akid, date, region, service, _ = cparts
    if service != "bedrock":
        return 403, "InvalidSignatureException", "Credential should be scoped to correct service: 'bedrock'."
    if access_key and akid != access_key:
        return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
    if not secret:
        return None
    amz_date = headers.get("x-amz-date") or ""
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    names = signed.split(";")
    canon_headers = ""
    for name in names:
        val = headers.get(name)
        if val is None and name == "host":
            val = headers.get(":authority")
        val = " ".join((val or "").split())
        canon_headers += f"{name}:{val}\n"
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canon_query = "&".join(f"{k}={v}" for k, v in pairs)
    single = "/model/" + quote(model, safe="-_.~") + "/" + op
    scope = f"{date}/{region}/{service}/aws4_request"
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    k = _hmac(k, "aws4_request")
    for uri in (quote(single, safe="/~"), single):
        creq = "\n".join((method, uri, canon_query, canon_headers, signed, payload_hash))
        sts = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()))
        expected = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, sig):
            return None
    return (
        403,
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. Check your AWS "
        "Secret Access Key and signing method. Consult the service documentation for details.",
    )


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign_request(
    method: str,
    host: str,
    model: str,
    op: str,
    body: bytes,
    access_key: str,
    secret: str,
    region: str = "us-east-1",
    amz_date: str = "20250101T000000Z",
    query: str = "",
) -> dict[str, str]:
    """A minimal SigV4 signer (for tests and examples): returns the headers to send."""
    date = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    hdrs = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    signed = ";".join(sorted(hdrs))
    canon_headers = "".join(f"{k}:{hdrs[k]}\n" for k in sorted(hdrs))
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canon_query = "&".join(f"{k}={v}" for k, v in pairs)
    uri = quote("/model/" + quote(model, safe="-_.~") + "/" + op, safe="/~")
    creq = "\n".join((method, uri, canon_query, canon_headers, signed, payload_hash))
    scope = f"{date}/{region}/bedrock/aws4_request"
    sts = "\n".join(("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()))
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, "bedrock")
    k = _hmac(k, "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={sig}",
    }


__all__ = ["check_auth", "encode_message", "parse_converse", "sign_request"]
