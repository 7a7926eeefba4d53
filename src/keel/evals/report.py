"""Eval reports: one JSON document per run (saved with ``--out``, compared with ``--baseline``), and a table.

The JSON report::

    {"format": "keel.eval/1",
     "dataset": {"name", "path", "fingerprint", "cases", "total_cases", "tags", "limit"},
     "run": {"started_at", "finished_at", "duration_s", "k", "concurrency", "timeout_s", "f1_threshold",
             "kb", "models": {role: [model, ...]}, "settings_fingerprint", "prompts": {name: version},
             "judge"},
     "metrics": {"pass_rate": 0.8, "retrieval.hit@k": 1.0, ...},
     "cases": [{"id", "passed", "outcome", "scores", "failures", "answer", "route", "verdict",
                "sources", "trace_id", "latency_ms", "cost_usd", "model_calls", "error", ...}],
     "gate": {...}}   # only when a baseline or an absolute gate was checked

Each row's ``trace_id`` opens the run's trace: ``keel traces show TRACE_ID``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import InputError, NotFound
from .dataset import Dataset, EvalCase
from .metrics import CaseResult, aggregate

__all__ = ["REPORT_FORMAT", "build_report", "load_report", "render_report", "save_report"]

REPORT_FORMAT = "keel.eval/1"


def build_report(dataset: Dataset, cases: list[EvalCase], results: list[CaseResult], *, run: dict[str, Any],
                 tags: list[str] | None = None, limit: int | None = None) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "dataset": {
            "name": dataset.name,
            "path": dataset.path,
            "fingerprint": dataset.fingerprint(cases),
            "cases": len(cases),
            "total_cases": len(dataset.cases),
            "tags": list(tags or []),
            "limit": limit,
        },
        "run": run,
        "metrics": aggregate(cases, results),
        "cases": [r.to_dict() for r in results],
    }


def save_report(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def load_report(path: str | Path) -> dict[str, Any]:
    """A report saved by ``keel eval --out`` (or ``--json`` redirected to a file)."""
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"baseline report {file} does not exist",
                       hint="save one first: keel eval DATASET --out baseline.json")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"baseline {file} is not JSON: {exc}",
                         hint="pass a report written by keel eval --out") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT or not isinstance(data.get("metrics"), dict):
        raise InputError(f"{file} is not a keel eval report (no \"format\": \"{REPORT_FORMAT}\")",
                         hint="pass a report written by keel eval --out")
    return data


def _fmt(value: Any, metric: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if metric.endswith("_usd"):
        return f"${value:.6f}"
    if metric.endswith("_ms"):
        return f"{value:.0f} ms"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _scores(scores: dict[str, float]) -> str:
    """The row's scores, short: answer correct, F1, hit@k and reciprocal rank, route, status."""
    short = {"correct": "ans", "f1": "f1", "hit@k": "hit", "rr": "rr", "route": "route", "status": "status",
             "not_rejected": "new"}
    return " ".join(f"{label} {scores[key]:.2g}" for key, label in short.items() if key in scores) or "-"


def _case_table(report: dict[str, Any], wide: bool) -> Table:
    """One row per case; the trace id under the case id (what `keel traces show` takes), scores when wide."""
    table = Table(title=f"{report['dataset']['name']}: {report['dataset']['cases']} cases", title_justify="left")
    table.add_column("case / trace id", no_wrap=True, min_width=32)
    for name in ("ok", "outcome", "route", "ms"):
        table.add_column(name, no_wrap=name != "outcome", justify="right" if name == "ms" else "left")
    if wide:
        table.add_column("scores")
    for row in report["cases"]:
        verdict = f" ({row['verdict']})" if row["verdict"] and row["verdict"] != row["outcome"] else ""
        cells = [
            f"{escape(row['id'])}\n[dim]{row['trace_id'] or '-'}[/]",
            "[green]pass[/]" if row["passed"] else "[red]FAIL[/]",
            row["outcome"] + verdict,
            row["route"] or "-",
            f"{row['latency_ms']:.0f}",
        ]
        table.add_row(*cells, *([_scores(row["scores"])] if wide else []))
    return table


def render_report(report: dict[str, Any], console: Console) -> None:
    """The per-case table, the failures, the metrics and (if checked) the gate."""
    console.print(_case_table(report, wide=console.width >= 110))
    for row in report["cases"]:
        if row["failures"]:
            trace = f"  (keel traces show {row['trace_id']})" if row["trace_id"] else ""
            console.print(f"[red]✗[/] {escape(row['id'])}: {escape('; '.join(row['failures']))}{trace}",
                          highlight=False, soft_wrap=True)
    m = report["metrics"]
    console.print(f"[bold]{m['passed']}/{m['cases']} passed[/], {m['errors']} errors", highlight=False)
    for name, value in m.items():
        if name in ("cases", "passed", "errors") or value is None:
            continue
        console.print(f"  {name:<24} {_fmt(value, name)}", highlight=False, markup=False, soft_wrap=True)
    gate = report.get("gate")
    if gate:
        render_gate(gate, console)


def render_gate(gate: dict[str, Any], console: Console) -> None:
    against = f" against {gate['baseline']}" if gate.get("baseline") else ""
    changed = gate.get("prompts_changed") or {}
    if changed:  # what changed besides the code: the likeliest cause of a moved metric
        moves = ", ".join(f"{name} {old or '-'} -> {new or '-'}" for name, (old, new) in changed.items())
        console.print(f"prompts changed since the baseline: {moves}", highlight=False, markup=False, soft_wrap=True)
    if gate["ok"]:
        console.print(f"[green]gate passed[/]{against}: {len(gate['checks'])} checks", highlight=False)
        return
    console.print(f"[red]REGRESSION[/]{against}:", highlight=False)
    for r in gate["regressions"]:
        console.print(f"  [red]✗[/] {escape(r['message'])}", highlight=False, soft_wrap=True)
