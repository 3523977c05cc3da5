"""The canonical model every stage, router and provider speaks.

Dialects translate the caller's format into these types at the edge and providers translate them into the
upstream's wire format at the other edge. The shapes follow OpenAI's chat model (the lingua franca most
providers and SDKs already map onto) but are neutral in what they carry: usage is always in input/output terms,
and anything the gateway does not model travels in ``extra`` untouched.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# ---------------------------------------------------------------- requests


class FunctionDef(msgspec.Struct, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    # Anthropic's prompt-cache marker on a tool definition; only the Anthropic adapter sends it on.
    cache_control: dict[str, Any] | None = None


class Tool(msgspec.Struct):
    # No omit_defaults: msgspec omits a str default by identity, so a Tool built in code would lose its
    # ``type`` on the wire (OpenAI requires it) while one decoded from JSON keeps it.
    function: FunctionDef
    type: str = "function"


class Message(msgspec.Struct, omit_defaults=True):
    """One chat message. ``content`` is a string or a list of typed parts (text, image_url, …)."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    # Anthropic thinking blocks and other provider-specific message data a translator may carry across.
    reasoning: str | None = None
    # Provider data with no neutral field that must survive a round trip (``reasoning_signature``,
    # ``redacted_thinking``, ``is_error`` on a tool result); adapters ignore keys they don't know.
    extra: dict[str, Any] | None = None


Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class ChatRequest(msgspec.Struct, omit_defaults=True):
    """A chat completion request; the fields stages read are typed, the rest is in ``extra``."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    extra: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.response_format is not None:
            check_response_format(self.response_format)

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


def check_response_format(rf: dict[str, Any]) -> None:
    """``response_format``'s shape, so every stage and adapter can read it without guarding each field."""
    kind = rf.get("type")
    if not isinstance(kind, str):
        raise ValueError("response_format.type: expected a string (text, json_object or json_schema)")
    if kind != "json_schema":
        return
    js = rf.get("json_schema")
    if not isinstance(js, dict):
        raise ValueError("response_format.json_schema: expected an object with a `schema`")
    if not isinstance(js.get("schema", {}), dict):
        raise ValueError("response_format.json_schema.schema: expected an object")
    if not isinstance(js.get("name", ""), str):
        raise ValueError("response_format.json_schema.name: expected a string")


class EmbeddingRequest(msgspec.Struct, omit_defaults=True):
    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: str | list[Any]  # strings, or token arrays
    encoding_format: str | None = None
    dimensions: PositiveInt | None = None
    user: str | None = None
    extra: dict[str, Any] = {}


# ---------------------------------------------------------------- responses


class Usage(msgspec.Struct):
    """Token usage in provider-neutral terms. ``input_tokens`` is the whole prompt: ``cached_tokens`` (cache reads)
    and ``cache_creation_tokens`` (cache writes) are subsets of it, ``reasoning_tokens`` a subset of output."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    # True when the gateway counted the tokens itself because the upstream sent none.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def plus(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.estimated or other.estimated,
        )


class Choice(msgspec.Struct, omit_defaults=True):
    index: int
    message: Message
    finish_reason: str | None = None
    stop_sequence: str | None = None  # which stop sequence ended the answer, when the upstream says so


class ChatResponse(msgspec.Struct):
    id: str
    model: str
    choices: list[Choice]
    usage: Usage
    created: int = 0
    system_fingerprint: str | None = None
    # The upstream's body when it is already in OpenAI shape; the OpenAI dialect relays it byte for byte
    # unless a post stage changed the response (then ``raw`` is dropped and the body is re-rendered).
    raw: bytes | None = None


class Delta(msgspec.Struct, omit_defaults=True):
    """One choice's increment in a stream chunk."""

    index: int = 0
    role: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    reasoning: str | None = None
    stop_sequence: str | None = None
    extra: dict[str, Any] | None = None  # as Message.extra (e.g. a thinking block's signature)


class ChatChunk(msgspec.Struct):
    id: str
    model: str
    choices: list[Delta]
    usage: Usage | None = None  # the stream's final usage (on its last chunk)
    created: int = 0
    raw: bytes | None = None
    # The prompt's usage as known when the stream starts (an upstream that reports it up front, like Anthropic's
    # message_start, or the gateway's own count); only formats that announce it early read it.
    prompt: Usage | None = None


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str


class EmbeddingResponse(msgspec.Struct):
    model: str
    data: list[Embedding]
    usage: Usage
    raw: bytes | None = None


# ---------------------------------------------------------------- callers


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: resolved from a gateway key by the auth stage."""

    key_id: str
    tenant: str
    team: str | None = None
    name: str | None = None
    models: tuple[str, ...] = ()  # empty = every model
    residency: tuple[str, ...] = ()  # empty = any region
    profile: str | None = None  # stage profile (PII policy etc.)
    pins: tuple[tuple[str, str], ...] = ()  # (model group, exact upstream model) from the key or its team

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models
