"""keel.yaml + KEEL_* environment -> typed settings.

Precedence, highest first: ``KEEL_*`` environment variables (nested with
``__``: ``KEEL_GATEWAY__MAX_RETRIES=5``), then keyword arguments to
``load_settings`` merged over ``keel.yaml``, then defaults. The defaults run
with no file and no key: the embedded SmolLM2 model.

Secrets are never written in the file: a model names the environment variable
that holds its key (``api_key_env: OPENAI_API_KEY``) and keel reads it as a
``SecretStr`` only when the provider is built.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError, MissingAPIKey

__all__ = [
    "AlertRule",
    "AuditSettings",
    "BreakerSettings",
    "BudgetLimit",
    "BudgetSettings",
    "CacheSettings",
    "EmbeddingSettings",
    "GatewaySettings",
    "GuardrailSettings",
    "KnowledgeSettings",
    "LimitSettings",
    "ModelConfig",
    "PromptSettings",
    "RouterSettings",
    "Settings",
    "StateSettings",
    "ToolOverride",
    "ToolSettings",
    "TelemetrySettings",
    "find_config_file",
    "load_settings",
]

CONFIG_FILENAME = "keel.yaml"
ProviderName = Literal["local", "openai", "anthropic", "fake"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    """One model keel may call. Referred to by its key under ``models:``."""

    provider: ProviderName
    #: the provider's model name ("gpt-4o-mini", "claude-sonnet-4-5"); for local, a label
    model: str = ""
    #: local only: a GGUF file; empty means the bundled SmolLM2-135M-Instruct
    path: str | None = None
    base_url: str | None = None
    #: the NAME of the environment variable holding the key, never the key itself
    api_key_env: str | None = None
    context_window: int | None = None
    max_output_tokens: int = 512
    timeout_s: float | None = None
    #: price overrides in USD per million tokens (else genai-prices, else 0 for local)
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    #: local only: llama.cpp threads (default: all cores)
    n_threads: int | None = None
    #: fake only: scripted replies, consumed in order
    replies: list[str] = Field(default_factory=list)

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_a_name(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError("api_key_env names an environment variable (e.g. OPENAI_API_KEY), not a key")
        return v

    def api_key(self, name: str) -> SecretStr | None:
        """Read the key from the environment; raise if it is named but missing."""
        if not self.api_key_env:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise MissingAPIKey(self.api_key_env, name)
        return SecretStr(value)


class BreakerSettings(_Strict):
    failure_threshold: int = Field(5, ge=1)
    reset_timeout_s: float = Field(30.0, gt=0)


class CacheSettings(_Strict):
    """The gateway's exact-match response cache (temperature 0 calls only)."""

    enabled: bool = True
    ttl_s: float | None = 7 * 24 * 3600.0
    #: sqlite: <home>/cache.sqlite3 (one machine); redis: shared by every replica; memory: this process only
    backend: Literal["sqlite", "redis", "memory"] = "sqlite"
    #: redis only
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: redis only: every entry's key starts with this (several apps can share one Redis)
    key_prefix: str = "keel:cache:"


class GatewaySettings(_Strict):
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    breaker: BreakerSettings = BreakerSettings()
    cache: CacheSettings = CacheSettings()


class StructuredSettings(_Strict):
    max_reasks: int = Field(2, ge=0)


class AlertRule(_Strict):
    """Fire when ``metric`` over the last ``window_s`` seconds crosses ``threshold``.

    Metrics: ``cost_usd`` (sum), ``errors`` (count), ``error_rate`` (errors / calls,
    only once ``min_calls`` calls were seen), ``calls`` (count).
    """

    name: str
    metric: Literal["cost_usd", "errors", "error_rate", "calls"]
    threshold: float = Field(ge=0)
    window_s: float = Field(300.0, gt=0)
    min_calls: int = Field(20, ge=1)


class AuditSettings(_Strict):
    enabled: bool = True
    #: delete records older than this many days (the chain stays verifiable); None keeps all
    retention_days: float | None = Field(None, gt=0)
    #: False: keep only a sha256 of the text fields (question, answer, source text, ...)
    store_text: bool = True
    #: with store_text false, the values under these keys are stored as their sha256: the
    #: guardrail's ``problems`` and a check's ``detail`` quote the answer, a tool's ``result`` its output
    text_keys: list[str] = Field(default_factory=lambda: [
        "question", "answer", "text", "content", "prompt", "messages", "input", "output", "comment",
        "problems", "detail", "result"])


class TelemetrySettings(_Strict):
    """Traces, costs, feedback, audit, metrics and alerts (keel.telemetry)."""

    enabled: bool = True
    #: SQLAlchemy URL of the trace store; None means SQLite (WAL) at <home>/telemetry.sqlite3
    database_url: str | None = None
    #: OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:6006/v1/traces (Phoenix) or a collector's
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    #: False: spans carry no prompt or answer text, only sizes, tokens and costs
    capture_content: bool = True
    #: share of traces recorded (by trace id, children follow their root); costs, metrics,
    #: budgets and the audit ledger always see every call
    sample_ratio: float = Field(1.0, ge=0, le=1)
    service_name: str = "keel"
    #: spans older than this are deleted when the trace store opens, then hourly (None keeps them);
    #: cost rows are accounting records and are kept
    trace_retention_days: float | None = Field(None, gt=0)
    audit: AuditSettings = AuditSettings()
    #: alert rules, evaluated on every model call (and while firing, every alerts_recheck_s);
    #: sent to the log and to webhook_url
    alerts: list[AlertRule] = Field(default_factory=list)
    #: memory: each process alerts on its own calls; redis: the windows and firing state live in
    #: Redis at budgets.redis_url, summed over every replica, one notice per breach (scale mode)
    alerts_backend: Literal["memory", "redis"] = "memory"
    #: a firing rule is also re-checked this often without calls, so it resolves when traffic stops
    alerts_recheck_s: float = Field(5.0, gt=0)
    webhook_url: str | None = None


class BudgetLimit(_Strict):
    """At most ``usd`` per ``scope`` (per request id, session id, user id, tenant id, or all
    traffic) in each ``per`` window (UTC-aligned), or in total when ``per`` is None."""

    scope: Literal["request", "session", "user", "tenant", "global"]
    usd: float = Field(ge=0)
    per: Literal["minute", "hour", "day", "week", "month"] | None = None


class BudgetSettings(_Strict):
    """Hard spend limits enforced by the gateway before each model call (keel.telemetry.budgets)."""

    #: sqlite: counters in <home>/budgets.sqlite3 (one machine); redis: shared by every replica
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: a reservation whose call never settled (its process died) is released after this long
    lease_s: float = Field(600.0, gt=0)
    limits: list[BudgetLimit] = Field(default_factory=list)
    #: shorthands for an all-time limit per scope
    request_usd: float | None = Field(None, ge=0)
    session_usd: float | None = Field(None, ge=0)
    user_usd: float | None = Field(None, ge=0)
    tenant_usd: float | None = Field(None, ge=0)

    def all_limits(self) -> list[BudgetLimit]:
        short = [("request", self.request_usd), ("session", self.session_usd), ("user", self.user_usd),
                 ("tenant", self.tenant_usd)]
        extra = [BudgetLimit(scope=s, usd=v) for s, v in short if v is not None]  # type: ignore[arg-type]
        return [*self.limits, *extra]


class StateSettings(_Strict):
    """Where a run's state lives: LangGraph checkpoints (paused runs, session history) and tool approvals.

    API replicas that share this database share paused runs and conversations: an approval asked
    on one replica can be decided, and its run resumed, on another.
    """

    #: SQLAlchemy URL (postgresql+psycopg://... or sqlite:///file). None: telemetry.database_url
    #: when that is PostgreSQL, else SQLite files under the data dir (checkpoints.sqlite3, approvals.sqlite3)
    database_url: str | None = None


class LimitSettings(_Strict):
    """Bounds on one request's run; reaching one ends it with LimitExceeded, never a hang."""

    max_steps: int = Field(8, ge=1)
    max_tokens: int = Field(32_000, ge=1)
    max_cost_usd: float = Field(0.10, ge=0)
    max_wall_s: float = Field(180.0, gt=0)
    recursion_limit: int = Field(60, ge=5)


class ToolOverride(_Strict):
    risk: Literal["read", "write", "destructive"] | None = None
    require_approval: bool | None = None
    timeout_s: float | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0)


class ToolSettings(_Strict):
    #: built-in tools offered to the agent; empty list offers none
    enabled: list[str] = Field(default_factory=lambda: [
        "search_knowledge", "calculator", "list_files", "read_file", "delete_file"])
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(1, ge=0)
    #: tools that pause for a person besides every destructive one
    require_approval: list[str] = Field(default_factory=list)
    approval_ttl_s: float = Field(3600.0, gt=0)
    per_tool: dict[str, ToolOverride] = Field(default_factory=dict)


class RouterSettings(_Strict):
    #: ask the judge model when the classifier's top probability is below this
    judge_below: float = Field(0.55, ge=0, le=1)
    judge: bool = True
    #: questions with more words than this take the agent loop
    long_question_words: int = Field(60, ge=5)
    #: the trained router (``keel router train`` writes it); None: <home>/router/model.npz.
    #: Set it to a file baked into the image, or on a read-only mount, to share it without a volume
    model_path: Path | None = None


class GuardrailSettings(_Strict):
    min_groundedness: float = Field(0.75, ge=0, le=1)
    #: share of a sentence's content words one source must hold for the sentence to count as supported
    sentence_support: float = Field(0.6, ge=0, le=1)
    max_reasks: int = Field(1, ge=0, le=3)
    max_input_chars: int = Field(8000, ge=10)
    #: regular expressions that block a question outright
    block_patterns: list[str] = Field(default_factory=list)
    #: retrieved chunks scoring below this are ignored
    min_source_score: float = 0.0


class PromptSettings(_Strict):
    #: a folder of ``<name>.j2`` templates that replace keel's built-ins by name; None: <home>/prompts.
    #: The Helm chart mounts its ``promptTemplates`` here, so replicas need no shared volume for them
    dir: Path | None = None
    #: accepted feedback examples (``keel curation accept``) shown in a fast-path answer prompt,
    #: per question; 0 shows none
    curated_examples: int = Field(2, ge=0, le=8)
    #: an example is shown only when its question is at least this similar to the one asked
    #: (cosine over the router's hashed bag of words: 1 is the same wording)
    curated_min_similarity: float = Field(0.3, ge=0, le=1)
    #: how often a process re-reads the accepted examples, in seconds
    curated_refresh_s: float = Field(30.0, ge=0)


def _default_models() -> dict[str, ModelConfig]:
    return {"local": ModelConfig(provider="local", model="SmolLM2-135M-Instruct")}


class EmbeddingSettings(_Strict):
    """Which model turns text into vectors. Changing it re-embeds on the next ingest."""

    #: local: all-MiniLM-L6-v2 in-process, offline; openai: any OpenAI-compatible /embeddings endpoint
    provider: Literal["local", "openai"] = "local"
    model: str = "all-MiniLM-L6-v2"
    base_url: str | None = None
    #: the NAME of the environment variable holding the key, never the key itself
    api_key_env: str | None = None
    batch_size: int = Field(16, ge=1)
    #: BLAS threads for the local model (1 is fastest on a small, shared machine; 0 = numpy's default)
    threads: int = Field(1, ge=0)


class KnowledgeSettings(_Strict):
    """The knowledge base: store, chunking, retrieval."""

    #: embedded: Chroma PersistentClient under <home>/kb (one process); server: a `chroma run` server
    store: Literal["embedded", "server"] = "embedded"
    server_host: str = "localhost"
    server_port: int = Field(8000, ge=1, le=65535)
    server_ssl: bool = False
    #: SQLAlchemy URL of the catalog (documents, chunk texts, keyword index): postgresql+psycopg://...
    #: so API replicas share it, or sqlite:///file. None: with store server, the state database when
    #: that is PostgreSQL (state.database_url, else telemetry.database_url); else <home>/kb/catalog.sqlite3
    catalog_url: str | None = None
    default_kb: str = "default"
    chunk_tokens: int = Field(500, ge=32)
    chunk_overlap: int = Field(50, ge=0)
    max_file_mb: float = Field(50.0, gt=0)
    #: candidates each retriever contributes before fusion
    candidates: int = Field(50, ge=1)
    #: reciprocal rank fusion constant: higher flattens the weight of the top ranks
    rrf_k: int = Field(60, ge=1)
    #: weights of the vector and keyword lists in the fusion (keyword 0.5: see bench/RESULTS.md, knowledge base)
    vector_weight: float = Field(1.0, ge=0)
    keyword_weight: float = Field(0.5, ge=0)
    embeddings: EmbeddingSettings = EmbeddingSettings()

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_smaller(cls, v: int, info: Any) -> int:
        size = info.data.get("chunk_tokens", 500)
        if v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_tokens ({size})")
        return v


class RateLimitSettings(_Strict):
    """Requests per minute per API key (per client address when no key is sent), on ``/v1`` routes."""

    #: 0: no limit
    per_minute: int = Field(0, ge=0)
    #: sqlite: counters in <home>/ratelimits.sqlite3 (one machine); redis: shared by every replica
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"


class ServerSettings(_Strict):
    """``keel serve``: the HTTP API, OpenAI-compatible endpoint and web UI."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    #: auto: API keys are required once one exists, or whenever the host is not loopback
    auth: Literal["auto", "required", "off"] = "auto"
    cors_origins: list[str] = Field(default_factory=list)
    #: requests larger than this are refused with 413
    max_body_kb: int = Field(256, ge=1)
    ui: bool = True
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    #: a request that runs the graph answers 504 after this long; None: limits.max_wall_s + 30
    request_timeout_s: float | None = Field(None, gt=0)
    #: on SIGTERM, in-flight requests get this long to finish before the process exits
    shutdown_timeout_s: float = Field(30.0, ge=0)
    #: uvicorn worker processes; each loads its own App and model (see docs/server.md)
    workers: int = Field(1, ge=1)

    def timeout_s(self, max_wall_s: float) -> float:
        """How long a graph-running request may take before 504."""
        return self.request_timeout_s if self.request_timeout_s is not None else max_wall_s + 30.0


class JobSettings(_Strict):
    """Background jobs (keel.jobs): an embedded durable SQLite queue, or Celery on Redis or RabbitMQ.

    Either way the job records (status, result, error) live in keel's job table: SQLite under
    the data dir, or ``telemetry.database_url`` when set (PostgreSQL in scale mode).
    """

    #: embedded: worker threads poll the job table; celery: the broker carries job ids to `keel worker`
    backend: Literal["embedded", "celery"] = "embedded"
    #: celery only: redis://host:6379/0 or amqp://user:pass@host:5672//
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: celery only: where Celery keeps its own results; keel never needs them (None: disabled)
    result_backend: str | None = None
    #: celery only: the queue `keel worker` consumes and jobs are sent to
    queue: str = "keel.jobs"
    #: celery only: extra kombu transport options (e.g. {"global_keyprefix": "myapp:"} on Redis)
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    #: worker threads: in-process ones a server starts (embedded), and `keel worker`'s default
    workers: int = Field(1, ge=0)
    #: runs of one job at most: a retryable run error or a lost worker uses one attempt each
    max_attempts: int = Field(3, ge=1)
    #: a job whose worker stopped heartbeating for this long is re-queued (or failed, out of attempts)
    lease_s: float = Field(300.0, gt=0)
    #: wait before a retry: retry_backoff_s * 2 ** (attempt - 1)
    retry_backoff_s: float = Field(5.0, ge=0)
    #: embedded only: how often an idle worker looks for new jobs
    poll_s: float = Field(0.5, gt=0)
    #: how often a running job's worker reads whether the job was cancelled (one row read)
    cancel_check_s: float = Field(1.0, gt=0)


class Settings(BaseSettings):
    """All of keel's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", env_nested_delimiter="__", extra="forbid")

    #: the data directory; every store, cache and trace lives under it
    home: Path | None = None
    models: dict[str, ModelConfig] = Field(default_factory=_default_models)
    #: ordered model chains per role: first is primary, the rest are fallbacks
    roles: dict[str, list[str]] = Field(default_factory=lambda: {"chat": ["local"], "fast": ["local"]})
    gateway: GatewaySettings = GatewaySettings()
    structured: StructuredSettings = StructuredSettings()
    #: sections owned by later subsystems stay free-form dicts until they land
    knowledge: KnowledgeSettings = KnowledgeSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    budgets: BudgetSettings = BudgetSettings()
    state: StateSettings = StateSettings()
    limits: LimitSettings = LimitSettings()
    tools: ToolSettings = ToolSettings()
    router: RouterSettings = RouterSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    prompts: PromptSettings = PromptSettings()
    server: ServerSettings = ServerSettings()
    jobs: JobSettings = JobSettings()

    #: where the file came from (not a setting; filled by load_settings)
    config_path: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # file values arrive through init kwargs at lowest priority via load_settings
        return (env_settings, init_settings)

    @property
    def data_dir(self) -> Path:
        if self.home is not None:
            return self.home
        base = self.config_path.parent if self.config_path else Path.cwd()
        return base / ".keel"

    def resolve(self, path: Path) -> Path:
        """A path from the config file: relative ones are relative to the file's folder."""
        if path.is_absolute():
            return path
        return (self.config_path.parent if self.config_path else Path.cwd()) / path

    @property
    def prompts_dir(self) -> Path:
        """Where prompt templates that replace the built-ins live (``prompts.dir``)."""
        return self.resolve(self.prompts.dir) if self.prompts.dir else self.data_dir / "prompts"

    @property
    def router_model(self) -> Path:
        """The trained router's file (``router.model_path``)."""
        path = self.router.model_path
        return self.resolve(path) if path else self.data_dir / "router" / "model.npz"

    @property
    def workspace(self) -> Path:
        env = os.environ.get("KEEL_WORKSPACE")
        return Path(env) if env else self.data_dir / "workspace"

    def model(self, name: str) -> ModelConfig:
        """The config of a model by name, or of a ``provider:model`` string."""
        if name in self.models:
            return self.models[name]
        provider, sep, model = name.partition(":")
        if sep and provider in ("openai", "anthropic", "local", "fake"):
            key_env = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}.get(provider)
            return ModelConfig(provider=provider, model=model, api_key_env=key_env)  # type: ignore[arg-type]
        known = ", ".join(sorted(self.models)) or "none"
        raise ConfigError(
            f"unknown model {name!r} (configured: {known})",
            hint="add it under models: in keel.yaml, or write it as provider:model, e.g. openai:gpt-4o-mini",
        )

    def chain(self, role: str) -> list[str]:
        """The ordered model names for a role (chat, fast, judge, ...)."""
        chain = self.roles.get(role) or self.roles.get("chat") or ["local"]
        for name in chain:
            self.model(name)  # fail early on a typo
        return chain

    def fingerprint(self) -> str:
        """A hash of the effective configuration, recorded with every decision."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"config_path"}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_config_file(start: Path | None = None) -> Path | None:
    """``KEEL_CONFIG`` if set, else ``keel.yaml`` in the working directory."""
    env = os.environ.get("KEEL_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"KEEL_CONFIG points to {path}, which does not exist", hint="fix or unset KEEL_CONFIG")
        return path
    candidate = (start or Path.cwd()) / CONFIG_FILENAME
    return candidate if candidate.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}",
                          hint="fix the file, or run `keel init` for a fresh one") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level", hint="see `keel init` for the layout")
    return data


def _describe(exc: ValidationError, source: str) -> ConfigError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(f"{source}: {where}: {first['msg']}{more}", hint="see `keel init` for a commented example")


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or the discovered keel.yaml), env and overrides."""
    config_path = Path(path) if path else find_config_file()
    data: dict[str, Any] = {}
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path} does not exist", hint="run `keel init` to create one")
        data = _read_yaml(config_path)
    data.update(overrides)
    if "home" in data and data["home"] is not None and config_path is not None:
        home = Path(data["home"]).expanduser()
        data["home"] = home if home.is_absolute() else config_path.parent / home
    source = str(config_path) if config_path else "settings"
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise _describe(exc, source) from None
    settings.config_path = config_path
    for role in settings.roles:
        settings.chain(role)
    return settings
