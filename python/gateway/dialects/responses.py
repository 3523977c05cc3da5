"""The OpenAI Responses dialect: ``POST /v1/responses`` in and out, as pure translation.

A Responses request becomes the canonical ChatRequest (so every provider can answer it) plus the :class:`Call`
that remembers what the caller asked for, which the Response object echoes back. The answer (or the canonical
stream) becomes a Response object or the Responses event sequence.

Mapping (Responses → canonical):

- ``instructions`` → a leading ``system`` message (never stored with the conversation: a later turn's
  instructions replace it, as OpenAI does).
- ``input`` as a string → one ``user`` message; as items: messages (``user``/``assistant``/``system``/``developer``
  with ``input_text``/``input_image``/``output_text``/``refusal`` parts), ``function_call`` → the assistant
  message's ``tool_calls``, ``function_call_output`` → ``tool`` messages, ``reasoning`` → the next assistant
  message's ``reasoning`` (its ``encrypted_content`` is the provider's thinking signature, when there was one).
- function ``tools`` → canonical tools; ``tool_choice`` auto/none/required/function → the chat equivalents;
  ``text.format`` (json_schema strict, json_object) → ``response_format``; ``reasoning.effort`` →
  ``reasoning_effort``; ``max_output_tokens`` → ``max_completion_tokens``; ``metadata``, ``temperature``,
  ``top_p``, ``parallel_tool_calls``, ``user``/``safety_identifier`` as they are.
- built-in tools (web search, file search, code interpreter, computer use, MCP, image generation, shell …),
  ``background``, ``conversation``, ``prompt`` templates and input files: refused with ``unsupported_feature``
  (the gateway cannot run them), never dropped.

Usage rule: canonical ``input_tokens`` is the whole prompt, as in Responses' own usage, so the numbers go through
unchanged (``cached_tokens``, ``cache_write_tokens`` and ``reasoning_tokens`` as details).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import GatewayError, invalid_request, unsupported_feature
from gateway.types import ChatChunk, ChatRequest, ChatResponse, FunctionDef, Message, Tool, Usage

# Top-level request fields this dialect understands; anything else is refused, never dropped.
_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "metadata",
        "store",
        "previous_response_id",
        "truncation",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "service_tier",
        "include",
        "background",
        "top_logprobs",
    }
)
_REFUSED_FIELDS = {
    "conversation": "server-side conversations (`conversation`); use previous_response_id",
    "prompt": "stored prompt templates (`prompt`)",
    "max_tool_calls": "`max_tool_calls` (the gateway runs no tools itself)",
    "context_management": "`context_management`",
}
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


class Call:
    """One Responses request: the canonical request sent on, and what the Response object echoes back."""

    __slots__ = (
        "created_at",
        "data",
        "history",
        "include",
        "input_items",
        "input_messages",
        "previous_response_id",
        "req",
        "response_id",
        "store",
    )

    def __init__(self, data: dict[str, Any], req: ChatRequest, input_messages: list[Message]) -> None:
        self.data = data  # the caller's request as parsed (echo fields read from it)
        self.req = req
        self.input_messages = input_messages  # this turn's input, caller's form, without instructions
        self.input_items: list[dict[str, Any]] = normalized_items(data.get("input"))
        self.history: list[Message] = []  # earlier turns, loaded by the conversation store
        self.store = data.get("store") is not False
        self.previous_response_id: str | None = data.get("previous_response_id")
        self.include = set(data.get("include") or ())
        self.response_id = ""
        self.created_at = int(time.time())


# ---------------------------------------------------------------- request: Responses → canonical


def parse(body: bytes) -> Call:
    from gateway.dialects.openai import load_json_object

    return call_from_responses(load_json_object(body))


def call_from_responses(data: dict[str, Any]) -> Call:
    """A Responses request as a canonical ChatRequest (without earlier turns; see :func:`with_history`)."""
    for key in data:
        if key in _REFUSED_FIELDS:
            if data[key] is not None:
                raise unsupported_feature(_REFUSED_FIELDS[key])
        elif key not in _KNOWN:
            raise unsupported_feature(f"the request field `{key}`")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("Missing required parameter: 'model'.", "model")
    if data.get("background"):
        raise unsupported_feature("background responses (`background: true`)")
    if data.get("top_logprobs"):
        raise unsupported_feature("`top_logprobs`")
    prev = data.get("previous_response_id")
    if prev is not None and (not isinstance(prev, str) or not prev):
        raise invalid_request(
            "previous_response_id: Input should be a response id string", "previous_response_id"
        )
    truncation = data.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        raise invalid_request("truncation: Input should be 'auto' or 'disabled'", "truncation")
    include = data.get("include")
    if include is not None and (
        not isinstance(include, list) or not all(isinstance(i, str) for i in include)
    ):
        raise invalid_request("include: Input should be a list of strings", "include")

    raw_input = data.get("input")
    if raw_input is None and prev is None:
        raise invalid_request("Missing required parameter: 'input'.", "input")
    input_messages = _input_messages(raw_input)
    messages: list[Message] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if isinstance(instructions, str):
            if instructions:
                messages.append(Message(role="system", content=instructions))
        elif isinstance(instructions, list):
            messages.extend(_input_messages(instructions, "instructions"))
        else:
            raise invalid_request("instructions: Input should be a string", "instructions")
    messages.extend(input_messages)
    if not messages and prev is None:
        raise invalid_request("input: Input should not be empty", "input")

    max_out = data.get("max_output_tokens")
    if max_out is not None and (not isinstance(max_out, int) or isinstance(max_out, bool) or max_out < 1):
        raise invalid_request(
            "max_output_tokens: Input should be an integer greater than or equal to 1", "max_output_tokens"
        )
    temperature = _number(data, "temperature", 0, 2)
    top_p = _number(data, "top_p", 0, 1)
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_request("metadata: Input should be an object", "metadata")
    ptc = data.get("parallel_tool_calls")
    if ptc is not None and not isinstance(ptc, bool):
        raise invalid_request("parallel_tool_calls: Input should be a boolean", "parallel_tool_calls")
    user = data.get("safety_identifier") or data.get("user")

    # Responses-only fields, for an upstream spoken to through its own Responses API (providers/openai_responses)
    extra: dict[str, Any] = {
        "responses": {k: data[k] for k in ("include", "truncation", "reasoning") if k in data}
    }
    for key in ("prompt_cache_key", "service_tier"):
        if data.get(key) is not None:
            extra[key] = data[key]
    req = ChatRequest(
        model=model,
        messages=messages or [Message(role="user", content="")],
        stream=bool(data.get("stream")),
        max_completion_tokens=max_out,
        temperature=temperature,
        top_p=top_p,
        user=user if isinstance(user, str) else None,
        parallel_tool_calls=ptc,
        metadata=metadata or None,
        extra=extra,
    )
    _tools(data, req)
    _text(data.get("text"), req)
    _reasoning(data.get("reasoning"), req)
    return Call(data, req, input_messages)


def with_history(call: Call, history: list[Message]) -> None:
    """Put earlier turns of a conversation between the instructions and this turn's input."""
    if not history:
        return
    call.history = history
    req = call.req
    n_system = len(req.messages) - len(call.input_messages) if call.input_messages else len(req.messages)
    if (
        not call.input_messages
        and req.messages
        and req.messages[-1].role == "user"
        and req.messages[-1].content == ""
    ):
        req.messages = req.messages[:-1]  # the placeholder for an empty turn
        n_system = len(req.messages)
    req.messages = req.messages[:n_system] + history + req.messages[n_system:]


def _number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= v <= hi:
        raise invalid_request(f"{key}: Input should be a number between {lo} and {hi}", key)
    return float(v)


def _input_messages(raw: Any, where: str = "input") -> list[Message]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [Message(role="user", content=raw)]
    if not isinstance(raw, list):
        raise invalid_request(f"{where}: Input should be a string or a list of input items", where)
    out: list[Message] = []
    pending_reasoning: tuple[str, dict[str, Any]] | None = None
    for i, item in enumerate(raw):
        at = f"{where}.{i}"
        if not isinstance(item, dict):
            raise invalid_request(f"{at}: Input should be an input item object", at)
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            msg = _message(item, at)
            if msg.role == "assistant" and pending_reasoning is not None:
                msg.reasoning, msg.extra = pending_reasoning[0], pending_reasoning[1] or None
                pending_reasoning = None
            # consecutive assistant output (text then tool calls) is one chat message
            if msg.role == "assistant" and out and out[-1].role == "assistant" and out[-1].content is None:
                out[-1].content = msg.content
            else:
                out.append(msg)
        elif kind == "function_call":
            call = _function_call(item, at)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and pending_reasoning is None:
                last.tool_calls = [*(last.tool_calls or ()), call]
            else:
                msg = Message(role="assistant", tool_calls=[call])
                if pending_reasoning is not None:
                    msg.reasoning, msg.extra = pending_reasoning[0], pending_reasoning[1] or None
                    pending_reasoning = None
                out.append(msg)
        elif kind == "function_call_output":
            out.append(_function_output(item, at))
        elif kind == "reasoning":
            texts = [p.get("text") or "" for p in (item.get("content") or item.get("summary") or ())]
            extra: dict[str, Any] = {}
            if isinstance(item.get("encrypted_content"), str) and item["encrypted_content"]:
                extra["reasoning_signature"] = item["encrypted_content"]
            pending_reasoning = ("".join(t for t in texts if isinstance(t, str)), extra)
        elif kind == "item_reference":
            raise unsupported_feature(
                "item references (`item_reference`); send the item itself or use previous_response_id"
            )
        elif kind is None:
            raise invalid_request(f"{at}: Input should be an input item with a type", at)
        else:
            raise unsupported_feature(
                f"`{kind}` input items (built-in tools run only on OpenAI's own servers)"
            )
    return out


def _message(item: dict[str, Any], at: str) -> Message:
    role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise invalid_request(
            f"{at}.role: Input should be 'user', 'assistant', 'system' or 'developer'", f"{at}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return Message(role=role, content=content)
    if not isinstance(content, list):
        raise invalid_request(
            f"{at}.content: Input should be a string or a list of content parts", f"{at}.content"
        )
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        where = f"{at}.content.{j}"
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(p.get("text"), str):
            parts.append({"type": "text", "text": p["text"]})
        elif kind == "refusal" and isinstance(p.get("refusal"), str):
            parts.append({"type": "text", "text": p["refusal"]})
        elif kind == "input_image":
            url = p.get("image_url")
            if not isinstance(url, str) or not url:
                if p.get("file_id"):
                    raise unsupported_feature(
                        "images given by `file_id` (send image_url, a URL or a data URL)"
                    )
                raise invalid_request(f"{where}.image_url: Field required", f"{where}.image_url")
            image: dict[str, Any] = {"url": url}
            if p.get("detail") in ("low", "high", "auto"):
                image["detail"] = p["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind is None:
            raise invalid_request(f"{where}: Input should be a content part with a type", where)
        else:
            raise unsupported_feature(f"`{kind}` content parts")
    if all(p["type"] == "text" for p in parts):
        return Message(role=role, content="".join(p["text"] for p in parts))
    return Message(role=role, content=parts)


def _function_call(item: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_request(f"{at}.call_id: Field required", f"{at}.call_id")
    if not isinstance(name, str) or not name:
        raise invalid_request(f"{at}.name: Field required", f"{at}.name")
    args = item.get("arguments")
    if not isinstance(args, str):
        args = orjson.dumps(args or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _function_output(item: dict[str, Any], at: str) -> Message:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_request(f"{at}.call_id: Field required", f"{at}.call_id")
    output = item.get("output")
    content: str | list[dict[str, Any]]
    if isinstance(output, str):
        content = output
    elif isinstance(output, list):
        content = _message({"role": "user", "content": output}, at).content or ""
    else:
        raise invalid_request(
            f"{at}.output: Input should be a string or a list of content parts", f"{at}.output"
        )
    return Message(role="tool", tool_call_id=call_id, content=content)


def _tools(data: dict[str, Any], req: ChatRequest) -> None:
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("tools: Input should be a list", "tools")
        out = []
        for j, t in enumerate(tools):
            kind = t.get("type") if isinstance(t, dict) else None
            if kind != "function":
                raise unsupported_feature(
                    f"the built-in tool `{kind}` (only function tools; the gateway cannot run OpenAI's hosted tools)"
                )
            if not isinstance(t.get("name"), str) or not t["name"]:
                raise invalid_request(f"tools.{j}.name: Field required", f"tools.{j}.name")
            params = t.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise invalid_request(
                    f"tools.{j}.parameters: Input should be an object", f"tools.{j}.parameters"
                )
            out.append(
                Tool(
                    function=FunctionDef(
                        name=t["name"],
                        description=t.get("description"),
                        parameters=params,
                        strict=t.get("strict"),
                    )
                )
            )
        req.tools = out or None
    choice = data.get("tool_choice")
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        req.tool_choice = choice
    elif (
        isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str)
    ):
        req.tool_choice = {"type": "function", "function": {"name": choice["name"]}}
    elif isinstance(choice, dict) and isinstance(choice.get("type"), str):
        raise unsupported_feature(f"tool_choice `{choice['type']}`")
    else:
        raise invalid_request(
            "tool_choice: Input should be auto, none, required or a function", "tool_choice"
        )


def _text(text: Any, req: ChatRequest) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise invalid_request("text: Input should be an object", "text")
    if text.get("verbosity") is not None:
        req.extra["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        req.response_format = {"type": "json_object"}
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise invalid_request("text.format.schema: Field required", "text.format.schema")
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise invalid_request("text.format.name: Field required", "text.format.name")
        js: dict[str, Any] = {"name": fmt["name"], "schema": schema}
        if fmt.get("strict") is not None:
            js["strict"] = bool(fmt["strict"])
        if fmt.get("description"):
            js["description"] = fmt["description"]
        req.response_format = {"type": "json_schema", "json_schema": js}
    else:
        raise invalid_request(
            "text.format.type: Input should be 'text', 'json_schema' or 'json_object'", "text.format"
        )


def _reasoning(reasoning: Any, req: ChatRequest) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise invalid_request("reasoning: Input should be an object", "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        if effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
            raise invalid_request(
                "reasoning.effort: Input should be none, minimal, low, medium, high or xhigh", "reasoning"
            )
        req.extra["reasoning_effort"] = effort


def normalized_items(raw: Any) -> list[dict[str, Any]]:
    """This turn's input as the items ``GET /v1/responses/{id}/input_items`` lists (each with an id)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        kind = item.get("type") or "message"
        it = dict(item)
        it["type"] = kind
        if kind == "message":
            c = it.get("content")
            if isinstance(c, str):
                it["content"] = [{"type": "input_text", "text": c}]
            it.setdefault("status", "completed")
            it.setdefault("id", f"msg_in{i}")
        elif kind == "function_call_output":
            it.setdefault("id", f"fco_{it.get('call_id', i)}")
            it.setdefault("status", "completed")
        elif kind == "function_call":
            it.setdefault("id", f"fc_{it.get('call_id', i)}")
            it.setdefault("status", "completed")
        else:
            it.setdefault("id", f"item_{i}")
        out.append(it)
    return out


# ---------------------------------------------------------------- response: canonical → Responses


def usage_dict(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_creation_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _tools_echo(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": t["name"],
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict"),
        }
        for t in data.get("tools") or ()
    ]


def _text_echo(data: dict[str, Any]) -> dict[str, Any]:
    text = data.get("text") or {}
    fmt = text.get("format") or {"type": "text"}
    out: dict[str, Any] = {"format": fmt}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out


def envelope(call: Call, status: str, model: str) -> dict[str, Any]:
    """The Response object's fields that echo the request (everything but output, usage and the outcome)."""
    d = call.data
    reasoning = d.get("reasoning") or {}
    out = {
        "id": call.response_id,
        "object": "response",
        "created_at": call.created_at,
        "status": status,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": d.get("instructions"),
        "max_output_tokens": d.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": d.get("parallel_tool_calls") is not False,
        "previous_response_id": call.previous_response_id,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": call.store,
        "temperature": d.get("temperature", 1.0),
        "text": _text_echo(d),
        "tool_choice": d.get("tool_choice", "auto"),
        "tools": _tools_echo(d),
        "top_p": d.get("top_p", 1.0),
        "truncation": d.get("truncation") or "disabled",
        "metadata": d.get("metadata") or {},
    }
    if isinstance(d.get("user"), str):
        out["user"] = d["user"]
    if isinstance(d.get("safety_identifier"), str):
        out["safety_identifier"] = d["safety_identifier"]
    return out


def _wants_summary(call: Call) -> bool:
    r = call.data.get("reasoning")
    return isinstance(r, dict) and bool(r.get("summary") or r.get("generate_summary"))


def reasoning_item(call: Call, text: str, signature: str | None, status: str = "completed") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{call.response_id[5:]}", "summary": []}
    if _wants_summary(call):
        item["summary"] = [{"type": "summary_text", "text": text}]
    else:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    if signature and "reasoning.encrypted_content" in call.include:
        item["encrypted_content"] = signature
    item["status"] = status
    return item


def message_item(call: Call, text: str, status: str = "completed") -> dict[str, Any]:
    return message_item_with(f"msg_{call.response_id[5:]}", text, status)


def message_item_with(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _outcome(out: dict[str, Any], finish: str | None) -> None:
    if finish == "length":
        out["status"] = "incomplete"
        out["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        out["status"] = "incomplete"
        out["incomplete_details"] = {"reason": "content_filter"}
    else:
        out["status"] = "completed"
        out["completed_at"] = int(time.time())


def response_dict(call: Call, resp: ChatResponse) -> dict[str, Any]:
    choice = resp.choices[0] if resp.choices else None
    m = choice.message if choice else Message(role="assistant")
    out = envelope(call, "completed", resp.model)
    items: list[dict[str, Any]] = []
    if m.reasoning:
        items.append(reasoning_item(call, m.reasoning, (m.extra or {}).get("reasoning_signature")))
    text = m.content if isinstance(m.content, str) else _joined(m.content)
    if text or (text is not None and not m.tool_calls) or (not m.tool_calls and not items):
        items.append(message_item(call, text or ""))
    for tc in m.tool_calls or ():
        fn = tc.get("function") or {}
        items.append(function_item(tc.get("id") or "", fn.get("name") or "", fn.get("arguments") or ""))
    out["output"] = items
    _outcome(out, choice.finish_reason if choice else None)
    out["usage"] = usage_dict(resp.usage)
    return out


def _joined(parts: list[dict[str, Any]] | None) -> str | None:
    if parts is None:
        return None
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def output_message(resp_obj: dict[str, Any]) -> Message:
    """A Response object's output as the canonical assistant message a later turn continues from."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: str | None = None
    extra: dict[str, Any] = {}
    for item in resp_obj.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            texts.extend(
                p.get("text", "") for p in item.get("content") or () if p.get("type") == "output_text"
            )
        elif kind == "function_call":
            calls.append(_function_call(item, "output"))
        elif kind == "reasoning":
            reasoning = "".join(p.get("text", "") for p in (item.get("content") or item.get("summary") or ()))
    return Message(
        role="assistant",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        reasoning=reasoning,
        extra=extra or None,
    )


def render_response(call: Call, resp: ChatResponse) -> bytes:
    return orjson.dumps(response_dict(call, resp))


# ---------------------------------------------------------------- errors

# Our codes → ResponseErrorCode (the only codes a Response object's ``error`` may carry).
_FAILED_CODES = {"rate_limited": "rate_limit_exceeded", "upstream_rate_limited": "rate_limit_exceeded"}


def error_body(err: GatewayError) -> bytes:
    from gateway.dialects.openai import error_body as openai_error_body

    return openai_error_body(err)


# ---------------------------------------------------------------- streams


class ResponsesStream:
    """Canonical chunks → the Responses event sequence.

    ``response.created`` and ``response.in_progress`` first; then per output item (reasoning, the message, each
    function call) ``output_item.added``, its deltas, its ``…done`` events and ``output_item.done``, items opened
    lazily as deltas arrive; finally ``response.completed`` (or ``response.incomplete`` when the output was cut)
    carrying the whole Response with its usage. An error after the first byte ends it with ``response.failed``.
    """

    counts_prompt = False  # the prompt's tokens are reported with the final usage only

    def __init__(self, call: Call) -> None:
        self.call = call
        self.seq = 0
        self.started = False
        self.model = call.req.model
        self.items: list[dict[str, Any]] = []  # output items in order, completed at the end
        self.open_kind = ""  # "reasoning" | "message" | "" (function calls are tracked in ``calls``)
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.signature: str | None = None
        self.calls: dict[int, tuple[int, list[str]]] = {}  # canonical tool index -> (output index, arg parts)
        self.finish: str | None = None
        self.final: dict[str, Any] | None = None  # the completed Response object, for the conversation store
        self.r_index = self.m_index = -1

    def _ev(self, kind: str, obj: dict[str, Any]) -> bytes:
        obj["type"] = kind
        obj["sequence_number"] = self.seq
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"

    def _start(self, chunk: ChatChunk | None) -> bytes:
        self.started = True
        if chunk is not None and chunk.model:
            self.model = chunk.model
        env = envelope(self.call, "in_progress", self.model)
        return self._ev("response.created", {"response": env}) + self._ev(
            "response.in_progress", {"response": env}
        )

    def _close_open(self) -> bytes:
        kind, self.open_kind = self.open_kind, ""
        if kind == "message":
            return self._close_message()
        if kind == "reasoning":
            return self._close_reasoning()
        return b""

    def _open(self, kind: str, item: dict[str, Any]) -> tuple[bytes, int]:
        out = self._close_open() if kind in ("message", "reasoning") or self.open_kind else b""
        index = len(self.items)
        self.items.append(item)
        if kind in ("message", "reasoning"):
            self.open_kind = kind
        return out + self._ev("response.output_item.added", {"output_index": index, "item": item}), index

    def _item_done(self, index: int) -> bytes:
        return self._ev("response.output_item.done", {"output_index": index, "item": self.items[index]})

    # reasoning
    def _reasoning_delta(self, text: str) -> bytes:
        out = b""
        summary = _wants_summary(self.call)
        if self.open_kind != "reasoning":
            item: dict[str, Any] = {
                "type": "reasoning",
                "id": f"rs_{self.call.response_id[5:]}",
                "summary": [],
            }
            if not summary:
                item["content"] = []
            item["status"] = "in_progress"
            added, self.r_index = self._open("reasoning", item)
            out += added
            if summary:
                out += self._ev(
                    "response.reasoning_summary_part.added",
                    {
                        "item_id": item["id"],
                        "output_index": self.r_index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    },
                )
        self.reasoning.append(text)
        rid = self.items[self.r_index]["id"]
        if summary:
            return out + self._ev(
                "response.reasoning_summary_text.delta",
                {"item_id": rid, "output_index": self.r_index, "summary_index": 0, "delta": text},
            )
        return out + self._ev(
            "response.reasoning_text.delta",
            {"item_id": rid, "output_index": self.r_index, "content_index": 0, "delta": text},
        )

    def _close_reasoning(self) -> bytes:
        text = "".join(self.reasoning)
        item = reasoning_item(self.call, text, self.signature)
        self.items[self.r_index] = item
        rid, i = item["id"], self.r_index
        if _wants_summary(self.call):
            part = {"type": "summary_text", "text": text}
            out = self._ev(
                "response.reasoning_summary_text.done",
                {"item_id": rid, "output_index": i, "summary_index": 0, "text": text},
            ) + self._ev(
                "response.reasoning_summary_part.done",
                {"item_id": rid, "output_index": i, "summary_index": 0, "part": part},
            )
        else:
            out = self._ev(
                "response.reasoning_text.done",
                {"item_id": rid, "output_index": i, "content_index": 0, "text": text},
            )
        return out + self._item_done(i)

    # message text
    def _text_delta(self, text: str) -> bytes:
        out = b""
        if self.open_kind != "message":
            item = message_item(self.call, "", "in_progress")
            item["content"] = []
            added, self.m_index = self._open("message", item)
            out += added + self._ev(
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": self.m_index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                },
            )
        self.text.append(text)
        return out + self._ev(
            "response.output_text.delta",
            {
                "item_id": self.items[self.m_index]["id"],
                "output_index": self.m_index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _close_message(self) -> bytes:
        text = "".join(self.text)
        item = self.items[self.m_index] = message_item(self.call, text)
        i = self.m_index
        part = item["content"][0]
        return (
            self._ev(
                "response.output_text.done",
                {"item_id": item["id"], "output_index": i, "content_index": 0, "text": text, "logprobs": []},
            )
            + self._ev(
                "response.content_part.done",
                {"item_id": item["id"], "output_index": i, "content_index": 0, "part": part},
            )
            + self._item_done(i)
        )

    # function calls
    def _tool(self, tc: dict[str, Any]) -> bytes:
        out = b""
        i = tc.get("index", 0)
        fn = tc.get("function") or {}
        known = self.calls.get(i)
        if known is None:
            call_id = tc.get("id") or f"call_{self.call.response_id[5:]}_{i}"
            item = function_item(call_id, fn.get("name") or "", "", "in_progress")
            added, index = self._open("function_call", item)
            out += added
            known = self.calls[i] = (index, [])
        args = fn.get("arguments")
        if args:
            known[1].append(args)
            out += self._ev(
                "response.function_call_arguments.delta",
                {"item_id": self.items[known[0]]["id"], "output_index": known[0], "delta": args},
            )
        return out

    def _close_calls(self) -> bytes:
        out = b""
        for index, parts in self.calls.values():
            item = self.items[index]
            args = "".join(parts)
            item = self.items[index] = function_item(item["call_id"], item["name"], args)
            out += self._ev(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "name": item["name"], "output_index": index, "arguments": args},
            )
            out += self._item_done(index)
        self.calls = {}
        return out

    def chunk(self, c: ChatChunk) -> bytes | None:
        out = b"" if self.started else self._start(c)
        for d in c.choices:
            if d.index != 0:
                continue
            if d.reasoning:
                out += self._reasoning_delta(d.reasoning)
            if d.extra and d.extra.get("reasoning_signature"):
                self.signature = d.extra["reasoning_signature"]
            if d.content:
                out += self._text_delta(d.content)
            for tc in d.tool_calls or ():
                out += self._tool(tc)
            if d.finish_reason is not None:
                self.finish = d.finish_reason
        return out or None

    def end(self, usage: Usage, last: ChatChunk | None) -> bytes:
        out = b"" if self.started else self._start(last)
        if not self.items:
            out += self._text_delta("")
        out += self._close_open() + self._close_calls()
        final = envelope(self.call, "completed", self.model)
        final["output"] = self.items
        _outcome(final, self.finish)
        final["usage"] = usage_dict(usage)
        self.final = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._ev(kind, {"response": final})

    def error(self, err: GatewayError) -> bytes:
        out = b"" if self.started else self._start(None)
        failed = envelope(self.call, "failed", self.model)
        failed["output"] = self.items
        failed["error"] = {"code": _FAILED_CODES.get(err.code, "server_error"), "message": err.message}
        return out + self._ev("response.failed", {"response": failed})


class ResponsesDialect:
    """The per-request dialect object the request handler drives (it holds the parsed :class:`Call`)."""

    name = "responses"
    stream_content_type = "text/event-stream"
    error_body = staticmethod(error_body)

    def __init__(self) -> None:
        self.call: Call | None = None
        self.renderer: ResponsesStream | None = None

    def parse_chat(self, body: bytes) -> ChatRequest:
        self.call = parse(body)
        return self.call.req

    def render_response(self, resp: ChatResponse) -> bytes:
        assert self.call is not None
        return render_response(self.call, resp)

    def stream(self, req: ChatRequest) -> ResponsesStream:
        assert self.call is not None
        self.renderer = ResponsesStream(self.call)
        return self.renderer
