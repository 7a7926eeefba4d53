"""Telemetry overhead: one zero-latency scripted-model request through the gateway, telemetry on vs off.

"Off" is ``telemetry.enabled: false`` (spans are not recorded, no observers).
"Full" is everything the monitoring issue adds to a request: a request span and
a model-call span with both attribute vocabularies and message content, the
span and cost rows written to SQLite (WAL) by the batch writer (its flush is
inside the timed region), Prometheus metrics and one alert rule. Rounds
alternate so both see the same machine load; the figure is the median round.

Also printed, not part of the target: full telemetry without message text
(``capture_content: false``), with 10% of traces sampled (costs and metrics
still see every call), with a SQLite budget (two BEGIN IMMEDIATE
transactions per call), and with one audit record per request (one
synchronous, hash-chained insert), plus the added time as a share of a
request whose model takes 100 ms or 1 s.

    .venv/bin/python bench/bench_telemetry.py [--requests 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry import trace

from keel.app import App
from keel.models import ChatRequest, FakeProvider, Message

QUESTION = "What does the refund policy say about damaged items bought on sale?"


def make_app(
    home: Path, *, enabled: bool, budget: bool = False, content: bool = True, sample: float = 1.0
) -> App:
    settings: dict = {
        "home": home,
        "models": {"m": {"provider": "fake", "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6}},
        "roles": {"chat": ["m"]},
        "gateway": {"cache": {"enabled": False}},
        "telemetry": {
            "enabled": enabled,
            "capture_content": content,
            "sample_ratio": sample,
            "alerts": [{"name": "spend", "metric": "cost_usd", "threshold": 10, "window_s": 3600}],
        },
    }
    if budget:
        settings["budgets"] = {"limits": [{"scope": "user", "usd": 1e6, "per": "day"}]}
    return App(
        providers={
            "m": FakeProvider(["Damaged sale items can be refunded within 30 days."], repeat_last=True)
        },
        **settings,
    )


def run(app: App, n: int, *, audit: bool = False) -> float:
    """Seconds per request, including writing everything the requests queued."""
    gateway = app.gateway
    app.telemetry.setup_tracing()  # route spans for this app (the other app's round may have switched them)
    tracer = trace.get_tracer("keel")
    started = time.perf_counter()
    for i in range(n):
        with tracer.start_as_current_span("keel.ask"):
            request = ChatRequest(
                messages=[
                    Message(role="system", content="Answer from the sources."),
                    Message(role="user", content=QUESTION),
                ],
                metadata={"user_id": f"u{i % 7}", "session_id": f"s{i % 13}", "request_id": str(i)},
            )
            answer = gateway.chat(request)
            if audit:
                app.audit("answer", {"model": answer.model, "answer": answer.text, "cost": answer.cost_usd})
    app.telemetry.flush()
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        off = make_app(Path(tmp) / "off", enabled=False)
        full = make_app(Path(tmp) / "full", enabled=True)
        budgeted = make_app(Path(tmp) / "budget", enabled=True, budget=True)
        no_text = make_app(Path(tmp) / "notext", enabled=True, content=False)
        sampled = make_app(Path(tmp) / "sampled", enabled=True, sample=0.1)
        for app in (off, full, budgeted, no_text, sampled):
            run(app, 200)  # warm up: imports, migrations, first connections
        times: dict[str, list[float]] = {
            "off": [],
            "full": [],
            "full-content": [],
            "full@10%": [],
            "full+budget": [],
            "full+audit": [],
        }
        for _ in range(args.rounds):
            times["off"].append(run(off, args.requests))
            times["full"].append(run(full, args.requests))
            times["full-content"].append(run(no_text, args.requests))
            times["full@10%"].append(run(sampled, args.requests))
            times["full+budget"].append(run(budgeted, args.requests))
            times["full+audit"].append(run(full, max(args.requests // 4, 50), audit=True))
        spans = full.telemetry.traces.list(limit=1)[0].spans
        calls = sum(r["calls"] for r in full.telemetry.costs.summary("model"))
    median = {k: statistics.median(v) for k, v in times.items()}
    base = median["off"]
    print(f"requests per round: {args.requests}, rounds: {args.rounds} (median round shown)")
    for name, value in median.items():
        print(f"  {name:<12} {value * 1e6:8.1f} µs/request   ratio {value / base:5.2f}")
    print(f"stored: {calls} model-call rows, {spans} spans in the last trace")
    overhead = median["full"] / base - 1
    added_ms = (median["full"] - base) * 1000
    print(
        f"telemetry overhead (full vs off): {overhead * 100:.1f}%  (target ≤ 10%), "
        f"{added_ms * 1000:.0f} µs added per request"
    )
    for model_ms in (100, 1000):
        print(
            f"  as a share of a request whose model answers in {model_ms} ms: "
            f"{added_ms / model_ms * 100:.2f}%"
        )


if __name__ == "__main__":
    main()
