"""keel eval: run a dataset of cases through the App, score it, and gate it against a baseline.

Exit codes: 0 the run finished and every gate passed (failed cases alone do
not fail the command: gate on them with ``--min pass_rate=1``); 9 a gate
failed (a regression); 2 a usage error (missing or bad dataset, a baseline
from other cases); 1 or the error's own code when the run could not start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import InputError
from ..evals import (
    DEMO_DATASET,
    EXIT_REGRESSION,
    CaseResult,
    RunOptions,
    aggregate,
    check_gate,
    evaluate,
    load_report,
    parse_limits,
    render_report,
    resolve_dataset,
    save_report,
)
from ..evals.gate import DROP_METRICS, INCREASE_METRICS, ensure_same_cases
from ..evals.runner import OnResult
from ._common import ConfigOption, JsonOption, console, err_console, make_app, print_json


@contextmanager
def _progress(total: int) -> Iterator[OnResult]:
    """A progress bar on stderr when it is a terminal; one line per case otherwise (CI logs)."""
    if not err_console.is_terminal:
        def line(done: int, of: int, r: CaseResult) -> None:
            mark = "pass" if r.passed else "FAIL"
            err_console.print(f"[{done}/{of}] {escape(r.id)} {mark} {r.outcome} {r.latency_ms:.0f} ms",
                              highlight=False, soft_wrap=True)
        yield line
        return
    failed = 0
    bar = Progress(TextColumn("[bold]eval[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=err_console, transient=True)
    task = bar.add_task("", total=total)

    def update(done: int, of: int, r: CaseResult) -> None:
        nonlocal failed
        failed += not r.passed
        bar.update(task, completed=done, description=f"{failed} failed · {escape(r.id)[:40]}")

    with bar:
        yield update


def _metric_names() -> list[str]:
    return sorted(k for k, v in aggregate([], []).items() if not isinstance(v, dict))


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        dataset: Annotated[str | None, typer.Argument(
            help="JSONL file of cases (or a `keel curation evals` export), or a shipped dataset: demo")] = None,
        demo: Annotated[bool, typer.Option("--demo", help="the shipped dataset for `keel ingest --demo`")] = False,
        tags: Annotated[list[str] | None, typer.Option("--tags", "-t",
                        help="only cases with one of these tags (repeat, or comma-separate)")] = None,
        limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="at most this many cases")] = None,
        concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1,
                               help="cases at once (1 suits the embedded model)")] = 1,
        timeout: Annotated[float, typer.Option("--timeout", min=0.001,
                           help="seconds a case may take before it fails as timed out")] = 300.0,
        k: Annotated[int, typer.Option("--k", min=1, help="sources counted for hit@k, recall@k and MRR")] = 5,
        kb: Annotated[str | None, typer.Option("--kb", help="knowledge base for cases that name none "
                  "(a named one routes them down the fast path with retrieval)")] = None,
        f1_threshold: Annotated[float, typer.Option("--f1-threshold", min=0, max=1,
                                help="token F1 at which an answer matches expected_answer")] = 0.5,
        judge: Annotated[bool, typer.Option("--judge", help="also grade answers with an LLM judge (role judge, "
                         "else chat); off by default: a model's opinion, and it costs calls")] = False,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON report to this file")] = None,
        baseline: Annotated[Path | None, typer.Option("--baseline", help="a saved report to compare with; "
                            "exit 9 when a metric regressed")] = None,
        max_drop: Annotated[list[str] | None, typer.Option("--max-drop", help="with --baseline: how far a score "
                            "may fall, e.g. 0.05 (default) or answer.f1=0.02")] = None,
        max_increase: Annotated[list[str] | None, typer.Option("--max-increase", help="with --baseline: how much "
                                "latency/cost may grow, relative: 0.5 or latency.p95_ms=0.5")] = None,
        minimum: Annotated[list[str] | None, typer.Option("--min", help="absolute floor: METRIC=VALUE, "
                           "e.g. retrieval.hit@k=0.8")] = None,
        maximum: Annotated[list[str] | None, typer.Option("--max", help="absolute ceiling: METRIC=VALUE, "
                           "e.g. latency.p95_ms=20000")] = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Run DATASET's cases through the App; report answer, retrieval, route, guardrail, latency and cost
        metrics with each case's trace id; with --baseline/--min/--max, exit 9 on a regression."""
        if demo and dataset not in (None, DEMO_DATASET):
            raise InputError("give a DATASET or --demo, not both", hint="keel eval --demo   or   keel eval cases.jsonl")
        if not demo and dataset is None:
            raise InputError("no dataset given",
                             hint="keel eval cases.jsonl, or keel eval --demo after keel ingest --demo")
        data = resolve_dataset(DEMO_DATASET if demo else str(dataset))
        wanted = [t.strip() for raw in tags or [] for t in raw.split(",") if t.strip()]
        cases = data.select(tags=wanted, limit=limit)
        names = _metric_names()
        drops = parse_limits(max_drop or [], "--max-drop", metrics=list(DROP_METRICS), allow_default=True)
        rises = parse_limits(max_increase or [], "--max-increase", metrics=list(INCREASE_METRICS), allow_default=True)
        floors = parse_limits(minimum or [], "--min", metrics=names, allow_default=False)
        ceilings = parse_limits(maximum or [], "--max", metrics=names, allow_default=False)
        if (drops or rises) and baseline is None:
            raise InputError("--max-drop and --max-increase compare with a baseline",
                             hint="add --baseline report.json, or use --min/--max for absolute gates")
        base = load_report(baseline) if baseline is not None else None
        if base is not None:  # before any case runs: a wrong baseline should not cost a whole run
            ensure_same_cases(base, data.name, data.fingerprint(cases), str(baseline))

        options = RunOptions(concurrency=concurrency, timeout_s=timeout, k=k, f1_threshold=f1_threshold, kb=kb)
        with _progress(len(cases)) as progress:
            report = evaluate(make_app(config), data, options=options, tags=wanted, limit=limit, judge=judge,
                              on_result=progress)
        gated = base is not None or floors or ceilings
        gate = None
        if gated:
            gate = check_gate(report, base, baseline_name=str(baseline) if baseline else None, max_drop=drops,
                              max_increase=rises, minimums=floors, maximums=ceilings)
            report["gate"] = gate.to_dict()
        if out is not None:
            save_report(report, out)
        if as_json:
            print_json(report)
        else:
            render_report(report, console)
            if out is not None:
                console.print(f"report written to {out}", highlight=False)
        if gate is not None and not gate.ok:
            raise typer.Exit(EXIT_REGRESSION)
