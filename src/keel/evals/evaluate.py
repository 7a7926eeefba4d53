"""One call for a whole evaluation: select cases, run them, score them, build the report."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from .dataset import Dataset
from .report import build_report
from .runner import OnResult, RunOptions, run_cases

__all__ = ["evaluate"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def evaluate(app: Any, dataset: Dataset, *, options: RunOptions | None = None, tags: list[str] | None = None,
             limit: int | None = None, judge: bool = False, on_result: OnResult | None = None) -> dict[str, Any]:
    """Run the selected cases of ``dataset`` through ``app.ask`` and return the report (a dict)."""
    opts = options or RunOptions()
    cases = dataset.select(tags=tags, limit=limit)
    grader = None
    if judge:
        from .judge import Judge

        grader = Judge(app.gateway)
    started = time.time()
    results = run_cases(app, cases, opts, on_result=on_result, enrich=grader)
    finished = time.time()
    telemetry = getattr(app, "telemetry", None)
    if telemetry is not None and hasattr(telemetry, "flush"):
        telemetry.flush()  # every row's trace is in the store before anyone opens it
    settings = getattr(app, "settings", None)
    run: dict[str, Any] = {
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round(finished - started, 3),
        "k": opts.k,
        "concurrency": opts.concurrency,
        "timeout_s": opts.timeout_s,
        "f1_threshold": opts.f1_threshold,
        "kb": opts.kb,
        "models": dict(settings.roles) if settings is not None else {},
        "settings_fingerprint": settings.fingerprint() if settings is not None else None,
        "prompts": _prompt_versions(settings),
        "judge": None if grader is None else {"role": grader.role, "models": sorted(grader.models),
                                               "cost_usd": round(grader.cost_usd, 8),
                                               "note": "LLM-as-judge: a model's opinion, not a measurement"},
    }
    return build_report(dataset, cases, results, run=run, tags=tags, limit=limit)


def _prompt_versions(settings: Any) -> dict[str, str]:
    """The version of every prompt template the run used (built in or overridden), so a change in a
    metric can be put next to the prompt change that came with it."""
    if settings is None:
        return {}
    from ..graph.factory import build_prompts

    return build_prompts(settings).versions()
