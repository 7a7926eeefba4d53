"""The regression gate: compare a run with a saved baseline, and with absolute floors and ceilings.

- ``max_drop`` (absolute, default 0.05 with a baseline): a higher-is-better
  score (pass rate, answer correctness, hit@k, MRR, route and status accuracy,
  groundedness, ...) may fall at most this much; ``error_rate`` may rise at
  most this much. One number for every score, or per metric.
- ``max_increase`` (relative, opt-in): latency, cost and model calls may grow
  at most this share of the baseline (0.5 = +50%). Off unless given: timings
  on a shared machine are noisy.
- ``minimums`` / ``maximums``: absolute gates on any numeric metric, with or
  without a baseline (``--min retrieval.hit@k=0.8 --max latency.p95_ms=20000``).

A baseline made from other cases (its dataset fingerprint differs) is refused:
comparing scores over different questions says nothing. A gate that fails
makes ``keel eval`` exit with ``EXIT_REGRESSION``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import InputError
from .metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER

__all__ = [
    "DEFAULT_MAX_DROP",
    "DROP_METRICS",
    "EXIT_REGRESSION",
    "Gate",
    "INCREASE_METRICS",
    "check_gate",
    "ensure_same_cases",
    "parse_limits",
]

#: ``keel eval`` exits with this when a gate fails (1 is a run error, 2 a usage error)
EXIT_REGRESSION = 9
DEFAULT_MAX_DROP = 0.05
_RATES_UP = ("error_rate",)  # lower is better, gated by an absolute rise like a score's drop
_RELATIVE = tuple(m for m in LOWER_IS_BETTER if m not in _RATES_UP and not m.startswith("status."))
#: what --max-drop and --max-increase may name
DROP_METRICS = (*HIGHER_IS_BETTER, *_RATES_UP)
INCREASE_METRICS = _RELATIVE


@dataclass
class Gate:
    ok: bool
    baseline: str | None
    #: every comparison made: {"metric", "kind", "baseline", "current", "limit", "ok", "message"}
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: metrics a limit was set for but that neither run measured
    skipped: list[str] = field(default_factory=list)
    #: prompt templates whose version differs from the baseline's: {name: [baseline, current]}
    prompts_changed: dict[str, list[str | None]] = field(default_factory=dict)

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "regressions": self.regressions}


def _prompts_changed(before: dict[str, str] | None, now: dict[str, str] | None) -> dict[str, list[str | None]]:
    """Templates whose version moved between two runs (a report from before prompts were recorded: none)."""
    if not before or not now:
        return {}
    return {name: [before.get(name), now.get(name)] for name in sorted(set(before) | set(now))
            if before.get(name) != now.get(name)}


def _known(metrics: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))


def parse_limits(values: list[str], option: str, *, metrics: list[str], allow_default: bool) -> dict[str, float]:
    """``["0.05", "answer.f1=0.02"]`` -> {"*": 0.05, "answer.f1": 0.02}; names checked against ``metrics``."""
    out: dict[str, float] = {}
    for raw in values:
        name, sep, number = raw.partition("=")
        if not sep:
            name, number = "*", raw
        name = name.strip()
        try:
            value = float(number)
        except ValueError:
            raise InputError(f"{option} {raw!r}: {number!r} is not a number",
                             hint=f"{option} METRIC=NUMBER, e.g. {option} retrieval.hit@k=0.8") from None
        if name == "*" and not allow_default:
            raise InputError(f"{option} {raw!r} names no metric", hint=f"{option} METRIC=NUMBER")
        if name != "*" and name not in metrics:
            raise InputError(f"{option}: unknown metric {name!r}", hint="metrics: " + ", ".join(metrics))
        out[name] = value
    return out


def _check(kind: str, metric: str, base: float | None, current: float, limit: float) -> dict[str, Any]:
    if kind == "drop":
        assert base is not None
        ok = current >= base - limit - 1e-12
        message = f"{metric} fell from {base:g} to {current:g} (more than the allowed drop of {limit:g})"
    elif kind == "rise":
        assert base is not None
        ok = current <= base + limit + 1e-12
        message = f"{metric} rose from {base:g} to {current:g} (more than the allowed rise of {limit:g})"
    elif kind == "increase":
        assert base is not None
        ok = current <= base * (1 + limit) + 1e-12
        message = f"{metric} grew from {base:g} to {current:g} (more than +{limit:.0%})"
    elif kind == "min":
        ok = current >= limit - 1e-12
        message = f"{metric} is {current:g}, below the minimum {limit:g}"
    else:
        ok = current <= limit + 1e-12
        message = f"{metric} is {current:g}, above the maximum {limit:g}"
    return {"metric": metric, "kind": kind, "baseline": base, "current": current, "limit": limit, "ok": ok,
            "message": message if not ok else f"{metric} ok ({current:g})"}


def _limit_for(limits: dict[str, float], metric: str, default: float | None) -> float | None:
    return limits.get(metric, limits.get("*", default))


def ensure_same_cases(baseline: dict[str, Any], name: str, fingerprint: str | None,
                      baseline_name: str | None = None) -> None:
    """Refuse a baseline whose cases (ids and questions) differ from this run's."""
    theirs = baseline.get("dataset") or {}
    if theirs.get("fingerprint") == fingerprint:
        return
    raise InputError(
        f"the baseline {baseline_name or ''} was made from other cases (dataset {theirs.get('name')!r}, "
        f"{theirs.get('cases')} cases, fingerprint {theirs.get('fingerprint')}; this run: {name!r}, "
        f"fingerprint {fingerprint})".replace("  ", " "),
        hint="compare runs of the same dataset with the same --tags/--limit, or save a new baseline "
        "with keel eval DATASET --out baseline.json",
    )


def check_gate(report: dict[str, Any], baseline: dict[str, Any] | None = None, *, baseline_name: str | None = None,
               max_drop: dict[str, float] | None = None, max_increase: dict[str, float] | None = None,
               minimums: dict[str, float] | None = None, maximums: dict[str, float] | None = None) -> Gate:
    """Check ``report`` against the baseline's metrics and the absolute limits."""
    current = report["metrics"]
    gate = Gate(ok=True, baseline=baseline_name)
    if baseline is not None:
        ensure_same_cases(baseline, report["dataset"]["name"], report["dataset"].get("fingerprint"), baseline_name)
        old = baseline["metrics"]
        gate.prompts_changed = _prompts_changed(baseline.get("run", {}).get("prompts"),
                                                report.get("run", {}).get("prompts"))
        drops, increases = max_drop or {}, max_increase or {}
        for metric in (*HIGHER_IS_BETTER, *_RATES_UP, *_RELATIVE):
            kind = "drop" if metric in HIGHER_IS_BETTER else ("rise" if metric in _RATES_UP else "increase")
            limit = _limit_for(increases, metric, None) if kind == "increase" else \
                _limit_for(drops, metric, DEFAULT_MAX_DROP)
            if limit is None:
                continue
            base, now = old.get(metric), current.get(metric)
            if base is None or now is None:
                if metric in drops or metric in increases:
                    gate.skipped.append(metric)
                continue
            gate.checks.append(_check(kind, metric, float(base), float(now), limit))
    for kind, limits in (("min", minimums or {}), ("max", maximums or {})):
        for metric, limit in limits.items():
            now = current.get(metric)
            if now is None:
                gate.checks.append({"metric": metric, "kind": kind, "baseline": None, "current": None,
                                    "limit": limit, "ok": False,
                                    "message": f"{metric} was not measured (no case carries that expectation)"})
                continue
            gate.checks.append(_check(kind, metric, None, float(now), limit))
    gate.ok = not gate.regressions
    return gate
