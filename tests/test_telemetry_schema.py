"""The telemetry schema: migrations match the tables the code uses, run once, and ship in the package."""

from __future__ import annotations

from importlib import resources

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from keel.errors import ConfigError
from keel.telemetry import _schema
from keel.telemetry._db import VERSION_TABLE, open_engine, upgrade


def test_migrations_create_exactly_the_tables_the_code_uses(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 't.sqlite3'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), _schema.metadata)
        version = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    ours = [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    assert ours == [] and version == "0003" and mode == "wal"


def test_upgrading_twice_is_a_no_op(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 't.sqlite3'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1


def test_migrations_ship_inside_the_package():
    root = resources.files("keel.telemetry") / "migrations"
    assert (root / "env.py").is_file() and (root / "script.py.mako").is_file()
    assert (root / "versions" / "0001_telemetry_tables.py").is_file()
    assert (root / "versions" / "0002_span_batches.py").is_file()
    assert (root / "versions" / "0003_model_call_prompt.py").is_file()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.scale)])
def store_url(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 't.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_spans_stored_one_per_row_move_into_batches_and_back(store_url):
    """A trace store written before 0002 (a row per span) keeps every span across the upgrade."""
    from keel.telemetry._writer import BatchWriter
    from keel.telemetry.traces import TraceStore

    engine = sa.create_engine(store_url)
    upgrade(engine, "0001")
    span = {"trace_id": "a" * 32, "kind": "CHAIN", "status": "ok", "status_message": None, "events": "[]"}
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO keel_spans VALUES (:span_id, :trace_id, :parent_id, :name, :kind, :start_time, "
            ":duration_ms, :status, :status_message, :attributes, :events)"), [
            {**span, "span_id": "1" * 16, "parent_id": None, "name": "keel.ask", "start_time": 100.0,
             "duration_ms": 2000.0, "attributes": '{"user.id": "dana"}'},
            {**span, "span_id": "2" * 16, "parent_id": "1" * 16, "name": "router", "start_time": 100.5,
             "duration_ms": 10.0, "attributes": '{"keel.route": "fast"}'},
        ])
    upgrade(engine)
    store = TraceStore(engine, BatchWriter(engine))
    [summary] = store.list()
    [root] = store.tree("a" * 32)
    assert (summary.spans, summary.duration_ms, root.attributes) == (2, 2000.0, {"user.id": "dana"})
    assert [(c.name, c.attributes) for c in root.children] == [("router", {"keel.route": "fast"})]
    upgrade_down(engine, "0001")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT span_id, parent_id, attributes FROM keel_spans ORDER BY span_id")).all()
    assert rows == [("1" * 16, None, '{"user.id":"dana"}'), ("2" * 16, "1" * 16, '{"keel.route":"fast"}')]
    engine.dispose()


def upgrade_down(engine: sa.Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from keel.telemetry import _db

    cfg = Config()
    cfg.set_main_option("script_location", str(_db._MIGRATIONS))
    cfg.attributes["version_table"] = VERSION_TABLE
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


@pytest.mark.parametrize(
    ("url", "hint"),
    [("not a url", "sqlite:///"), ("mysql://u@h/db", "sqlite and postgresql")],
)
def test_a_bad_database_url_is_a_config_error(url, hint):
    with pytest.raises(ConfigError) as info:
        open_engine(url)
    assert hint in str(info.value)


def test_the_documented_keel_yaml_example_loads():
    import textwrap

    import yaml

    import keel.telemetry
    from keel.config import load_settings

    example = textwrap.dedent(keel.telemetry.__doc__.split("every key optional)::")[1])
    settings = load_settings(**yaml.safe_load(example))
    assert [r.name for r in settings.telemetry.alerts] == ["spend", "errors"]
    assert (settings.telemetry.audit.store_text, settings.telemetry.sample_ratio) == (False, 0.2)
    assert [(b.scope, b.usd, b.per) for b in settings.budgets.all_limits()] == [
        ("user", 5.0, "day"),
        ("global", 200.0, "month"),
        ("request", 0.5, None),
    ]


def test_a_row_that_cannot_be_built_is_logged_and_the_rest_is_written(tmp_path, caplog):
    from keel.telemetry._writer import BatchWriter

    engine = open_engine(f"sqlite:///{tmp_path / 't.sqlite3'}")
    writer = BatchWriter(engine)
    good = {"seq": 1, "ts": "t", "event": "e", "data": "{}", "prev_hash": "0", "hash": "h"}
    writer.put(_schema.audit, lambda: 1 / 0)
    writer.put(_schema.audit, good)
    writer.flush()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT event FROM keel_audit")).scalars().all() == ["e"]
    assert "dropped a row that could not be built" in caplog.text


def test_every_name_in_keel_telemetry_all_resolves():
    import keel.telemetry

    assert keel.telemetry.__all__ == sorted(keel.telemetry.__all__)
    for name in keel.telemetry.__all__:
        assert getattr(keel.telemetry, name) is not None, name
    with pytest.raises(AttributeError):
        _ = keel.telemetry.nothing_here


def test_a_new_store_uses_16kb_pages_and_an_existing_one_keeps_its_own(tmp_path):
    import sqlite3

    old = tmp_path / "old.sqlite3"
    sqlite3.connect(old).execute("CREATE TABLE t (x)").connection.close()  # 4 KB pages, as before
    for path, size in ((tmp_path / "new.sqlite3", 16384), (old, 4096)):
        with open_engine(f"sqlite:///{path}").connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar() == size
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_periodic_chores_run_on_the_writer_thread_and_stop_with_their_owner(caplog):
    import gc
    import time

    from keel.telemetry import _writer

    class Chore:
        def __init__(self, fail: bool = False) -> None:
            self.runs, self.fail = 0, fail

        def run(self) -> None:
            self.runs += 1
            if self.fail:
                raise RuntimeError("boom")

    kept, failing, dropped = Chore(), Chore(fail=True), Chore()
    for chore in (kept, failing, dropped):
        _writer.every(0.05, chore.run)
    dropped_entry = _writer._periodic[-1]
    del dropped, chore  # the loop variable held it too
    gc.collect()
    deadline = time.monotonic() + 10
    while (kept.runs < 2 or failing.runs < 2) and time.monotonic() < deadline:
        _writer.wake()
        time.sleep(0.05)
    assert kept.runs >= 2 and failing.runs >= 2  # a chore that raised runs again next period
    assert "a periodic task failed" in caplog.text
    assert dropped_entry not in _writer._periodic  # its owner is gone: so is the chore
    _writer._periodic[:] = [t for t in _writer._periodic if t[1]() not in (kept.run, failing.run)]


def test_cost_rows_written_before_0003_get_their_prompt_from_their_meta(store_url):
    """`keel costs --by prompt` covers the calls made before the column existed; a row whose meta
    names no prompt stays without one."""
    from keel.telemetry._writer import BatchWriter
    from keel.telemetry.costs import CostStore

    engine = sa.create_engine(store_url)
    upgrade(engine, "0002")
    row = {"ts": 100.0, "day": "2026-11-30", "model": "m", "ok": True, "cached": False, "attempt": 1,
           "latency_ms": 5.0, "input_tokens": 10, "output_tokens": 2, "cached_tokens": 0}
    with engine.begin() as conn:
        conn.execute(sa.insert(sa.table("keel_model_calls", *(sa.column(k) for k in (*row, "cost_usd", "meta")))), [
            {**row, "cost_usd": 0.01, "meta": '{"prompt": "answer_sources", "prompt_version": "00b1a0717d7a"}'},
            {**row, "cost_usd": 0.02, "meta": '{"prompt": "answer_sources", "prompt_version": "00b1a0717d7a"}'},
            {**row, "cost_usd": 0.04, "meta": '{"prompt": "route_judge", "prompt_version": "51d70d82d677"}'},
            {**row, "cost_usd": 0.08, "meta": '{"purpose": "extract"}'},
        ])
    upgrade(engine)
    rows = CostStore(engine, BatchWriter(engine)).summary("prompt")
    by_prompt = {r["key"]: (r["calls"], r["cost_usd"]) for r in rows}
    assert by_prompt == {"answer_sources@00b1a0717d7a": (2, 0.03), "route_judge@51d70d82d677": (1, 0.04),
                         None: (1, 0.08)}
    upgrade_down(engine, "0002")
    with engine.connect() as conn:
        assert "prompt" not in {c["name"] for c in sa.inspect(conn).get_columns("keel_model_calls")}
    engine.dispose()
