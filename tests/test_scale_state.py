"""Request state shared by API replicas: checkpoints and approvals in PostgreSQL, the response
cache in Redis. Two Apps with their own KEEL_HOME (as two replicas have) pause a run on one
and resume it on the other, against the real servers on this machine (``scale`` marker)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keel import App
from keel.config import load_settings
from keel.errors import ApprovalRequired, ConfigError, MissingDependency
from keel.graph import by_purpose
from keel.graph.factory import build_approvals, build_checkpointer, libpq_conninfo, state_database_url
from keel.models.base import ChatResponse, Usage
from keel.models.cache import MemoryCache, RedisCache, SQLiteCache, build_cache
from keel.models.fake import FunctionProvider
from keel.tools import ApprovalInvalid, ApprovalStore
from keel.tools.approvals import StateUnavailable

REDIS = "redis://127.0.0.1:6379/13"  # a db of its own; keys are removed after each test
#: nothing listens on port 1: a server that cannot be reached
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/test"
PG = "postgresql+psycopg://keel:pw@db:5432/keel"


# -- which database: the one rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "telemetry", "expected"),
    [
        (None, None, None),  # SQLite files under the data dir
        (None, "sqlite:///elsewhere/telemetry.sqlite3", None),  # a SQLite trace store moves nothing
        (None, PG, PG),  # scale mode: one URL shares everything
        ("sqlite:///state.sqlite3", PG, "sqlite:///state.sqlite3"),  # an explicit state URL wins
        ("postgresql+psycopg://other@db2/state", None, "postgresql+psycopg://other@db2/state"),
    ],
)
def test_state_database_is_state_url_else_a_postgresql_telemetry_url_else_sqlite(
    state: str | None, telemetry: str | None, expected: str | None
) -> None:
    settings = load_settings(state={"database_url": state}, telemetry={"database_url": telemetry})
    assert state_database_url(settings) == expected


def test_default_state_stays_in_the_sqlite_files_under_home(keel_home: Path) -> None:
    settings = load_settings()
    store = build_approvals(settings)
    saver = build_checkpointer(settings)
    assert store.engine.url.database == str(keel_home / "approvals.sqlite3")
    assert type(saver).__name__ == "SqliteSaver" and (keel_home / "checkpoints.sqlite3").is_file()


def test_an_explicit_sqlite_state_url_holds_both_in_that_file(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "state.sqlite3"
    settings = load_settings(state={"database_url": f"sqlite:///{path}"})
    build_approvals(settings).create(run_id="r", tool="delete_file", args={}, requester="ann", ttl_s=60)
    build_checkpointer(settings).setup()
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {"approvals", "checkpoints", "writes"} <= tables


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"state": {"database_url": "not a url"}}, "state.database_url 'not a url' is not a database URL"),
        ({"state": {"database_url": "mysql://db/keel"}}, "state.database_url uses 'mysql'"),
        ({"telemetry": {"database_url": "nope"}}, "telemetry.database_url 'nope' is not a database URL"),
    ],
)
def test_a_bad_state_url_is_a_config_error(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_checkpointer(load_settings(**settings))
    assert caught.value.hint


def test_the_libpq_connection_string_keeps_password_port_and_options() -> None:
    conninfo = libpq_conninfo("postgresql+psycopg://keel:p%40ss w@db:6543/keel?options=-csearch_path%3Dx")
    assert conninfo.split() == ["host=db", "dbname=keel", "user=keel", "password='p@ss", "w'", "port=6543",
                                "options=-csearch_path=x"]


# -- typed errors: unreachable server, missing driver ---------------------------------------------


def test_an_unreachable_checkpoint_database_says_what_to_do() -> None:
    settings = load_settings(state={"database_url": UNREACHABLE_PG})
    with pytest.raises(StateUnavailable) as caught:
        build_checkpointer(settings)
    err = caught.value
    assert err.to_dict()["error"] == "state_unavailable" and err.http_status == 503 and err.exit_code == 1
    assert err.message.startswith("the checkpoint database postgresql+psycopg://postgres@127.0.0.1:1/test cannot")
    assert err.hint == ("start PostgreSQL or fix state.database_url (default: telemetry.database_url when it is "
                        "PostgreSQL); paused runs and sessions live there")


def test_an_unreachable_approvals_database_says_what_to_do_and_hides_the_password() -> None:
    with pytest.raises(StateUnavailable) as caught:
        ApprovalStore("postgresql+psycopg://keel:secret@127.0.0.1:1/keel")
    assert "keel:***@127.0.0.1:1/keel cannot be used" in caught.value.message and "secret" not in str(caught.value)
    assert "state.database_url" in (caught.value.hint or "")


@pytest.mark.parametrize("module", ["langgraph.checkpoint.postgres", "psycopg_pool"])
def test_without_the_scale_extra_the_checkpointer_names_the_install(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, module, None)
    with pytest.raises(MissingDependency) as caught:
        build_checkpointer(load_settings(state={"database_url": UNREACHABLE_PG}))
    assert caught.value.hint == 'pip install "keel[scale]"'


# -- the response cache backends ------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    prefix = f"keel-test:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(REDIS)
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _response(text: str) -> ChatResponse:
    return ChatResponse(text=text, model="m", usage=Usage(input_tokens=3, output_tokens=1))


def test_cache_backend_chooses_the_cache(tmp_path: Path) -> None:
    def cache(**cfg: Any) -> Any:
        return build_cache(load_settings(gateway={"cache": cfg}).gateway.cache, tmp_path)

    assert isinstance(cache(), SQLiteCache) and (tmp_path / "cache.sqlite3").is_file()
    assert isinstance(cache(backend="memory"), MemoryCache)
    redis_cache = cache(backend="redis", redis_url=REDIS, key_prefix="p:", ttl_s=60)
    assert isinstance(redis_cache, RedisCache) and (redis_cache.prefix, redis_cache.ttl_s) == ("p:", 60)
    assert cache(enabled=False, backend="redis") is None
    with pytest.raises(ConfigError, match="gateway.cache.redis_url 'http://x' is not a Redis URL"):
        cache(backend="redis", redis_url="http://x")


@pytest.mark.scale
def test_redis_cache_is_shared_and_expires(redis_prefix: str) -> None:
    one, two = RedisCache(REDIS, ttl_s=30, prefix=redis_prefix), RedisCache(REDIS, ttl_s=30, prefix=redis_prefix)
    one.put("k", _response("cached"))
    assert two.get("k") == _response("cached") and two.get("other") is None
    assert 0 < two._redis.ttl(redis_prefix + "k") <= 30


def test_an_unreachable_redis_cache_is_a_logged_miss_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCache("redis://127.0.0.1:1/0", ttl_s=30)
    with caplog.at_level(logging.WARNING, logger="keel.models.cache"):
        cache.put("k", _response("x"))
        assert cache.get("k") is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["response cache at redis"]  # once per outage


# -- the approval store on PostgreSQL ---------------------------------------------------------------


@pytest.mark.scale
def test_postgres_approvals_keep_their_invariants_across_two_stores(pg_url: str) -> None:
    a, b = ApprovalStore(pg_url), ApprovalStore(pg_url)  # two replicas' stores
    args = {"path": "notes.txt"}
    made = a.create(run_id="r1", tool="delete_file", args=args, requester="ann", ttl_s=60)
    assert b.list("pending") == [made] and b.get(made.id) == made
    assert b.decide(made.id, approve=True, approver="boss").status == "approved"
    with pytest.raises(ApprovalInvalid, match="already approved by boss"):
        a.decide(made.id, approve=False, approver="mallory")
    with pytest.raises(ApprovalInvalid, match="altered"):
        a.consume(made.id, tool="delete_file", args={"path": "other.txt"})
    assert a.consume(made.id, tool="delete_file", args=args).decided_by == "boss"
    with pytest.raises(ApprovalInvalid, match="is used"):
        b.consume(made.id, tool="delete_file", args=args)
    short = a.create(run_id="r2", tool="delete_file", args=args, requester="ann", ttl_s=0.01)
    threading.Event().wait(0.05)
    assert b.decide(short.id, approve=True, approver="boss").status == "expired"


@pytest.mark.scale
def test_concurrent_decisions_from_two_replicas_have_exactly_one_winner(pg_url: str) -> None:
    stores = [ApprovalStore(pg_url), ApprovalStore(pg_url)]
    made = stores[0].create(run_id="r1", tool="delete_file", args={}, requester="ann", ttl_s=60)
    start = threading.Barrier(8)
    wins: list[str] = []
    losses: list[str] = []

    def decide(n: int) -> None:
        start.wait()
        try:
            stores[n % 2].decide(made.id, approve=n % 3 != 0, approver=f"p{n}")
            wins.append(f"p{n}")
        except ApprovalInvalid as exc:
            losses.append(exc.message)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert stores[1].get(made.id).decided_by == wins[0]
    assert all(m.startswith(f"approval {made.id} is already ") and m.endswith(f" by {wins[0]}") for m in losses)


# -- two replicas: pause on A, approve and finish on B ------------------------------------------------


REPLIES = {
    "answer": ["Hello Ann!"],
    "agent_step": ["Done: deleted notes.txt."],
    "route_judge": ['{"label": "chat", "why": "small talk"}'],
}
#: priced like a small remote model (a free one is tested on its own below)
PRICED = {"provider": "fake", "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6}


def _replica(home: Path, pg_url: str, redis_prefix: str, replies: dict[str, Any],
             model: dict[str, Any] = PRICED) -> tuple[App, FunctionProvider]:
    provider = FunctionProvider(by_purpose(replies), name="scripted")
    app = App(
        providers={"scripted": provider},
        home=home,
        models={"scripted": model},
        roles={"chat": ["scripted"], "fast": ["scripted"]},
        # the one URL a scale deployment sets; state follows it (state.database_url unset)
        telemetry={"database_url": pg_url},
        gateway={"cache": {"backend": "redis", "redis_url": REDIS, "key_prefix": redis_prefix}},
        budgets={"backend": "redis", "redis_url": REDIS, "request_usd": 1.0},
    )
    return app, provider


@pytest.fixture
def replicas(
    tmp_path: Path, pg_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[App, App, FunctionProvider, FunctionProvider]]:
    import redis

    monkeypatch.delenv("KEEL_HOME")  # each replica its own data dir, as on two machines
    monkeypatch.setenv("KEEL_WORKSPACE", str(tmp_path / "ws"))  # where the tool acts, outside both homes
    (tmp_path / "ws").mkdir()
    client = redis.Redis.from_url(REDIS)
    before = set(client.keys())
    a, pa = _replica(tmp_path / "home-a", pg_url, redis_prefix, {**REPLIES, "answer": ["Hello Ann!"]})
    b, pb = _replica(tmp_path / "home-b", pg_url, redis_prefix, {**REPLIES, "answer": ["Your name is Ann."]})
    yield a, b, pa, pb
    _close(a, b)
    budget_keys = set(client.keys()) - before  # the budget counters this test made
    if budget_keys:
        client.delete(*budget_keys)
    client.close()


def _close(*apps: App) -> None:
    for app in apps:
        if "runtime" in app.__dict__:
            app.runtime.graph.checkpointer.conn.close()  # the saver's connection pool
        app.telemetry.flush()



@pytest.mark.scale
def test_a_run_paused_on_one_replica_is_approved_and_finished_on_another(
    replicas: tuple[App, App, FunctionProvider, FunctionProvider], tmp_path: Path
) -> None:
    a, b, pa, pb = replicas
    notes = tmp_path / "ws" / "notes.txt"
    notes.write_text("x")

    paused = a.ask("delete notes.txt in the workspace", user="ann")
    assert paused.status == "pending_approval" and isinstance(paused.exception, ApprovalRequired)
    approval_id = paused.approval["id"]  # type: ignore[index]
    assert paused.approval == {"id": approval_id, "tool": "delete_file", "args": {"path": "notes.txt"},
                               "expires_at": paused.approval["expires_at"]}  # type: ignore[index]
    assert notes.exists()

    assert [(x.id, x.status, x.requester) for x in b.approvals("pending")] == [(approval_id, "pending", "ann")]
    done = b.approve(approval_id, by="boss")
    assert (done.status, done.answer, done.run_id) == ("answered", "Done: deleted notes.txt.", paused.run_id)
    assert not notes.exists()
    assert [p.metadata["purpose"] for p in pb.requests] == ["agent_step"]  # B finished the run A began
    assert [(x.id, x.status, x.decided_by) for x in a.approvals()] == [(approval_id, "used", "boss")]

    for app in (a, b):  # a second decision, on either replica, fails cleanly
        with pytest.raises(ApprovalInvalid, match=f"approval {approval_id} is already used by boss"):
            app.approve(approval_id, by="boss")
    assert not (tmp_path / "home-a" / "approvals.sqlite3").exists()
    assert not (tmp_path / "home-b" / "checkpoints.sqlite3").exists()


@pytest.mark.scale
def test_a_session_continued_on_another_replica_sees_the_earlier_turns(
    replicas: tuple[App, App, FunctionProvider, FunctionProvider],
) -> None:
    a, b, pa, pb = replicas
    first = a.ask("hello, I am Ann", session="c1", user="ann")
    second = b.ask("nice to meet you, what is my name", session="c1", user="ann")
    assert (first.answer, second.answer) == ("Hello Ann!", "Your name is Ann.")
    [request] = [r for r in pb.requests if r.metadata["purpose"] == "answer"]
    turns = [m.content for m in request.messages if m.role in ("user", "assistant")]
    assert turns[:2] == ["hello, I am Ann", "Hello Ann!"]

    # the same deterministic call A made for the first turn, now on B: answered from the Redis cache
    third = b.ask("hello, I am Ann", session="c2", user="ann")
    assert third.answer == "Hello Ann!" and len([r for r in pb.requests if r.metadata["purpose"] == "answer"]) == 1


@pytest.mark.scale
def test_an_answer_up_voted_on_one_replica_and_accepted_on_another_shapes_the_next_prompt_there(
    replicas: tuple[App, App, FunctionProvider, FunctionProvider],
) -> None:
    """The feedback loop across replicas: the vote, the curator's decision and the next similar
    question each land on a different process; PostgreSQL is all they share."""
    a, b, pa, pb = replicas
    b.curated_examples.refresh_s = 0  # type: ignore[union-attr]  # re-read at every question, not every 30 s
    assert b.ask("hi", user="bob").answer == "Your name is Ann."  # B has read the (empty) accepted set
    first = a.ask("hello, how are you today?", user="ann")
    vote = a.telemetry.feedback.record(first.trace_id, "up")
    a.telemetry.flush()
    [candidate] = b.telemetry.feedback.curation_queue()
    assert candidate["id"] == vote.curation_id
    b.telemetry.feedback.curate(candidate["id"], accept=True)
    b.ask("hello, how are you?", user="bob")
    prompt = [r for r in pb.requests if r.metadata["purpose"] == "answer"][-1].messages[0].content
    assert "Q: hello, how are you today?\nA: Hello Ann!" in prompt


@pytest.mark.scale
def test_redis_budgets_settle_a_free_models_call(tmp_path: Path, pg_url: str, redis_prefix: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    monkeypatch.delenv("KEEL_HOME")
    client = redis.Redis.from_url(REDIS)
    before = set(client.keys())
    app, _ = _replica(tmp_path / "home", pg_url, redis_prefix, REPLIES, model={"provider": "fake"})
    try:
        assert app.ask("hello, I am Ann").answer == "Hello Ann!"
    finally:
        _close(app)
        made = set(client.keys()) - before
        if made:
            client.delete(*made)
        client.close()


def test_docs_scale_md_settings_are_real(tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "scale.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (tmp_path / "keel.yaml").write_text(block)
    settings = load_settings(tmp_path / "keel.yaml")
    assert state_database_url(settings) == settings.telemetry.database_url
    assert (settings.gateway.cache.backend, settings.budgets.backend) == ("redis", "redis")
    for var in set(re.findall(r"KEEL_[A-Z_]+", text)):  # every variable it names is a setting
        obj: Any = settings
        for part in var.removeprefix("KEEL_").lower().split("__"):
            assert hasattr(obj, part), var
            obj = getattr(obj, part)
