"""docs/evals.md stays true: the options, metrics, fields and exit code it names are the real ones."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from keel.cli import app
from keel.evals import EXIT_REGRESSION, EvalCase, aggregate
from keel.evals.gate import DEFAULT_MAX_DROP

DOC = (Path(__file__).resolve().parent.parent / "docs" / "evals.md").read_text()


def test_every_option_the_page_names_exists() -> None:
    command = get_command(app).commands["eval"]  # type: ignore[attr-defined]
    real = {opt for p in command.params for opt in p.opts if opt.startswith("--")}
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", DOC))
    assert named and named <= real, sorted(named - real)


def test_every_metric_setting_and_field_the_page_names_exists() -> None:
    from keel.config import Settings

    metrics = set(aggregate([], []))
    named = {m for m in re.findall(r"`([a-z_]+\.[a-z_@0-9]+|[a-z_]+_rate)`", DOC) if "." in m or m.endswith("_rate")}
    named -= {"keel.yaml", "dataset.py", "metrics.py", "runner.py", "report.py", "gate.py", "judge.py", "evals.py",
              "errors.py", "demo.jsonl", "run.judge", "run.prompts"}  # run.*: report fields
    settings = {m for m in named if m.split(".")[0] in Settings.model_fields}
    for path in settings:  # limits.max_wall_s, tools.approval_ttl_s, ...: real settings
        section, key = path.split(".")
        assert key in type(getattr(Settings(), section)).model_fields, path
    assert named - settings and named - settings <= metrics, sorted(named - settings - metrics)
    fields = set(EvalCase.model_fields)
    table = re.findall(r"^\| `([a-z_]+)` \|", DOC, flags=re.M)
    assert {"id", "question", "expected_sources", "tags"} <= set(table) <= fields


def test_the_documented_exit_code_and_default_drop() -> None:
    assert EXIT_REGRESSION == 9 and "| 9 | a gate failed" in DOC
    assert DEFAULT_MAX_DROP == 0.05 and "`--max-drop 0.05` (the default with a baseline)" in DOC
