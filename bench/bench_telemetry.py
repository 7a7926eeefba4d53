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


def make_app(home: Path, *, enabled: bool, budget: bool = False, content: bool = True, sample: float = 1.0) -> App:
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
        providers={"m": FakeProvider(["Damaged sale items can be refunded within 30 days."], repeat_last=True)},
        **settings,
    )


def run(app: App, n: int, *, audit: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds per request, including writing everything the requests queued.

    CPU time counts every thread of this process (the background writer too) and not the
    other processes sharing the machine, so it is the steadier figure on a busy host.
    """
    gateway = app.gateway
    app.telemetry.setup_tracing()  # route spans for this app (the other app's round may have switched them)
    tracer = trace.get_tracer("keel")
    started, cpu = time.perf_counter(), time.process_time()
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
    return (time.perf_counter() - started) / n, (time.process_time() - cpu) / n


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
        rounds: dict[str, list[tuple[float, float]]] = {
            "off": [],
            "full": [],
            "full-content": [],
            "full@10%": [],
            "full+budget": [],
            "full+audit": [],
        }
        for _ in range(args.rounds):
            rounds["off"].append(run(off, args.requests))
            rounds["full"].append(run(full, args.requests))
            rounds["full-content"].append(run(no_text, args.requests))
            rounds["full@10%"].append(run(sampled, args.requests))
            rounds["full+budget"].append(run(budgeted, args.requests))
            rounds["full+audit"].append(run(full, max(args.requests // 4, 50), audit=True))
        spans = full.telemetry.traces.list(limit=1)[0].spans
        calls = sum(r["calls"] for r in full.telemetry.costs.summary("model"))
    wall = {k: statistics.median(w for w, _ in v) for k, v in rounds.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rounds.items()}
    print(f"requests per round: {args.requests}, rounds: {args.rounds} (median round shown)")
    print(f"  {'':<13} {'wall µs/req':>12} {'ratio':>6}   {'CPU µs/req':>11} {'ratio':>6}")
    for name in rounds:
        print(
            f"  {name:<13} {wall[name] * 1e6:12.1f} {wall[name] / wall['off']:6.2f}   "
            f"{cpu[name] * 1e6:11.1f} {cpu[name] / cpu['off']:6.2f}"
        )
    print(f"stored: {calls} model-call rows, {spans} spans in the last trace")
    for label, m in (("wall", wall), ("CPU", cpu)):
        added_ms = (m["full"] - m["off"]) * 1000
        print(
            f"telemetry overhead, {label} (full vs off): {(m['full'] / m['off'] - 1) * 100:.0f}% "
            f"(target ≤ 10%), {added_ms * 1000:.0f} µs added per request; that is "
            f"{added_ms / 100 * 100:.2f}% of a request whose model answers in 100 ms, "
            f"{added_ms / 1000 * 100:.3f}% at 1 s"
        )


if __name__ == "__main__":
    main()
