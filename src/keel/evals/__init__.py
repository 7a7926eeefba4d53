"""Evaluations: datasets of questions with expectations, run through ``App.ask``, scored and gated.

    from keel import App
    from keel.evals import RunOptions, evaluate, resolve_dataset

    report = evaluate(App(), resolve_dataset("demo"), options=RunOptions(k=5))
    report["metrics"]["retrieval.hit@k"]

``keel eval DATASET`` is the same from the command line; ``--baseline`` turns it
into the regression gate CI runs. See docs/evals.md.
"""

from __future__ import annotations

from .dataset import DEMO_DATASET, Dataset, EvalCase, load_dataset, resolve_dataset
from .evaluate import evaluate
from .gate import DEFAULT_MAX_DROP, EXIT_REGRESSION, Gate, check_gate, parse_limits
from .metrics import CaseResult, aggregate, score_case, token_f1
from .report import REPORT_FORMAT, build_report, load_report, render_report, save_report
from .runner import RunOptions, run_cases

__all__ = [
    "CaseResult",
    "DEFAULT_MAX_DROP",
    "DEMO_DATASET",
    "Dataset",
    "EXIT_REGRESSION",
    "EvalCase",
    "Gate",
    "REPORT_FORMAT",
    "RunOptions",
    "aggregate",
    "build_report",
    "check_gate",
    "evaluate",
    "load_dataset",
    "load_report",
    "parse_limits",
    "render_report",
    "resolve_dataset",
    "run_cases",
    "save_report",
    "score_case",
    "token_f1",
]
