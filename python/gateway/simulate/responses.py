"""OpenAI's Responses API (``POST /v1/responses``): a Response object, or its event stream.

The request is read as the equivalent chat request (input items → messages, function tools, ``text.format``,
``max_output_tokens``), so the same directives, outputs and token counts apply as on chat completions. The
simulator keeps no responses: ``previous_response_id`` and ``store: true`` are refused, as an upstream used
without server-side state would (the gateway keeps conversations itself and sends the whole input).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from . import openai as oa
from .engine import Req, RequestError, Result, tool_arg_pieces
from .profiles import ModelProfile

_ROLE = {"developer": "system"}


def _text(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content
    parts = []
    for p in content if isinstance(content, list) else ():
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": p.get("text") or ""})
        elif kind == "refusal":
            parts.append({"type": "text", "text": p.get("refusal") or ""})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": p.get("image_url") or ""}})
    return parts


def as_chat(data: Any) -> dict[str, Any]:
    """A Responses request as the chat request it is equivalent to."""
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")
    if data.get("previous_response_id"):
        raise RequestError(
            f"Previous response with id '{data['previous_response_id']}' not found.",
            param="previous_response_id",
        )
    if data.get("store"):
        raise RequestError("This upstream keeps no responses: send store: false.", param="store")
    messages: list[dict[str, Any]] = []
    if isinstance(data.get("instructions"), str) and data["instructions"]:
        messages.append({"role": "system", "content": data["instructions"]})
    raw = data.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise RequestError("Missing required parameter: 'input'.", param="input")
    for item in items:
        if not isinstance(item, dict):
            raise RequestError("Invalid 'input': expected input items.", param="input")
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            messages.append({"role": _ROLE.get(role, role), "content": _text(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("content") is None:
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(out)})
        elif kind != "reasoning":
            raise RequestError(f"Invalid input item type '{kind}'.", param="input")
    chat: dict[str, Any] = {"model": data.get("model"), "messages": messages}
    tools = data.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {"name": t.get("name"), "parameters": t.get("parameters") or {}},
            }
            for t in tools
            if isinstance(t, dict) and t.get("type") == "function"
        ]
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        chat["tool_choice"] = choice
    fmt = ((data.get("text") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt.get("schema") or {}}}
    elif fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if data.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = data["max_output_tokens"]
    return chat


def parse(data: Any) -> Req:
    req = oa.parse_chat(as_chat(data))
    req.stream = bool(data.get("stream"))
    req.include_usage = True  # a Response always carries its usage
    return req


def _usage(res: Result) -> dict[str, Any]:
    return {
        "input_tokens": res.prompt_tokens,
        "input_tokens_details": {"cached_tokens": res.cached_tokens},
        "output_tokens": res.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": res.reasoning_tokens},
        "total_tokens": res.prompt_tokens + res.completion_tokens,
    }


def _output(res: Result, rid: str) -> list[dict[str, Any]]:
    ch = res.choices[0]
    if ch.tool_calls:
        return [
            {
                "type": "function_call",
                "id": f"fc_{rid}_{k}",
                "call_id": "call_" + cid,
                "name": name,
                "arguments": args,
                "status": "completed",
            }
            for k, (cid, name, args) in enumerate(ch.tool_calls)
        ]
    return [_message(f"msg_{rid}", ch.text)]


def _message(mid: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": mid,
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def response_obj(
    req: Req, res: Result, rid: str, usage: bool, output: list[dict[str, Any]]
) -> dict[str, Any]:
    length = res.choices[0].finish == "length"
    return {
        "id": "resp_" + rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if length else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if length else None,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": _usage(res) if usage else None,
    }


def render(req: Req, res: Result, prof: ModelProfile, usage: bool = True) -> bytes:
    rid = oa.new_id("")
    return orjson.dumps(response_obj(req, res, rid, usage, _output(res, rid)))


def _ev(seq: list[int], obj: dict[str, Any]) -> bytes:
    obj["sequence_number"] = seq[0]
    seq[0] += 1
    return b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def stream(req: Req, res: Result, prof: ModelProfile, usage: bool) -> list[tuple[bytes, int]]:
    """The event sequence as ``(bytes, tokens)`` (tokens > 0: paced by tokens_per_s)."""
    rid = oa.new_id("")
    seq = [0]
    out: list[tuple[bytes, int]] = []
    shell = response_obj(req, res, rid, False, [])
    shell["status"], shell["incomplete_details"] = "in_progress", None
    out.append((_ev(seq, {"type": "response.created", "response": shell}), 0))
    out.append((_ev(seq, {"type": "response.in_progress", "response": shell}), 0))
    ch = res.choices[0]
    for k, item in enumerate(_output(res, rid)):
        if item["type"] == "function_call":
            added = {**item, "arguments": "", "status": "in_progress"}
            out.append(
                (_ev(seq, {"type": "response.output_item.added", "output_index": k, "item": added}), 0)
            )
            for frag in tool_arg_pieces(item["arguments"]):
                delta = {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": k,
                    "delta": frag,
                }
                out.append((_ev(seq, delta), 1))
            done = {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": k,
                "arguments": item["arguments"],
            }
            out.append((_ev(seq, done), 0))
        else:
            added = {**item, "status": "in_progress", "content": []}
            out.append(
                (_ev(seq, {"type": "response.output_item.added", "output_index": k, "item": added}), 0)
            )
            where = {"item_id": item["id"], "output_index": k, "content_index": 0}
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append((_ev(seq, {"type": "response.content_part.added", **where, "part": part}), 0))
            for piece in ch.pieces:
                delta = {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
                out.append((_ev(seq, delta), 1))
            text = {"type": "response.output_text.done", **where, "text": ch.text, "logprobs": []}
            out.append((_ev(seq, text), 0))
            part = {**part, "text": ch.text}
            out.append((_ev(seq, {"type": "response.content_part.done", **where, "part": part}), 0))
        out.append((_ev(seq, {"type": "response.output_item.done", "output_index": k, "item": item}), 0))
    final = response_obj(req, res, rid, usage, _output(res, rid))
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    out.append((_ev(seq, {"type": kind, "response": final}), 0))
    return out


def malformed_chunk() -> bytes:
    return b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"\n\n'
