"""Provider simulator: a real HTTP server (Granian RSGI) speaking the OpenAI (chat completions, Responses without
stored state, embeddings), Azure OpenAI, Anthropic, Gemini and Bedrock Converse wire formats with deterministic
output and configurable latency/faults per model.

Behaviour comes from a profile file (``--profile FILE``, YAML/JSON; see ``profiles.py`` and
``examples/simulator.yaml``): top-level ``seed``, ``auth``, ``api_keys``, ``bedrock.{verify_secret_key,
access_key_id}``, a ``default`` entry and ``models: {name-or-glob: {...}}`` entries with ``ttft_ms``/
``ttft_jitter_ms``, ``tokens_per_s`` (0 = unpaced), ``latency_ms``/``latency_jitter_ms`` (non-stream; default
ttft + tokens/tps), ``jitter_dist``, ``output_tokens``, ``echo``, ``cached_tokens``/``cache_ratio``,
``reasoning_tokens``, ``embedding_dim``, ``context_window``, ``quality: {category: score}`` (sent back as
``x-sim-quality``) and fault probabilities ``rate_429`` (+``retry_after_s``), ``rate_500``, ``rate_503``, any
``rate_<status>``, ``rate_timeout`` (hang ``timeout_s`` then close), ``rate_drop`` (close after
``drop_after_chunks``), ``rate_malformed`` (200 with a broken body / SSE line), drawn from a seeded RNG.
Per-request overrides come from ``x-sim-*`` headers (``x-sim-fail: 429|500|503|529|400|401|404|timeout|drop|
stall|malformed|content_filter``, ``x-sim-retry-after``, ``x-sim-fail-after-chunks``, ``x-sim-fail-times``,
``x-sim-latency-ms``, ``x-sim-ttft-ms``, ``x-sim-tps``, ``x-sim-output``, ``x-sim-json``,
``x-sim-output-tokens``, ``x-sim-echo: 1``, ``x-sim-tool``, ``x-sim-usage: 0``) or, since a gateway may not
forward headers, from directives in the LAST user message: ``[[sim:fail=429]]``, ``[[sim:fail_times=1]]`` (fail
only the first N identical requests, for retry tests), ``[[sim:retry_after=1]]``, ``[[sim:drop_after=3]]``,
``[[sim:latency_ms=200]]``, ``[[sim:ttft_ms=50]]``, ``[[sim:tps=20]]``, ``[[sim:output=exact text]]``,
``[[sim:json={...}]]``, ``[[sim:output_tokens=50]]``, ``[[sim:echo]]`` (or a message starting with ``#echo``:
reply = all received message texts joined by newlines), ``[[sim:tool]]``/``[[sim:tool=name]]``,
``[[sim:no_usage]]`` (OpenAI/Gemini/Bedrock streams; Anthropic always reports usage), ``[[sim:echo_key]]``
(with a ``fail`` status: the error message quotes the credential the request carried, as a careless upstream
would), ``[[sim:cached_tokens=N]]``, ``[[sim:reasoning_tokens=N]]``; a directive can be scoped
to one model with ``[[sim:fail=429@model-or-glob]]`` or ``[[sim@model-or-glob:key=value]]``. Control
endpoints: ``GET /healthz``, ``GET /_sim/stats``, ``POST /_sim/reset``, ``GET /_sim/last?model=X``,
``GET /_sim/requests?model=X&limit=N``, ``GET|POST|DELETE /_sim/models/{model-or-glob}`` (POST merges a JSON
profile patch at run time), ``GET /_sim/models``. With ``--workers N>1`` runtime patches and resets are shared
through a state directory; stats/last are aggregated from per-worker snapshots (≤ ~0.3 s stale);
``fail_times`` counters and ``/_sim/requests`` stay per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import glob
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from . import anthropic as an
from . import bedrock as br
from . import gemini as gm
from . import openai as oa
from . import responses as rs
from .engine import (
    Req,
    RequestError,
    directive_float,
    directive_int,
    generate,
    header_directives,
    parse_directives,
    short_hash,
)
from .profiles import ModelProfile, ProfileError, Profiles, load_profile_file

ENV_PROFILE = "GATEWAY_SIM_PROFILE"
ENV_STATE_DIR = "GATEWAY_SIM_STATE_DIR"
ENV_SEED = "GATEWAY_SIM_SEED"

JSON_CT = ("content-type", "application/json")
SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
DEFAULT_MODELS = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5", "gemini-2.5-flash"]


def d_or_empty(d: dict[str, str] | None) -> dict[str, str]:
    return d if d is not None else {}


def credential(headers: Any) -> str:
    """The credential a request carried (OpenAI/Azure bearer or api-key, Anthropic x-api-key, Gemini key)."""
    bearer = headers.get("authorization") or ""
    if bearer.startswith("Bearer "):
        return bearer[7:]
    return headers.get("api-key") or headers.get("x-api-key") or headers.get("x-goog-api-key") or ""


_STATUS_KINDS = frozenset(
    {
        "400",
        "401",
        "402",
        "403",
        "404",
        "408",
        "409",
        "413",
        "422",
        "424",
        "429",
        "500",
        "502",
        "503",
        "504",
        "529",
    }
)
_U64 = struct.Struct("<Q")


class Fmt:
    """How one wire format renders results and errors."""

    __slots__ = ("ctx_msg", "error", "malformed_body", "malformed_chunk", "name", "ok_ct", "stream_headers")

    def __init__(self, name, error, malformed_body, malformed_chunk, ok_ct, stream_headers, ctx_msg):
        self.name = name
        self.error = error
        self.malformed_body = malformed_body
        self.malformed_chunk = malformed_chunk
        self.ok_ct = ok_ct
        self.stream_headers = stream_headers
        self.ctx_msg = ctx_msg


OPENAI = Fmt(
    "openai",
    oa.error,
    oa.malformed_body,
    oa.malformed_chunk,
    "application/json",
    SSE_HEADERS,
    "This model's maximum context length is {cw} tokens. However, your messages resulted in {n} tokens. "
    "Please reduce the length of the messages.",
)
ANTHROPIC = Fmt(
    "anthropic",
    an.error,
    an.malformed_body,
    an.malformed_chunk,
    "application/json",
    SSE_HEADERS,
    "prompt is too long: {n} tokens > {cw} maximum",
)
RESPONSES = Fmt(
    "responses",
    oa.error,
    oa.malformed_body,
    rs.malformed_chunk,
    "application/json",
    SSE_HEADERS,
    OPENAI.ctx_msg,
)
GEMINI = Fmt(
    "gemini",
    gm.error,
    gm.malformed_body,
    gm.malformed_chunk,
    "application/json; charset=UTF-8",
    SSE_HEADERS,
    "The input token count ({n}) exceeds the maximum number of tokens allowed ({cw}).",
)
GEMINI_ARRAY = Fmt(
    "gemini",
    gm.error,
    gm.malformed_body,
    gm.malformed_chunk,
    "application/json; charset=UTF-8",
    [("content-type", "application/json; charset=UTF-8")],
    GEMINI.ctx_msg,
)
BEDROCK = Fmt(
    "bedrock",
    br.error,
    br.malformed_body,
    br.malformed_chunk,
    "application/json",
    [("content-type", br.STREAM_CONTENT_TYPE)],
    "Input is too long for requested model.",
)


def _jitter(rng, mean: float, jit: float, dist: str) -> float:
    if not jit:
        return mean
    if dist == "normal":
        v = rng.gauss(mean, jit)
    elif dist == "exponential":
        v = mean + rng.expovariate(1.0 / jit)
    else:
        v = mean + rng.uniform(-jit, jit)
    return v if v > 0 else 0.0


class Shared:
    """Cross-worker state (only with --workers > 1): a generation counter in a shared mmap + a control
    file (runtime patches, reset epoch) + per-worker stats snapshots."""

    def __init__(self, directory: str):
        self.dir = directory
        fd = os.open(os.path.join(directory, "gen"), os.O_RDWR)
        self.mm = mmap.mmap(fd, 16)
        os.close(fd)
        self.pid = os.getpid()

    def gen(self) -> int:
        return _U64.unpack_from(self.mm, 0)[0]

    def read_control(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.dir, "control.json"), "rb") as f:
                return orjson.loads(f.read())
        except (OSError, ValueError):
            return {"patches": [], "epoch": 0}

    def update_control(self, fn) -> dict[str, Any]:
        with open(os.path.join(self.dir, "lock"), "a+") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                ctl = self.read_control()
                fn(ctl)
                tmp = os.path.join(self.dir, f"control.{self.pid}.tmp")
                with open(tmp, "wb") as f:
                    f.write(orjson.dumps(ctl))
                os.replace(tmp, os.path.join(self.dir, "control.json"))
                _U64.pack_into(self.mm, 0, self.gen() + 1)
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)
        return ctl

    def write_snapshot(self, snap: dict[str, Any]) -> None:
        tmp = os.path.join(self.dir, f"stats-{self.pid}.tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(snap))
        os.replace(tmp, os.path.join(self.dir, f"stats-{self.pid}.json"))

    def read_snapshots(self) -> list[dict[str, Any]]:
        out = []
        for p in glob.glob(os.path.join(self.dir, "stats-*.json")):
            try:
                with open(p, "rb") as f:
                    out.append(orjson.loads(f.read()))
            except (OSError, ValueError):
                pass
        return out


class SimApp:
    """The RSGI application (one instance per worker process)."""

    def __init__(self, profiles: Profiles, state_dir: str | None = None):
        self.profiles = profiles
        self.shared = Shared(state_dir) if state_dir else None
        self._seen_gen = 0
        self._epoch = 0
        self._dirty = False
        self._reset_local()
        self._exact = {
            "/v1/chat/completions": self._openai_chat,
            "/chat/completions": self._openai_chat,
            "/openai/v1/chat/completions": self._openai_chat,
            "/v1/responses": self._openai_responses,
            "/responses": self._openai_responses,
            "/openai/v1/responses": self._openai_responses,
            "/v1/embeddings": self._openai_embeddings,
            "/embeddings": self._openai_embeddings,
            "/openai/v1/embeddings": self._openai_embeddings,
            "/v1/models": self._models,
            "/models": self._models,
            "/openai/v1/models": self._models,
            "/v1beta/models": self._gemini_models,
            "/v1/messages": self._anthropic_messages,
            "/v1/messages/count_tokens": self._anthropic_count,
            "/healthz": self._health,
            "/health": self._health,
            "/_sim/stats": self._ctl_stats,
            "/_sim/reset": self._ctl_reset,
            "/_sim/last": self._ctl_last,
            "/_sim/requests": self._ctl_requests,
            "/_sim/models": self._ctl_models_list,
        }

    def _reset_local(self) -> None:
        self.c_status: dict[tuple[str, str], int] = {}
        self.c_fault: dict[tuple[str, str], int] = {}
        self.c_stream: dict[str, int] = {}
        self.c_endpoint: dict[str, int] = {}
        self.c_tokens: dict[str, list[int]] = {}
        self.last: dict[str, tuple] = {}
        self.recent: deque = deque(maxlen=200)
        self.fail_counts: dict[tuple, int] = {}
        self._dirty = True

    # ------------------------------------------------------------------------------------------ RSGI

    def __rsgi_init__(self, loop) -> None:
        if self.shared is not None:
            loop.create_task(self._flusher())

    def __rsgi_del__(self, loop) -> None:
        if self.shared is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.shared.dir, f"stats-{self.shared.pid}.json"))

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":
            return
        if self.shared is not None and self.shared.gen() != self._seen_gen:
            self._sync_shared()
        path = scope.path
        h = self._exact.get(path)
        if h is not None:
            return await h(scope, proto, None)
        if path.startswith("/openai/deployments/"):
            dep, _, op = path[20:].partition("/")
            if op == "chat/completions":
                return await self._openai_chat(scope, proto, dep)
            if op == "embeddings":
                return await self._openai_embeddings(scope, proto, dep)
        elif path.startswith("/model/"):
            rest = path[7:]
            model, _, op = rest.rpartition("/")
            if op in ("converse", "converse-stream") and model:
                return await self._bedrock(scope, proto, model, op)
        elif path.startswith("/_sim/models/"):
            return await self._ctl_model(scope, proto, unquote(path[13:]))
        else:
            i = path.rfind("/models/")
            if i >= 0:
                model, _, method = path[i + 8 :].rpartition(":")
                if model and method in ("generateContent", "streamGenerateContent", "countTokens"):
                    return await self._gemini(scope, proto, model, method)
        await proto()
        self._respond_json(
            proto,
            404,
            {
                "error": {
                    "message": f"Unknown path {scope.method} {path}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "unknown_url",
                }
            },
        )

    # ------------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _respond_json(proto, status: int, obj: Any, extra: list[tuple[str, str]] | None = None) -> None:
        headers = [JSON_CT]
        if extra:
            headers += extra
        proto.response_bytes(status, headers, orjson.dumps(obj))

    def _count(self, model: str, status: str, endpoint: str) -> None:
        k = (model, status)
        c = self.c_status
        c[k] = c.get(k, 0) + 1
        e = self.c_endpoint
        e[endpoint] = e.get(endpoint, 0) + 1
        self._dirty = True

    def _fault_count(self, model: str, kind: str) -> None:
        k = (model, kind)
        self.c_fault[k] = self.c_fault.get(k, 0) + 1

    def _remember(self, model: str, scope, body: bytes) -> None:
        entry = (time.time(), model, scope.method, scope.path, scope.query_string, scope.headers, body)
        self.last[model] = entry
        self.recent.append(entry)

    def _send_error(self, fmt: Fmt, proto, status: int, model: str, endpoint: str, **kw) -> None:
        st, headers, body = fmt.error(status, model, **kw)
        proto.response_bytes(st, headers, body)
        self._count(model, str(st), endpoint)

    async def _read_json(self, proto, fmt: Fmt, endpoint: str) -> tuple[bytes, Any] | None:
        body = await proto()
        try:
            return body, orjson.loads(body)
        except orjson.JSONDecodeError:
            msg = (
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
                "valid JSON.)"
                if fmt is OPENAI
                else "Invalid JSON payload received."
            )
            self._send_error(fmt, proto, 400, "", endpoint, message=msg)
            return None

    def _api_key_ok(self, key: str) -> bool:
        return not self.profiles.api_keys or key in self.profiles.api_keys

    # ------------------------------------------------------------------------------------------ core

    async def _generate(self, fmt: Fmt, scope, proto, req: Req, raw: bytes, endpoint: str, t0: float) -> None:
        model = req.model
        d = parse_directives(req.last_user, model) if "[[sim" in req.last_user else None
        d = header_directives(scope.headers, model, d)
        prof = self.profiles.get(model)
        answers = self.profiles.answers
        if answers is not None and not (d and ("output" in d or "json" in d)):
            text = answers.answer(model, req.last_user, prof.quality, self.profiles.seed)
            if text is not None:
                d = {**(d or {}), "output": text}
        self._remember(model, scope, raw)
        if req.stream:
            self.c_stream[model] = self.c_stream.get(model, 0) + 1

        # ---- fault selection: header/directive first, then the profile's rates
        fault = None
        retry_after = prof.retry_after_s
        if d is not None:
            fault = d.get("fail") or None
            if fault is not None:
                times = directive_int(d, "fail_times")
                if times is not None:
                    key = (model, fault, short_hash(req.last_user, size=8))
                    seen = self.fail_counts.get(key, 0)
                    self.fail_counts[key] = seen + 1
                    if seen >= times:
                        fault = None
            retry_after = directive_float(d, "retry_after", retry_after)
        if fault is None and prof.faults:
            r = self.profiles.rng(model).random()
            for thr, kind in prof.faults:
                if r < thr:
                    fault = kind
                    break
        if fault is not None:
            self._fault_count(model, fault)
            if fault in _STATUS_KINDS or fault.isdigit():
                status = int(fault)
                msg = "Simulated invalid request." if status == 400 else None
                if "echo_key" in d_or_empty(d):  # a careless upstream quoting the caller's credential back
                    msg = f"{msg or 'Simulated upstream error.'} Request was made with key {credential(scope.headers)}."
                self._send_error(fmt, proto, status, model, endpoint, message=msg, retry_after=retry_after)
                return
            if fault == "content_filter":  # a provider refusing on content policy (Azure OpenAI's shape)
                self._send_error(
                    fmt,
                    proto,
                    400,
                    model,
                    endpoint,
                    code="content_filter" if fmt in (OPENAI, RESPONSES) else None,
                    message="The response was filtered due to the prompt triggering the content management policy.",
                )
                return
            if fault == "timeout":
                await asyncio.sleep(prof.timeout_s)
                await self._abort(proto, fmt.stream_headers if req.stream else [("content-type", fmt.ok_ct)])
                self._count(model, "timeout", endpoint)
                return
            if fault not in ("drop", "malformed", "stall"):
                fault = None  # unknown kind: ignore

        res = generate(req, prof, d)
        cw = prof.context_window
        if cw is not None and res.prompt_tokens > cw:
            self._send_error(
                fmt,
                proto,
                400,
                model,
                endpoint,
                message=fmt.ctx_msg.format(n=res.prompt_tokens, cw=cw),
                param="messages",
                code="context_length_exceeded" if fmt in (OPENAI, RESPONSES) else None,
            )
            return
        toks = self.c_tokens.get(model)
        if toks is None:
            toks = self.c_tokens[model] = [0, 0]
        toks[0] += res.prompt_tokens
        toks[1] += res.completion_tokens

        ttft = prof.ttft_ms
        if d is not None:
            if "ttft_ms" in d:
                ttft = directive_float(d, "ttft_ms", ttft)
            elif req.stream and "latency_ms" in d:  # a latency directive delays a stream's first token
                ttft = directive_float(d, "latency_ms", ttft)
        tps = directive_float(d, "tps", prof.tokens_per_s)
        if ttft or prof.ttft_jitter_ms:
            ttft = _jitter(self.profiles.rng(model + "#lat"), ttft, prof.ttft_jitter_ms, prof.jitter_dist)
        usage = d is None or "no_usage" not in d

        if req.stream:
            drop_after = None
            if fault in ("drop", "stall"):
                drop_after = directive_int(d, "drop_after", prof.drop_after_chunks)
            lat_ms = int((time.perf_counter() - t0) * 1000 + ttft)
            chunks = self._stream_chunks(fmt, req, res, prof, usage, lat_ms)
            headers = fmt.stream_headers
            if prof.quality_header:
                headers = [*headers, ("x-sim-quality", prof.quality_header)]
            self._count(model, "200", endpoint)
            await self._send_stream(
                proto,
                headers,
                chunks,
                ttft / 1000.0,
                (1.0 / tps) if tps and tps > 0 else 0.0,
                drop_after,
                prof.timeout_s if fault == "stall" else 0.0,
                fmt.malformed_chunk() if fault == "malformed" else None,
            )
            return

        # ---- non-stream
        lat = directive_float(d, "latency_ms", prof.latency_ms)
        if lat is None:
            lat = ttft
            if tps and tps > 0:
                lat += 1000.0 * (res.completion_tokens / tps)
        elif lat or prof.latency_jitter_ms:
            lat = _jitter(self.profiles.rng(model + "#lat"), lat, prof.latency_jitter_ms, prof.jitter_dist)
        if lat > 0:
            await asyncio.sleep(lat / 1000.0)
        headers = [("content-type", fmt.ok_ct)]
        if prof.quality_header:
            headers.append(("x-sim-quality", prof.quality_header))
        if fault == "malformed":
            proto.response_bytes(200, headers, fmt.malformed_body(req))
        elif fault in ("drop", "stall"):
            body = self._render(fmt, req, res, prof, usage, int((time.perf_counter() - t0) * 1000))
            if fault == "stall":
                await asyncio.sleep(prof.timeout_s)
            await self._truncated(proto, headers, body)
        else:
            body = self._render(fmt, req, res, prof, usage, int((time.perf_counter() - t0) * 1000))
            proto.response_bytes(200, headers, body)
        self._count(model, "200", endpoint)

    @staticmethod
    def _render(fmt: Fmt, req: Req, res, prof: ModelProfile, usage: bool, lat_ms: int) -> bytes:
        if fmt is OPENAI:
            return oa.render_chat(req, res, prof)
        if fmt is RESPONSES:
            return rs.render(req, res, prof, usage)
        if fmt is ANTHROPIC:
            return an.render_message(req, res, prof)
        if fmt is BEDROCK:
            return br.render_converse(req, res, prof, lat_ms)
        return gm.render_generate(req, res, prof, True)

    @staticmethod
    def _stream_chunks(fmt: Fmt, req: Req, res, prof: ModelProfile, usage: bool, lat_ms: int):
        if fmt is OPENAI:
            return oa.stream_chat(req, res, prof, usage and req.include_usage)
        if fmt is RESPONSES:
            return rs.stream(req, res, prof, usage)
        if fmt is ANTHROPIC:
            return an.stream_message(req, res, prof, usage)
        if fmt is BEDROCK:
            return br.stream_converse(req, res, prof, usage, lat_ms)
        return gm.stream_generate(req, res, prof, usage, sse=fmt is GEMINI)

    @staticmethod
    async def _abort(proto, headers: list[tuple[str, str]]) -> None:
        """Announce a body that never comes, then close the connection (the client sees a truncated
        response: clients cannot mistake it for a complete one)."""
        tr = proto.response_stream(200, [*headers, ("content-length", "1048576")])
        with contextlib.suppress(Exception):
            await tr.send_bytes(b"{")

    @staticmethod
    async def _truncated(proto, headers: list[tuple[str, str]], body: bytes) -> None:
        tr = proto.response_stream(200, [*headers, ("content-length", str(len(body)))])
        with contextlib.suppress(Exception):
            await tr.send_bytes(body[: max(1, len(body) // 2)])

    @staticmethod
    async def _send_stream(
        proto,
        headers: list[tuple[str, str]],
        chunks: list[tuple[bytes, int]],
        ttft_s: float,
        tok_s: float,
        drop_after: int | None,
        stall_s: float,
        bad_chunk: bytes | None,
    ) -> None:
        if bad_chunk is not None:
            chunks = [*chunks[:2], (bad_chunk, 0), *chunks[2:]]
        if drop_after is not None:
            total = sum(len(c[0]) for c in chunks)
            tr = proto.response_stream(200, [*headers, ("content-length", str(total + 65536))])
        else:
            tr = proto.response_stream(200, headers)
        try:
            if not ttft_s and not tok_s and drop_after is None:
                await tr.send_bytes(b"".join([c[0] for c in chunks]))
                return
            buf: list[bytes] = []
            first = True
            for i, (b, ntok) in enumerate(chunks):
                if drop_after is not None and i >= drop_after:
                    buf.append(b[: max(1, len(b) // 2)])  # cut inside a chunk, then close
                    break
                if ntok:
                    delay = ttft_s if first else ntok * tok_s
                    if delay > 0:
                        # Nothing goes out before the first token is ready: the preamble events (OpenAI's role
                        # chunk, Anthropic's message_start) wait for TTFT with it, as a real provider's do.
                        if buf and not first:
                            await tr.send_bytes(b"".join(buf))
                            buf = []
                        await asyncio.sleep(delay)
                    first = False
                buf.append(b)
            if buf:
                await tr.send_bytes(b"".join(buf))
            if drop_after is not None and stall_s > 0:
                await asyncio.sleep(stall_s)
        except Exception:  # client went away
            return

    # ------------------------------------------------------------------------------------------ OpenAI

    def _openai_auth(self, scope, proto, endpoint: str) -> bool:
        if not self.profiles.auth:
            return True
        h = scope.headers
        key = h.get("authorization")
        if key is not None and key.startswith("Bearer "):
            key = key[7:]
        if not key:
            key = h.get("api-key")
        if not key:
            self._send_error(
                OPENAI,
                proto,
                401,
                "",
                endpoint,
                message="You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
            return False
        if not self._api_key_ok(key):
            self._send_error(
                OPENAI, proto, 401, "", endpoint, message=f"Incorrect API key provided: {key[:6]}***."
            )
            return False
        return True

    async def _openai_chat(self, scope, proto, deployment: str | None) -> None:
        await self._openai_generate(
            scope, proto, OPENAI, "openai.chat", lambda d: oa.parse_chat(d, deployment)
        )

    async def _openai_responses(self, scope, proto, _unused) -> None:
        await self._openai_generate(scope, proto, RESPONSES, "openai.responses", rs.parse)

    async def _openai_generate(self, scope, proto, dialect, endpoint: str, parse) -> None:
        """Chat Completions and Responses: the same checks in the same order, each in its own error shape."""
        t0 = time.perf_counter()
        if scope.method != "POST":
            self._send_error(dialect, proto, 405, "", endpoint, message="Method not allowed.")
            return
        got = await self._read_json(proto, dialect, endpoint)
        if got is None or not self._openai_auth(scope, proto, endpoint):
            return
        raw, data = got
        try:
            req = parse(data)
        except RequestError as e:
            model = data.get("model", "") if isinstance(data, dict) else ""
            self._send_error(
                dialect, proto, e.status, str(model), endpoint, message=e.message, param=e.param, code=e.code
            )
            return
        await self._generate(dialect, scope, proto, req, raw, endpoint, t0)

    async def _openai_embeddings(self, scope, proto, deployment: str | None) -> None:
        if scope.method != "POST":
            self._send_error(OPENAI, proto, 405, "", "openai.embeddings", message="Method not allowed.")
            return
        got = await self._read_json(proto, OPENAI, "openai.embeddings")
        if got is None or not self._openai_auth(scope, proto, "openai.embeddings"):
            return
        raw, data = got
        try:
            model, texts, tokens, dims, enc = oa.parse_embeddings(data, deployment)
        except RequestError as e:
            self._send_error(
                OPENAI, proto, e.status, "", "openai.embeddings", message=e.message, param=e.param
            )
            return
        prof = self.profiles.get(model)
        self._remember(model, scope, raw)
        d = header_directives(scope.headers, model, None)
        for t in texts:
            if "[[sim" in t:
                d = parse_directives(t, model, d)
        fault = d.get("fail") if d else None
        if fault is None and prof.faults:
            r = self.profiles.rng(model).random()
            for thr, kind in prof.faults:
                if r < thr:
                    fault = kind
                    break
        if fault is not None:
            self._fault_count(model, fault)
            if fault.isdigit():
                self._send_error(
                    OPENAI,
                    proto,
                    int(fault),
                    model,
                    "openai.embeddings",
                    retry_after=directive_float(d, "retry_after", prof.retry_after_s),
                )
                return
            if fault == "timeout":
                await asyncio.sleep(prof.timeout_s)
                await self._abort(proto, [JSON_CT])
                self._count(model, "timeout", "openai.embeddings")
                return
        lat = directive_float(d, "latency_ms", prof.latency_ms)
        if lat:
            await asyncio.sleep(
                _jitter(self.profiles.rng(model + "#lat"), lat, prof.latency_jitter_ms, prof.jitter_dist)
                / 1000.0
            )
        body = oa.render_embeddings(model, texts, tokens, dims or prof.embedding_dim, enc)
        toks = self.c_tokens.setdefault(model, [0, 0])
        toks[0] += tokens
        headers = [JSON_CT]
        if fault == "malformed":
            proto.response_bytes(200, headers, body[: len(body) // 2])
        elif fault in ("drop", "stall"):
            await self._truncated(proto, headers, body)
        else:
            proto.response_bytes(200, headers, body)
        self._count(model, "200", "openai.embeddings")

    def _model_names(self) -> list[str]:
        names = self.profiles.known_models()
        return names or list(DEFAULT_MODELS)

    async def _models(self, scope, proto, _unused) -> None:
        if scope.headers.get("anthropic-version") is not None:
            proto.response_bytes(200, [JSON_CT], an.render_models(self._model_names()))
        else:
            proto.response_bytes(200, [JSON_CT], oa.render_models(self._model_names()))

    # ------------------------------------------------------------------------------------------ Anthropic

    def _anthropic_auth(self, scope, proto, endpoint: str) -> bool:
        h = scope.headers
        if self.profiles.auth:
            key = h.get("x-api-key")
            if not key:
                authz = h.get("authorization")
                if authz and authz.startswith("Bearer "):
                    key = authz[7:]
            if not key:
                self._send_error(ANTHROPIC, proto, 401, "", endpoint, message="x-api-key header is required")
                return False
            if not self._api_key_ok(key):
                self._send_error(ANTHROPIC, proto, 401, "", endpoint, message="invalid x-api-key")
                return False
        if h.get("anthropic-version") is None:
            self._send_error(
                ANTHROPIC, proto, 400, "", endpoint, message="anthropic-version: header is required"
            )
            return False
        return True

    async def _anthropic_messages(self, scope, proto, _unused) -> None:
        t0 = time.perf_counter()
        if scope.method != "POST":
            self._send_error(ANTHROPIC, proto, 405, "", "anthropic.messages", message="Method not allowed")
            return
        got = await self._read_json(proto, ANTHROPIC, "anthropic.messages")
        if got is None or not self._anthropic_auth(scope, proto, "anthropic.messages"):
            return
        raw, data = got
        try:
            req = an.parse_messages(data)
        except RequestError as e:
            model = data.get("model", "") if isinstance(data, dict) else ""
            self._send_error(ANTHROPIC, proto, e.status, str(model), "anthropic.messages", message=e.message)
            return
        await self._generate(ANTHROPIC, scope, proto, req, raw, "anthropic.messages", t0)

    async def _anthropic_count(self, scope, proto, _unused) -> None:
        got = await self._read_json(proto, ANTHROPIC, "anthropic.count_tokens")
        if got is None or not self._anthropic_auth(scope, proto, "anthropic.count_tokens"):
            return
        _raw, data = got
        try:
            req = an.parse_messages(data, require_max_tokens=False)
        except RequestError as e:
            self._send_error(ANTHROPIC, proto, e.status, "", "anthropic.count_tokens", message=e.message)
            return
        proto.response_bytes(200, [JSON_CT], an.render_count(req))
        self._count(req.model, "200", "anthropic.count_tokens")

    # ------------------------------------------------------------------------------------------ Gemini

    async def _gemini(self, scope, proto, model: str, method: str) -> None:
        t0 = time.perf_counter()
        endpoint = "gemini." + method
        if scope.method != "POST":
            self._send_error(GEMINI, proto, 405, model, endpoint, message="Method not allowed.")
            return
        qs = scope.query_string
        query = dict(parse_qsl(qs)) if qs else {}
        got = await self._read_json(proto, GEMINI, endpoint)
        if got is None:
            return
        h = scope.headers
        if self.profiles.auth:
            key = h.get("x-goog-api-key") or query.get("key")
            if not key:
                authz = h.get("authorization")
                if authz and authz.startswith("Bearer "):
                    key = authz[7:]
            if not key:
                self._send_error(GEMINI, proto, 403, model, endpoint)
                return
            if not self._api_key_ok(key):
                self._send_error(
                    GEMINI,
                    proto,
                    400,
                    model,
                    endpoint,
                    message="API key not valid. Please pass a valid API key.",
                )
                return
        raw, data = got
        try:
            if method == "countTokens" and isinstance(data, dict) and "generateContentRequest" in data:
                data = data["generateContentRequest"]
            req = gm.parse_generate(data, model)
        except RequestError as e:
            self._send_error(GEMINI, proto, e.status, model, endpoint, message=e.message)
            return
        if method == "countTokens":
            proto.response_bytes(200, [JSON_CT], gm.render_count(req))
            self._count(model, "200", endpoint)
            return
        fmt = GEMINI
        if method == "streamGenerateContent":
            req.stream = True
            if query.get("alt") != "sse":
                fmt = GEMINI_ARRAY
        await self._generate(fmt, scope, proto, req, raw, endpoint, t0)

    async def _gemini_models(self, scope, proto, _unused) -> None:
        proto.response_bytes(200, [JSON_CT], gm.render_models(self._model_names()))

    # ------------------------------------------------------------------------------------------ Bedrock

    async def _bedrock(self, scope, proto, model: str, op: str) -> None:
        t0 = time.perf_counter()
        endpoint = "bedrock." + op
        if scope.method != "POST":
            self._send_error(BEDROCK, proto, 405, model, endpoint, message="Method not allowed.")
            return
        body = await proto()
        h = scope.headers
        if self.profiles.auth:
            bad = br.check_auth(
                h.get("authorization"),
                h,
                scope.method,
                model,
                op,
                scope.query_string,
                body,
                self.profiles.bedrock_secret,
                self.profiles.bedrock_access_key,
            )
            if bad is not None:
                self._send_error(BEDROCK, proto, bad[0], model, endpoint, message=bad[2], code=bad[1])
                return
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._send_error(BEDROCK, proto, 400, model, endpoint)
            return
        try:
            req = br.parse_converse(data, model)
        except RequestError as e:
            self._send_error(BEDROCK, proto, e.status, model, endpoint, message=e.message)
            return
        req.stream = op == "converse-stream"
        await self._generate(BEDROCK, scope, proto, req, body, endpoint, t0)

    # ------------------------------------------------------------------------------------------ control

    async def _health(self, scope, proto, _unused) -> None:
        proto.response_bytes(200, [JSON_CT], b'{"status":"ok"}')

    def _snapshot(self) -> dict[str, Any]:
        last = {}
        for model, e in self.last.items():
            last[model] = self._entry_json(e)
        return {
            "pid": os.getpid(),
            "status": [[m, s, n] for (m, s), n in self.c_status.items()],
            "fault": [[m, k, n] for (m, k), n in self.c_fault.items()],
            "stream": self.c_stream,
            "endpoint": self.c_endpoint,
            "tokens": self.c_tokens,
            "last": last,
        }

    @staticmethod
    def _entry_json(e: tuple) -> dict[str, Any]:
        ts, model, method, path, qs, headers, body = e
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        return {
            "ts": ts,
            "model": model,
            "method": method,
            "path": path,
            "query": qs,
            "headers": dict(headers.items()),
            "body": parsed,
            "raw": body.decode("utf-8", "replace"),
        }

    async def _all_snapshots(self) -> list[dict[str, Any]]:
        if self.shared is None:
            return [self._snapshot()]
        self.shared.write_snapshot(self._snapshot())
        self._dirty = False
        await asyncio.sleep(0.3)  # other workers flush every 0.1 s
        me = os.getpid()
        return [self._snapshot()] + [s for s in self.shared.read_snapshots() if s.get("pid") != me]

    async def _ctl_stats(self, scope, proto, _unused) -> None:
        snaps = await self._all_snapshots()
        by_model: dict[str, Any] = {}
        by_status: dict[str, int] = {}
        by_endpoint: dict[str, int] = {}
        total = 0

        def entry(m: str) -> dict[str, Any]:
            e = by_model.get(m)
            if e is None:
                e = by_model[m] = {
                    "requests": 0,
                    "by_status": {},
                    "faults": {},
                    "stream": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                }
            return e

        for s in snaps:
            for m, st, n in s["status"]:
                e = entry(m)
                e["requests"] += n
                e["by_status"][st] = e["by_status"].get(st, 0) + n
                by_status[st] = by_status.get(st, 0) + n
                total += n
            for m, k, n in s["fault"]:
                e = entry(m)
                e["faults"][k] = e["faults"].get(k, 0) + n
            for m, n in s["stream"].items():
                entry(m)["stream"] += n
            for m, (p, c) in s["tokens"].items():
                e = entry(m)
                e["prompt_tokens"] += p
                e["completion_tokens"] += c
            for ep, n in s["endpoint"].items():
                by_endpoint[ep] = by_endpoint.get(ep, 0) + n
        self._respond_json(
            proto,
            200,
            {
                "total": total,
                "by_status": by_status,
                "by_model": by_model,
                "by_endpoint": by_endpoint,
                "workers": len(snaps),
            },
        )

    async def _ctl_reset(self, scope, proto, _unused) -> None:
        if scope.method != "POST":
            self._respond_json(proto, 405, {"error": "POST only"})
            return
        await proto()
        self._reset_local()
        self.profiles.reset()
        if self.shared is not None:

            def bump(ctl):
                ctl["patches"] = []
                ctl["epoch"] = int(ctl.get("epoch") or 0) + 1

            ctl = self.shared.update_control(bump)
            self._epoch = ctl["epoch"]
            self._seen_gen = self.shared.gen()
            self.shared.write_snapshot(self._snapshot())
            await asyncio.sleep(0.3)
        self._respond_json(proto, 200, {"status": "reset"})

    async def _ctl_last(self, scope, proto, _unused) -> None:
        query = dict(parse_qsl(scope.query_string)) if scope.query_string else {}
        model = query.get("model")
        if self.shared is None:
            e = (self.recent[-1] if self.recent else None) if model is None else self.last.get(model)
            found = self._entry_json(e) if e is not None else None
        else:
            found = None
            for s in await self._all_snapshots():
                for m, ent in s["last"].items():
                    if (model is None or m == model) and (found is None or ent["ts"] > found["ts"]):
                        found = ent
        if found is None:
            self._respond_json(proto, 404, {"error": f"no request seen for model {model!r}"})
        else:
            self._respond_json(proto, 200, found)

    async def _ctl_requests(self, scope, proto, _unused) -> None:
        query = dict(parse_qsl(scope.query_string)) if scope.query_string else {}
        model = query.get("model")
        limit = int(query.get("limit") or 50)
        items = [e for e in self.recent if model is None or e[1] == model][-limit:]
        self._respond_json(proto, 200, {"requests": [self._entry_json(e) for e in items]})

    async def _ctl_models_list(self, scope, proto, _unused) -> None:
        self._respond_json(
            proto,
            200,
            {
                "known": self._model_names(),
                "patches": [{"model": p, "patch": v} for p, v in self.profiles.patches()],
            },
        )

    async def _ctl_model(self, scope, proto, model: str) -> None:
        method = scope.method
        if not model:
            self._respond_json(proto, 404, {"error": "model required"})
            return
        if method == "GET":
            self._respond_json(proto, 200, {"model": model, "profile": self.profiles.get(model).as_dict()})
            return
        if method == "DELETE":
            await proto()
            removed = self.profiles.delete_patch(model)
            if self.shared is not None:

                def drop(ctl):
                    ctl["patches"] = [p for p in ctl.get("patches", []) if p[0] != model]

                self.shared.update_control(drop)
                self._seen_gen = self.shared.gen()
            self._respond_json(proto, 200, {"model": model, "removed": removed})
            return
        if method not in ("POST", "PUT", "PATCH"):
            self._respond_json(proto, 405, {"error": "use GET, POST or DELETE"})
            return
        body = await proto()
        try:
            patch = orjson.loads(body) if body else {}
            prof = self.profiles.patch(model, patch)
        except (orjson.JSONDecodeError, ProfileError) as e:
            self._respond_json(proto, 400, {"error": str(e)})
            return
        if self.shared is not None:
            patches = self.profiles.patches()

            def put(ctl):
                ctl["patches"] = [[p, v] for p, v in patches]

            self.shared.update_control(put)
            self._seen_gen = self.shared.gen()
        self._respond_json(proto, 200, {"model": model, "profile": prof.as_dict()})

    # ------------------------------------------------------------------------------------------ multi-worker

    def _sync_shared(self) -> None:
        assert self.shared is not None
        self._seen_gen = self.shared.gen()
        ctl = self.shared.read_control()
        epoch = int(ctl.get("epoch") or 0)
        if epoch != self._epoch:
            self._epoch = epoch
            self._reset_local()
            self.profiles.reset()
        self.profiles.set_patches([(p, v) for p, v in ctl.get("patches", [])])

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                if self.shared.gen() != self._seen_gen:
                    self._sync_shared()
                if self._dirty:
                    self._dirty = False
                    self.shared.write_snapshot(self._snapshot())
            except Exception as e:  # never let the flusher die
                print(f"simulator: stats flush failed: {e}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- entry points


def create_app() -> SimApp:
    """Granian factory: builds the app from the environment set by :func:`main`."""
    profiles = load_profile_file(os.environ.get(ENV_PROFILE) or None)
    seed = os.environ.get(ENV_SEED)
    if seed:
        profiles.seed = int(seed)
    return SimApp(profiles, os.environ.get(ENV_STATE_DIR) or None)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gateway simulate",
        description="Run the LLM provider simulator (OpenAI, Azure OpenAI, Anthropic, Gemini, Bedrock wire formats).",
    )
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8090, help="bind port (default 8090)")
    ap.add_argument("--profile", help="profile file (YAML or JSON) with per-model behaviour")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--seed", type=int, help="override the profile's RNG seed")
    ap.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    ap.add_argument("--http", default="auto", choices=["auto", "1", "2"], help="HTTP mode (default auto)")
    ap.add_argument("--backlog", type=int, default=2048)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_profile_file(args.profile)  # validate early, with a readable error
    except (ProfileError, ValueError) as e:
        print(f"simulator: invalid profile: {e}", file=sys.stderr)
        return 2
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    if args.profile:
        os.environ[ENV_PROFILE] = os.path.abspath(args.profile)
    else:
        os.environ.pop(ENV_PROFILE, None)
    if args.seed is not None:
        os.environ[ENV_SEED] = str(args.seed)
    state_dir = None
    if args.workers > 1:
        state_dir = tempfile.mkdtemp(prefix="gateway-sim-")
        with open(os.path.join(state_dir, "gen"), "wb") as f:
            f.write(b"\x00" * 16)
        os.environ[ENV_STATE_DIR] = state_dir
    else:
        os.environ.pop(ENV_STATE_DIR, None)
    # make the package importable in spawned workers
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if pkg_root not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p)
    try:
        server = Server(
            "gateway.simulate.server:create_app",
            address=args.host,
            port=args.port,
            interface=Interfaces.RSGI,
            workers=max(1, args.workers),
            http=HTTPModes(args.http),
            backlog=args.backlog,
            factory=True,
            log_enabled=True,
            log_level=LogLevels(args.log_level),
            log_access=False,
            websockets=False,
        )
        server.serve()
    finally:
        if state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["SimApp", "create_app", "main"]
