"""Simulator behaviour profiles: per-model latency, output size, fault rates, quality.

A profile file (YAML or JSON) looks like::

    seed: 42                  # seeds every RNG (fault injection, jitter): runs are repeatable
    auth: true                # require provider credentials headers (false: accept anything)
    api_keys: []              # when non-empty, only these keys are accepted (OpenAI/Anthropic/Gemini)
    bedrock:
      verify_secret_key: "..."   # if set, SigV4 signatures are verified with this secret
      access_key_id: "AKIA..."   # if set, the credential's access key must match
    default:                  # applies to every model
      output_tokens: 20
    models:                   # name or fnmatch glob -> patch (applied in file order, exact names last)
      "gpt-4o*": {ttft_ms: 150, tokens_per_s: 80}
      claude-3-5-sonnet: {rate_429: 0.1, retry_after_s: 2, quality: {code: 0.9, math: 0.8}}
    answers: items.jsonl      # recorded per-item answers (answers.py): known prompts answered right or wrong

Every model key is optional; see :data:`DEFAULTS`. ``error_rate: {"429": 0.1, timeout: 0.01}`` is an
alias for ``rate_429`` / ``rate_timeout``; any ``rate_<status>`` (e.g. ``rate_529``) injects that status.
"""

from __future__ import annotations

import fnmatch
import json
import random
from pathlib import Path
from typing import Any

from .answers import Answers

DEFAULTS: dict[str, Any] = {
    # latency
    "ttft_ms": 0.0,  # streaming: delay before the first token (mean)
    "ttft_jitter_ms": 0.0,
    "tokens_per_s": 0.0,  # streaming pace; 0 = as fast as possible
    "latency_ms": None,  # non-stream total latency (mean); None = ttft + output_tokens / tokens_per_s
    "latency_jitter_ms": 0.0,
    "jitter_dist": "uniform",  # uniform (mean +- jitter) | normal (sd = jitter) | exponential (mean + Exp(jitter))
    # output
    "output_tokens": 20,
    "echo": False,
    "cached_tokens": 0,  # reported as cached prompt tokens (clipped to the prompt size)
    "cache_ratio": 0.0,  # fraction of prompt tokens reported as cached (added to cached_tokens)
    "reasoning_tokens": 0,  # reported reasoning / thinking tokens (added to completion tokens)
    "thinking_tokens": 16,  # Anthropic: size of the thinking block when the request enables thinking
    "embedding_dim": 1536,
    "context_window": None,  # prompt tokens above this -> 400 context length exceeded
    "quality": {},  # task category -> score in [0, 1]; exposed in the x-sim-quality header
    # faults (probabilities per request, drawn from a seeded RNG)
    "rate_429": 0.0,
    "retry_after_s": 1.0,
    "rate_500": 0.0,
    "rate_503": 0.0,
    "rate_timeout": 0.0,
    "timeout_s": 30.0,  # how long a "timeout" fault hangs before closing the connection
    "rate_drop": 0.0,
    "drop_after_chunks": 3,  # a "drop" fault closes the connection after this many chunks
    "rate_malformed": 0.0,
}

_FLOAT_KEYS = {
    "ttft_ms",
    "ttft_jitter_ms",
    "tokens_per_s",
    "latency_jitter_ms",
    "retry_after_s",
    "timeout_s",
    "cache_ratio",
}
_INT_KEYS = {
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "thinking_tokens",
    "embedding_dim",
    "drop_after_chunks",
}
_FAULT_KINDS_NAMED = ("timeout", "drop", "malformed", "stall")
TOP_LEVEL_KEYS = {"seed", "auth", "api_keys", "bedrock", "default", "models", "answers"}


class ProfileError(ValueError):
    pass


def _normalize_patch(patch: Any, where: str) -> dict[str, Any]:
    """Validate one model patch and return it with aliases expanded and values coerced."""
    if patch is None:
        return {}
    if not isinstance(patch, dict):
        raise ProfileError(f"{where}: expected a mapping, got {type(patch).__name__}")
    out: dict[str, Any] = {}
    for key, val in patch.items():
        key = str(key)
        if key == "error_rate":
            if not isinstance(val, dict):
                raise ProfileError(f"{where}.error_rate: expected a mapping of kind -> rate")
            for kind, rate in val.items():
                out.update(_normalize_patch({f"rate_{kind}": rate}, where))
            continue
        if key.startswith("rate_"):
            kind = key[5:]
            if not (kind.isdigit() or kind in _FAULT_KINDS_NAMED):
                raise ProfileError(f"{where}.{key}: unknown fault kind {kind!r}")
            try:
                rate = float(val)
            except (TypeError, ValueError):
                raise ProfileError(f"{where}.{key}: expected a number") from None
            if not 0.0 <= rate <= 1.0:
                raise ProfileError(f"{where}.{key}: rate must be within [0, 1]")
            out[key] = rate
            continue
        if key not in DEFAULTS:
            raise ProfileError(f"{where}: unknown key {key!r}")
        try:
            if key in _FLOAT_KEYS:
                val = float(val)
            elif key in _INT_KEYS:
                val = int(val)
            elif key == "latency_ms":
                val = None if val is None else float(val)
            elif key == "context_window":
                val = None if val is None else int(val)
            elif key == "echo":
                val = bool(val)
            elif key == "quality":
                if not isinstance(val, dict):
                    raise ProfileError(f"{where}.quality: expected a mapping")
                val = {str(k): float(v) for k, v in val.items()}
            elif key == "jitter_dist" and val not in ("uniform", "normal", "exponential"):
                raise ProfileError(f"{where}.jitter_dist: expected uniform|normal|exponential")
        except (TypeError, ValueError):
            raise ProfileError(f"{where}.{key}: bad value {val!r}") from None
        out[key] = val
    return out


class ModelProfile:
    """Resolved behaviour of one model (plain attributes for the hot path)."""

    __slots__ = (
        "cache_ratio",
        "cached_tokens",
        "context_window",
        "drop_after_chunks",
        "echo",
        "embedding_dim",
        "faults",
        "jitter_dist",
        "latency_jitter_ms",
        "latency_ms",
        "model",
        "output_tokens",
        "quality",
        "quality_header",
        "raw",
        "reasoning_tokens",
        "retry_after_s",
        "thinking_tokens",
        "timeout_s",
        "tokens_per_s",
        "ttft_jitter_ms",
        "ttft_ms",
    )

    def __init__(self, model: str, merged: dict[str, Any]):
        self.model = model
        self.raw = merged
        for key in DEFAULTS:
            if not key.startswith("rate_"):
                setattr(self, key, merged[key])
        # cumulative fault table [(threshold, kind)], empty when no faults are configured
        faults: list[tuple[float, str]] = []
        acc = 0.0
        for key, val in merged.items():
            if key.startswith("rate_") and val > 0:
                acc += val
                faults.append((acc, key[5:]))
        self.faults = faults
        q = merged["quality"]
        self.quality_header = ",".join(f"{k}={v:g}" for k, v in q.items()) if q else ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.raw)


class Profiles:
    """Profile set: file entries + runtime patches, resolved (and cached) per model name."""

    def __init__(self, config: dict[str, Any] | None = None, base_dir: Path | None = None):
        config = config or {}
        unknown = set(config) - TOP_LEVEL_KEYS
        if unknown:
            raise ProfileError(
                f"unknown top-level keys: {sorted(unknown)} (expected {sorted(TOP_LEVEL_KEYS)})"
            )
        self.seed = int(config.get("seed") or 0)
        self.auth = bool(config.get("auth", True))
        keys = config.get("api_keys") or []
        if not isinstance(keys, list):
            raise ProfileError("api_keys: expected a list")
        self.api_keys = frozenset(str(k) for k in keys)
        bedrock = config.get("bedrock") or {}
        if not isinstance(bedrock, dict):
            raise ProfileError("bedrock: expected a mapping")
        self.bedrock_secret: str | None = bedrock.get("verify_secret_key")
        self.bedrock_access_key: str | None = bedrock.get("access_key_id")
        # recorded per-item answers (answers.py): known evaluation prompts answered right or wrong as recorded
        self.answers: Answers | None = None
        if config.get("answers"):
            path = Path(str(config["answers"]))
            try:
                self.answers = Answers.load(path if path.is_absolute() else (base_dir or Path()) / path)
            except (OSError, ValueError) as e:
                raise ProfileError(f"answers: {e}") from None
        base = dict(DEFAULTS)
        base.update(_normalize_patch(config.get("default"), "default"))
        models = config.get("models") or {}
        if not isinstance(models, dict):
            raise ProfileError("models: expected a mapping of model name/glob -> settings")
        entries: list[tuple[str, dict[str, Any]]] = []
        for name, patch in models.items():
            name = str(name)
            norm = _normalize_patch(patch, f"models.{name}")
            if name == "default":
                base.update(norm)
            else:
                entries.append((name, norm))
        self._base = base
        # globs first (file order), then exact names, so an exact entry wins over a glob
        self._globs = [(n, p) for n, p in entries if _is_glob(n)]
        self._exact = {n: p for n, p in entries if not _is_glob(n)}
        self._patches: list[tuple[str, dict[str, Any]]] = []  # runtime patches, applied last
        self._cache: dict[str, ModelProfile] = {}
        self._rngs: dict[str, random.Random] = {}

    # ----------------------------------------------------------------------------- resolution

    def get(self, model: str) -> ModelProfile:
        prof = self._cache.get(model)
        if prof is None:
            prof = self._resolve(model)
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[model] = prof
        return prof

    def _resolve(self, model: str) -> ModelProfile:
        merged = dict(self._base)
        for pat, patch in self._globs:
            if fnmatch.fnmatchcase(model, pat):
                merged.update(patch)
        exact = self._exact.get(model)
        if exact:
            merged.update(exact)
        for pat, patch in self._patches:
            if pat == model or (_is_glob(pat) and fnmatch.fnmatchcase(model, pat)):
                merged.update(patch)
        return ModelProfile(model, merged)

    def rng(self, model: str) -> random.Random:
        r = self._rngs.get(model)
        if r is None:
            r = random.Random(f"{self.seed}:{model}")
            self._rngs[model] = r
        return r

    def known_models(self) -> list[str]:
        names = list(self._exact)
        names += [p for p, _ in self._patches if not _is_glob(p) and p not in names]
        return names

    # ----------------------------------------------------------------------------- runtime changes

    def patch(self, model: str, patch: dict[str, Any]) -> ModelProfile:
        """Merge a runtime patch for ``model`` (a name or a glob); returns the resolved profile."""
        norm = _normalize_patch(patch, f"patch[{model}]")
        for i, (pat, existing) in enumerate(self._patches):
            if pat == model:
                merged = dict(existing)
                merged.update(norm)
                self._patches[i] = (pat, merged)
                break
        else:
            self._patches.append((model, norm))
        self._cache.clear()
        return self.get(model)

    def set_patches(self, patches: list[tuple[str, dict[str, Any]]]) -> None:
        self._patches = [(p, dict(v)) for p, v in patches]
        self._cache.clear()

    def patches(self) -> list[tuple[str, dict[str, Any]]]:
        return [(p, dict(v)) for p, v in self._patches]

    def delete_patch(self, model: str) -> bool:
        before = len(self._patches)
        self._patches = [(p, v) for p, v in self._patches if p != model]
        self._cache.clear()
        return len(self._patches) != before

    def reset(self) -> None:
        """Drop runtime patches and reseed every RNG."""
        self._patches = []
        self._cache.clear()
        self._rngs.clear()


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def load_profile_file(path: str | Path | None) -> Profiles:
    if not path:
        return Profiles({})
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ProfileError(f"cannot read profile {p}: {e}") from e
    if p.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"{p}: the profile must be a mapping")
    return Profiles(data, p.parent)
