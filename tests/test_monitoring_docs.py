"""docs/monitoring.md stays true: its commands parse with the real CLI (and the read-only ones run),
its YAML loads as keel settings, every setting, metric, alert metric and cost grouping it names
exists, and the webhook payload and the audit-verify messages it shows are what keel produces."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from keel.cli import app as cli

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "monitoring.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def _keel_command_lines() -> list[str]:
    """Every line of the page's sh blocks that runs keel (a leading ``KEEL_X=...`` taken off)."""
    found = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            if re.match(r"(?:[A-Z_][A-Z0-9_]*=\S+\s+)*keel\s", line):
                words = shlex.split(line, comments=True)
                while words[0] != "keel":
                    words.pop(0)
                found.append(shlex.join(words))
    return found


def _parse(line: str) -> tuple[list[str], dict[str, Any]]:
    """Parse a command line with keel's real typer/click commands, without running it:
    (the command path, its parsed parameters). Raises the CLI's usage error if it does not parse."""
    command: Any = get_command(cli)
    ctx = command.make_context("keel", shlex.split(line)[1:])
    path = ["keel"]
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    assert not ctx.args, f"{line}: left over {ctx.args}"
    return path, ctx.params


def test_the_page_shows_the_commands_it_is_about():
    paths = {" ".join(_parse(line)[0][1:]) for line in _keel_command_lines()}
    assert {"ask", "traces list", "traces show", "traces prune", "costs", "budgets", "feedback", "curation",
            "curation accept", "curation evals", "eval", "audit verify", "audit export", "serve"} <= paths


@pytest.mark.parametrize("line", _keel_command_lines())
def test_every_keel_command_line_parses(line: str) -> None:
    path, _ = _parse(line)  # a usage error would raise here
    command: Any = get_command(cli)
    for name in path[1:]:
        command = command.commands[name]  # a real keel command, reached by name
    declared = {opt for param in command.params for opt in param.opts}
    given = {w.split("=")[0] for w in shlex.split(line) if w.startswith("--")}
    assert len(path) >= 2 and given <= declared, (line, sorted(given - declared))


def test_the_refusals_of_the_parser_are_real() -> None:  # the check above would catch a wrong page
    from typer._click.exceptions import UsageError

    for bad in ("keel costs --by-user", "keel traces nope", "keel feedback 0123", "keel traces prune"):
        with pytest.raises(UsageError):
            _parse(bad)


#: commands that only read (or prune an empty store): run for real in a scratch home
_READ_ONLY = {("traces",), ("traces", "list"), ("traces", "prune"), ("costs",), ("budgets",), ("curation",),
              ("audit", "verify"), ("audit", "export")}


def test_the_read_only_commands_run_in_a_scratch_home(keel_home: Path, tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text(
        "models: {m: {provider: fake, replies: ['Python was created by Guido van Rossum.'],"
        " input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}}\n"
        "roles: {chat: [m], fast: [m]}\n"
        "budgets: {limits: [{scope: user, usd: 5, per: day}]}\n"
    )
    runner = CliRunner()
    seeded = runner.invoke(cli, ["ask", "Who created Python?", "--user", "ann", "--json"])
    assert seeded.exit_code == 0, seeded.output
    ran = []
    for line in _keel_command_lines():
        path, params = _parse(line)
        if tuple(path[1:]) not in _READ_ONLY or any(isinstance(v, Path) and not v.exists()
                                                    for k, v in params.items() if k == "file"):
            continue
        result = runner.invoke(cli, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
        ran.append(line)
    assert len(ran) >= 8, ran


def test_every_yaml_block_loads_as_keel_settings(tmp_path: Path) -> None:
    from keel.config import load_settings

    blocks = _blocks("yaml")
    assert len(blocks) >= 3
    for n, block in enumerate(blocks):
        path = tmp_path / f"block{n}.yaml"
        path.write_text(block)
        load_settings(path)  # raises ConfigError on an unknown key or a bad value


def _setting(path: str) -> bool:
    """Whether ``telemetry.audit.store_text`` (say) is a real setting."""
    from pydantic import BaseModel

    from keel.config import Settings

    model: Any = Settings
    for part in path.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def test_every_setting_the_page_names_exists() -> None:
    named = set(re.findall(r"`((?:telemetry|budgets|limits|server|prompts)\.[a-z_.]+)`", DOC))
    assert len(named) >= 20
    missing = sorted(p for p in named if not _setting(p))
    assert not missing, missing
    table = set(re.findall(r"^\| `((?:telemetry|budgets|prompts)\.[a-z_.]+)`", DOC, flags=re.M))
    from keel.config import AuditSettings, BudgetSettings, PromptSettings, TelemetrySettings

    every = ({f"telemetry.{k}" for k in TelemetrySettings.model_fields if k != "audit"}
             | {f"telemetry.audit.{k}" for k in AuditSettings.model_fields}
             | {f"budgets.{k}" for k in BudgetSettings.model_fields}
             | {f"prompts.{k}" for k in PromptSettings.model_fields})
    documented = table | set(re.findall(r"`(budgets\.[a-z]+_usd)`", DOC))
    assert every <= documented, sorted(every - documented)  # the settings table is complete


def _registry_names() -> set[str]:
    """Every series name keel's /metrics can expose (HTTP series included)."""
    from keel.server._metrics import http_metrics
    from keel.telemetry import Metrics

    registry = Metrics().registry
    http_metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def test_every_metric_the_page_names_is_exported_and_every_series_is_documented() -> None:
    from keel.telemetry import _schema

    tables = set(_schema.metadata.tables)
    names = _registry_names()
    named = set(re.findall(r"\bkeel_[a-z_]+[a-z]\b", DOC)) - tables
    assert named <= names, sorted(named - names)
    documented = set(re.findall(r"^\| `(keel_[a-z_]+)` \|", DOC, flags=re.M))
    exposed = {n for n in names if n.endswith(("_total", "_seconds", "_firing", "_in_flight"))}
    assert exposed == documented, (sorted(exposed - documented), sorted(documented - exposed))


def test_the_alert_metrics_and_cost_groupings_are_the_real_ones() -> None:
    from typing import get_args

    from keel.config import AlertRule
    from keel.telemetry.costs import GROUPINGS

    alert_metrics = set(get_args(AlertRule.model_fields["metric"].annotation))
    section = DOC.split("## Alerts")[1].split("## ")[0]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)) - {"metric"}  # the table's header
    assert rows == alert_metrics
    costs = DOC.split("## Costs")[1].split("## ")[0]
    assert set(re.findall(r"^\| `([a-z]+)` \|", costs, flags=re.M)) == set(GROUPINGS)


def test_the_webhook_payload_shown_is_the_one_keel_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.config import AlertRule
    from keel.models.base import Usage
    from keel.models.gateway import CallRecord
    from keel.telemetry import alerts

    sent: list[dict[str, Any]] = []

    class _Response:
        def raise_for_status(self) -> None:
            pass

    monkeypatch.setattr(alerts.httpx, "post", lambda url, json, timeout: sent.append(json) or _Response())
    rule = AlertRule(name="model-errors", metric="errors", threshold=2, window_s=3)
    manager = alerts.AlertManager([rule], webhook_url="http://127.0.0.1:9/keel", clock=lambda: 1796038910.0)
    try:
        for _ in range(3):
            manager.observe(CallRecord("m", False, 1, 1.0, Usage(), error="model_unavailable"))
        manager.wait()
    finally:
        manager.close()
    shown = [json.loads(line) for block in _blocks("json") for line in block.splitlines() if '"alert"' in line]
    assert {tuple(p) for p in shown} == {tuple(sent[0])}  # the same fields, in the same order
    firing = next(p for p in shown if (p["alert"], p["state"]) == ("model-errors", "firing"))
    assert firing == sent[0]  # the third failed call in a 3 s window, at 2026-11-30T11:41:50Z


def test_the_audit_verify_messages_shown_are_what_verify_says() -> None:
    from keel.telemetry.audit import GENESIS, AuditRecord, record_hash, verify_records

    chain, prev = [], GENESIS
    for seq in range(1, 34):  # the page's 33-record export
        data = {"request_id": f"req_{seq}", "user_id": "ann"}
        digest = record_hash(prev, seq, "2026-11-30T11:39:49.085460Z", "input_guard", data)
        chain.append(AuditRecord(seq, "2026-11-30T11:39:49.085460Z", "input_guard", data, prev, digest))
        prev = digest
    edited = list(chain)
    edited[4] = AuditRecord(5, chain[4].ts, "input_guard", {**chain[4].data, "user_id": "mallory"},
                            chain[4].prev_hash, chain[4].hash)
    swapped = list(chain)
    swapped[11], swapped[12] = swapped[12], swapped[11]
    cases = [edited, chain[:9] + chain[10:], swapped, chain[3:]]
    for records in cases:
        result = verify_records(records)
        line = f"FAILED at record {result.first_bad}: {result.reason} ({result.checked} records verified before it)"
        assert line in DOC, line
    assert verify_records(chain).ok and "ok: 33 records, chain intact (head " in DOC
