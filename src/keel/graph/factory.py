"""Build the runtime from settings: the defaults a user gets with no code at all.

Everything can be passed in instead (retriever, audit hook, tracer, extra
tools, checkpointer, approval store), which is how App, the server and tests
inject their own.

A run's state (LangGraph checkpoints: paused runs and session history; tool
approvals) lives in the ``state`` database, see :func:`state_database_url`:
SQLite files under the data dir by default, PostgreSQL in scale mode so that
every API replica sees the same paused runs and conversations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from opentelemetry.trace import Tracer

from ..config import Settings
from ..errors import ConfigError, MissingDependency
from ..guardrails import QualityGuard
from ..knowledge.types import Retriever, SearchHit
from ..models.gateway import Gateway
from ..prompts import CuratedExamples, FewShotSelector, PromptLibrary, load_examples
from ..router import HashedBagOfWords, Router, load_classifier
from ..tools import ApprovalStore, Tool, ToolContext, Workspace, build_registry
from ..tools.approvals import StateUnavailable, redacted
from .deps import AuditHook, GraphDeps, no_audit
from .runtime import GraphRuntime
from .tracing import default_tracer

__all__ = [
    "SearchFunctionRetriever",
    "build_approvals",
    "build_checkpointer",
    "build_prompts",
    "build_runtime",
    "postgres_checkpointer",
    "sqlite_checkpointer",
    "state_database_url",
]

#: pg_advisory_lock key that serialises LangGraph's checkpoint migrations when replicas start together
_SETUP_LOCK = 0x6B65656C_636B7074  # "keelckpt"


class SearchFunctionRetriever:
    """Adapts a ``search(query, kb=, k=)`` function (such as ``App.search``) to the Retriever protocol."""

    def __init__(self, search: Callable[..., list[SearchHit]]) -> None:
        self._search = search

    def search(
        self, query: str, *, kb: str = "default", k: int = 5, where: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        return self._search(query, kb=kb, k=k)


def sqlite_checkpointer(path: Path) -> Any:
    """LangGraph's SQLite saver on one shared connection (the saver serialises access itself)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn)


def state_database_url(settings: Settings) -> str | None:
    """The database holding checkpoints and approvals; None means SQLite files under the data dir.

    One rule: ``state.database_url`` if set; else ``telemetry.database_url`` when that is
    PostgreSQL (a scale deployment sets one URL and gets traces, jobs, keys, approvals and
    checkpoints shared); else None (a SQLite telemetry file does not move the state files).
    """
    if settings.state.database_url:
        return settings.state.database_url
    url = settings.telemetry.database_url
    if url and _backend(url, "telemetry.database_url") == "postgresql":
        return url
    return None


def _backend(url: str, setting: str) -> str:
    try:
        backend = sa.engine.make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"{setting} {url!r} is not a database URL",
            hint="use sqlite:///path/file.sqlite3 or postgresql+psycopg://user@host/db",
        ) from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"{setting} uses {backend!r}", hint="keel's state database is sqlite or postgresql")
    return backend


def build_approvals(settings: Settings) -> ApprovalStore:
    url = state_database_url(settings)
    return ApprovalStore(url) if url else ApprovalStore.sqlite(settings.data_dir / "approvals.sqlite3")


def build_checkpointer(settings: Settings) -> Any:
    """LangGraph's Postgres saver on the state database, or its SQLite saver (one machine)."""
    url = state_database_url(settings)
    if url is None:
        return sqlite_checkpointer(settings.data_dir / "checkpoints.sqlite3")
    if _backend(url, "state.database_url") == "sqlite":
        database = sa.engine.make_url(url).database
        if not database or database == ":memory:":
            raise ConfigError("state.database_url must name a SQLite file", hint="e.g. sqlite:////data/state.sqlite3")
        return sqlite_checkpointer(Path(database))
    return postgres_checkpointer(url)


def libpq_conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (postgresql+psycopg://...) as a libpq connection string."""
    from psycopg.conninfo import make_conninfo

    parsed = sa.engine.make_url(url)
    args = parsed.translate_connect_args(username="user", database="dbname")
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    return make_conninfo("", **{k: str(v) for k, v in {**args, **query}.items()})


def postgres_checkpointer(url: str, *, max_connections: int = 4, connect_timeout_s: int = 10) -> Any:
    """LangGraph's PostgresSaver on a small connection pool, its tables created (once) if missing.

    Raises MissingDependency without the ``scale`` extra, StateUnavailable when the server
    cannot be reached; a server lost later surfaces as StateUnavailable from the run.
    """
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool
    except ModuleNotFoundError:
        raise MissingDependency("LangGraph's PostgreSQL checkpointer (langgraph-checkpoint-postgres, psycopg)",
                                "scale") from None
    conninfo = libpq_conninfo(url)

    def unavailable(exc: Exception) -> StateUnavailable:
        return StateUnavailable(
            f"the checkpoint database {redacted(url)} cannot be used: {str(exc).strip()}",
            hint="start PostgreSQL or fix state.database_url (default: telemetry.database_url when it is "
            "PostgreSQL); paused runs and sessions live there",
        )

    class Saver(PostgresSaver):
        """PostgresSaver whose database errors leave as keel's StateUnavailable."""

        @contextmanager
        def _cursor(self, *, pipeline: bool = False) -> Iterator[Any]:
            try:
                with super()._cursor(pipeline=pipeline) as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                raise unavailable(exc) from None

    try:
        with psycopg.connect(conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row,
                             connect_timeout=connect_timeout_s) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))  # released when conn closes
            Saver(conn).setup()
    except psycopg.OperationalError as exc:
        raise unavailable(exc) from None
    pool = ConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_connections,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=ConnectionPool.check_connection,
        timeout=connect_timeout_s,
        name="keel-checkpoints",
        open=True,
    )
    return Saver(pool)


def build_router(settings: Settings) -> Router:
    featurizer = HashedBagOfWords()
    if settings.router.model_path is not None and not settings.router_model.is_file():
        raise ConfigError(
            f"router.model_path {settings.router_model} does not exist",
            hint="train one there with `keel router train FILE`, or unset router.model_path for the default",
        )
    return Router(load_classifier(settings.router_model, featurizer), featurizer, settings.router)


def build_prompts(settings: Settings) -> PromptLibrary:
    """The templates the settings name: the built-ins, replaced by those in ``prompts.dir`` (which must
    exist when set) or in ``<home>/prompts``."""
    return PromptLibrary(settings.prompts_dir, required=settings.prompts.dir is not None)


def build_runtime(
    settings: Settings,
    gateway: Gateway,
    *,
    retriever: Retriever | None = None,
    audit: AuditHook = no_audit,
    tracer: Tracer | None = None,
    extra_tools: list[Tool] | None = None,
    checkpointer: Any = None,
    approvals: ApprovalStore | None = None,
    guard: QualityGuard | None = None,
    kb: str = "default",
    curated: CuratedExamples | None = None,
) -> GraphRuntime:
    tools = build_registry(settings.tools, extra_tools)
    deps = GraphDeps(
        settings=settings,
        gateway=gateway,
        router=build_router(settings),
        tools=tools,
        tool_context=ToolContext(Workspace(settings.workspace), retriever, kb),
        approvals=approvals or build_approvals(settings),
        guard=guard or QualityGuard(settings.guardrails),
        prompts=build_prompts(settings),
        examples=FewShotSelector(load_examples("agent")),
        retriever=retriever,
        audit=audit,
        tracer=tracer or default_tracer(),
        curated=curated,
    )
    if "judge" not in gateway.chains:
        deps.judge_role = "fast"
    return GraphRuntime(deps, checkpointer or build_checkpointer(settings))
