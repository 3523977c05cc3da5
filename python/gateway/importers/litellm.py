"""``gateway import litellm config.yaml``: a LiteLLM proxy config → this gateway's config.

What maps: ``model_list`` (entries with one ``model_name`` become one model group, each entry a deployment;
``litellm_params.model``'s provider prefix picks the adapter, OpenAI-compatible hosts get their base URL),
keys, bases and versions (``os.environ/X`` → ``${X}``), ``rpm``/``tpm``, timeouts, per-token prices and regions;
``router_settings`` / ``litellm_settings`` routing strategy, retries, timeouts, fallbacks (plain, context
window, content policy), cooldowns and Redis; ``general_settings.master_key`` (the admin key, and a gateway key
so existing clients keep working); ``max_budget`` / ``budget_duration`` (a budget per tenant). Everything else is
listed, by path, as not converted: the caller decides what it means for them.
"""

from __future__ import annotations

import re
from typing import Any

# provider prefix -> (adapter, base URL); OpenAI-compatible hosts go through the openai adapter
OPENAI_COMPATIBLE = {
    "openai": None,
    "text-completion-openai": None,
    "custom_openai": None,
    "hosted_vllm": None,
    "ollama": "http://localhost:11434/v1",
    "ollama_chat": "http://localhost:11434/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "perplexity": "https://api.perplexity.ai",
    "xai": "https://api.x.ai/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "lm_studio": "http://localhost:1234/v1",
}
NATIVE = {"azure": "azure", "anthropic": "anthropic", "gemini": "gemini", "bedrock": "bedrock"}
STRATEGIES = {
    "simple-shuffle": "weighted",
    "least-busy": "least_busy",
    "latency-based-routing": "least_latency",
    "cost-based-routing": "lowest_cost",
}
# litellm_params that only shape LiteLLM's own client: dropped without a note
QUIET = {
    "model",
    "api_key",
    "api_base",
    "api_version",
    "rpm",
    "tpm",
    "timeout",
    "stream_timeout",
    "max_retries",
}
_ENV = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")
_DURATION = {"d": "day", "mo": "month"}


class ImportResult:
    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.skipped: list[str] = []  # "path: why"

    def skip(self, path: str, why: str) -> None:
        self.skipped.append(f"{path}: {why}")


def _env(value: Any) -> Any:
    """``os.environ/NAME`` → ``${NAME}``; other values as they are (numbers as strings where YAML needs it)."""
    if isinstance(value, str):
        m = _ENV.match(value.strip())
        if m:
            return "${" + m.group(1) + "}"
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "deployment"


def _deployment(
    entry: dict[str, Any], path: str, out: ImportResult, used_ids: set[str]
) -> dict[str, Any] | None:
    name = str(entry.get("model_name"))
    params = entry.get("litellm_params") or {"model": name}
    model = str(params.get("model") or name)
    prefix, _, rest = model.partition("/")
    if not rest:
        prefix, rest = "openai", model
    if "*" in rest or "*" in name:
        out.skip(path, f"wildcard route {name!r} → {model!r}: list the models you use as groups")
        return None
    dep: dict[str, Any] = {}
    if prefix in NATIVE:
        dep["provider"] = NATIVE[prefix]
    elif prefix in OPENAI_COMPATIBLE:
        dep["provider"] = "openai"
        if OPENAI_COMPATIBLE[prefix] and "api_base" not in params:
            dep["api_base"] = OPENAI_COMPATIBLE[prefix]
    else:
        out.skip(path, f"provider {prefix!r} ({model!r}) has no adapter here")
        return None
    dep["model"] = rest
    info = entry.get("model_info") or {}
    base_id = _slug(str(info.get("id") or f"{name}-{len(used_ids) + 1}"))
    dep_id, n = base_id, 1
    while dep_id in used_ids:
        n += 1
        dep_id = f"{base_id}-{n}"
    used_ids.add(dep_id)
    dep = {"id": dep_id, **dep}
    for src, dst in (("api_base", "api_base"), ("api_key", "api_key"), ("api_version", "api_version")):
        if params.get(src) is not None:
            dep[dst] = str(_env(params[src]))
    if dep["provider"] == "gemini" and "api_base" not in dep:
        dep["api_base"] = "https://generativelanguage.googleapis.com"
    for key in ("rpm", "tpm"):
        value = params.get(key, entry.get(key))
        if value is not None:
            dep[key] = int(value)
    if params.get("timeout") is not None:
        dep["timeout_s"] = float(_env(params["timeout"]))
    region = params.get("region_name") or params.get("aws_region_name") or params.get("vertex_location")
    if region:
        dep["region"] = str(_env(region))
    if params.get("tags"):  # tag-based routing has no per-deployment equivalent here
        out.skip(f"{path}.litellm_params.tags", "route by tag with a model group per tag instead")
    price = {}
    for src, dst in (("input_cost_per_token", "input"), ("output_cost_per_token", "output")):
        if params.get(src) is not None:
            price[dst] = round(float(params[src]) * 1e6, 6)  # USD per million tokens here
    if price:
        dep["price"] = price
    if dep["provider"] == "bedrock":
        dep["aws"] = {
            "access_key_id": str(_env(params.get("aws_access_key_id", "os.environ/AWS_ACCESS_KEY_ID"))),
            "secret_access_key": str(
                _env(params.get("aws_secret_access_key", "os.environ/AWS_SECRET_ACCESS_KEY"))
            ),
        }
        if params.get("aws_session_token"):
            dep["aws"]["session_token"] = str(_env(params["aws_session_token"]))
        dep.pop("api_key", None)
    mapped = QUIET | {
        "region_name", "aws_region_name", "vertex_location", "tags", "input_cost_per_token",
        "output_cost_per_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    }  # fmt: skip
    for key in sorted(set(params) - mapped):
        out.skip(f"{path}.litellm_params.{key}", "no equivalent per deployment")
    if params.get("stream_timeout") is not None:
        out.skip(f"{path}.litellm_params.stream_timeout", "set the group's ttft_timeout_s if you want one")
    for key in sorted(set(info) - {"id", "mode", "base_model"}):
        out.skip(f"{path}.model_info.{key}", "not used here")
    return dep


def _group_settings(
    settings: dict[str, Any], path: str, groups: dict[str, Any], out: ImportResult
) -> set[str]:
    """Routing settings shared by router_settings and litellm_settings; returns the keys it handled."""
    handled: set[str] = set()
    strategy = settings.get("routing_strategy")
    if strategy is not None:
        handled.add("routing_strategy")
        if strategy in STRATEGIES:
            for g in groups.values():
                g["strategy"] = STRATEGIES[strategy]
        else:
            out.skip(f"{path}.routing_strategy", f"{strategy!r} has no equivalent; groups stay weighted")
    for key, field in (("num_retries", "max_attempts"), ("allowed_fails", "failure_threshold")):
        if settings.get(key) is not None:
            handled.add(key)
            for g in groups.values():
                g[field] = int(settings[key]) + (1 if key == "num_retries" else 0)
    for key in ("timeout", "request_timeout"):
        if settings.get(key) is not None:
            handled.add(key)
            for g in groups.values():
                g["timeout_s"] = float(settings[key])
    if settings.get("cooldown_time") is not None:
        handled.add("cooldown_time")
        for g in groups.values():
            g["open_s"] = float(settings["cooldown_time"])
    for key, field in (
        ("fallbacks", "fallbacks"),
        ("context_window_fallbacks", "context_fallback"),
        ("content_policy_fallbacks", "content_policy_fallback"),
    ):
        if settings.get(key) is None:
            continue
        handled.add(key)
        for i, rule in enumerate(settings[key] or []):
            for src, targets in (rule or {}).items():
                targets = [t for t in (targets or []) if t in groups]
                missing = [t for t in (rule[src] or []) if t not in groups]
                if src not in groups or not targets:
                    out.skip(f"{path}.{key}[{i}]", f"{src!r} → {rule[src]!r}: no such model group here")
                    continue
                if missing:
                    out.skip(f"{path}.{key}[{i}]", f"fallbacks {missing!r} are not model groups here")
                if field == "fallbacks":
                    groups[src]["fallbacks"] = targets
                else:
                    groups[src][field] = targets[0]
                    if len(targets) > 1:
                        out.skip(f"{path}.{key}[{i}]", f"only the first of {targets!r} is kept")
    return handled


def convert(raw: dict[str, Any]) -> ImportResult:
    """Convert a parsed LiteLLM proxy config."""
    out = ImportResult()
    groups: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for i, entry in enumerate(raw.get("model_list") or []):
        path = f"model_list[{i}]"
        if not isinstance(entry, dict) or not entry.get("model_name"):
            out.skip(path, "an entry without model_name")
            continue
        dep = _deployment(entry, path, out, used_ids)
        if dep is not None:
            groups.setdefault(str(entry["model_name"]), {"deployments": []})["deployments"].append(dep)
    cfg: dict[str, Any] = {"server": {"host": "0.0.0.0", "port": 4000, "workers": 2}, "models": groups}

    router = raw.get("router_settings") or {}
    handled = _group_settings(router, "router_settings", groups, out)
    redis = {
        k: router[k] for k in ("redis_host", "redis_port", "redis_password") if router.get(k) is not None
    }
    if router.get("redis_url"):
        cfg["state"] = {"redis_url": str(_env(router["redis_url"]))}
        handled.add("redis_url")
    elif "redis_host" in redis:
        cfg["state"] = {"redis_url": _redis_url(redis)}
    handled |= set(redis)
    for key in sorted(set(router) - handled):
        out.skip(f"router_settings.{key}", "no equivalent")

    settings = raw.get("litellm_settings") or {}
    handled = _group_settings(settings, "litellm_settings", groups, out)
    if settings.get("max_budget") is not None:
        handled |= {"max_budget", "budget_duration"}
        period = _period(settings.get("budget_duration"))
        rule: dict[str, Any] = {"usd": float(settings["max_budget"]), **period}
        cfg.setdefault("stages", {})["budget"] = {"enabled": True, "tenants": {"*": rule}}
        out.skip("litellm_settings.max_budget", "converted to a budget per tenant (every tenant: '*')")
    for key in sorted(set(settings) - handled):
        out.skip(f"litellm_settings.{key}", "no equivalent")

    general = raw.get("general_settings") or {}
    coord = general.get("coordination_redis")
    if isinstance(coord, dict) and coord.get("host") and "state" not in cfg:
        cfg["state"] = {"redis_url": _redis_url({f"redis_{k}": v for k, v in coord.items()})}
        general = {k: v for k, v in general.items() if k != "coordination_redis"}
    if general.get("master_key") is not None:
        master = str(_env(general["master_key"]))
        cfg["admin"] = {"key": master}
        cfg["keys"] = [{"key": master, "name": "master", "tenant": "default"}]
    for key in sorted(set(general) - {"master_key"}):
        why = "records go to the gateway's own store" if key == "database_url" else "no equivalent"
        out.skip(f"general_settings.{key}", why)

    for key in sorted(set(raw) - {"model_list", "router_settings", "litellm_settings", "general_settings"}):
        out.skip(
            key,
            "no equivalent" + (": set these in the environment" if key == "environment_variables" else ""),
        )
    out.config = cfg
    return out


def _redis_url(r: dict[str, Any]) -> str:
    password = _env(r.get("redis_password"))
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{_env(r['redis_host'])}:{_env(r.get('redis_port', 6379))}/0"


def _period(duration: Any) -> dict[str, Any]:
    """LiteLLM's ``30d`` / ``1mo`` / ``24h`` → a calendar period or a rolling window."""
    if duration is None:
        return {"period": "lifetime"}
    m = re.fullmatch(r"(\d+)\s*(s|m|h|d|mo)", str(duration).strip())
    if not m:
        return {"period": "month"}
    n, unit = int(m.group(1)), m.group(2)
    if n == 1 and unit in _DURATION:
        return {"period": _DURATION[unit]}
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "mo": 30 * 86400}[unit] * n
    return {"window_s": seconds}


def render(result: ImportResult, source: str) -> str:
    """The converted config as YAML, with what was not converted as a comment on top."""
    import yaml

    lines = [f"# Converted from the LiteLLM config {source} by `gateway import litellm`."]
    if result.skipped:
        lines.append("# Not converted:")
        lines += [f"#   {s}" for s in result.skipped]
    return "\n".join(lines) + "\n" + yaml.safe_dump(result.config, sort_keys=False)
