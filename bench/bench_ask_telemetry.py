"""Telemetry's cost on a whole keel request, in one run: full telemetry against off.

    .venv/bin/python bench/bench_ask_telemetry.py [--requests 20] [--rounds 60] [--split]

One request = ``App.ask`` through the whole graph (input guard, router, retrieval
from an in-memory fake retriever, fast-path answer from a zero-latency scripted
model, quality guard, response) with the SQLite checkpointer. "full" is the
default App: a span per node, model call and check in both vocabularies, rows
written to the SQLite trace and cost stores, Prometheus metrics, and a
hash-chained audit record per decision. "off" is ``telemetry.enabled: false``
with the audit ledger off too. Each timed round ends with ``telemetry.flush()``,
so the spans, cost rows and audit records the round queued are written inside
it, and the background writer's timer is stopped so that its CPU time lands in the
round that queued the work, not in whichever round happens to be running. A
round is 20 requests: about what the writer batches into one transaction on its
own (it writes every 0.25 s, and a request here takes about 13 ms). Short rounds,
alternated, keep a busy machine's drift out of the ratio.
bench/bench_telemetry.py measures the same at the level of a single gateway
call, where the baseline is far smaller.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from keel import App
from keel.graph import FakeRetriever, build_runtime, by_purpose
from keel.models.fake import FunctionProvider
from keel.telemetry import _writer

ANSWER = "The with statement wraps the execution of a block with methods defined by a context manager [1]."
PASSAGES = [
    {"id": "with", "title": "The with statement",
     "text": "The with statement is used to wrap the execution of a block with methods defined by a "
             "context manager."},
    {"id": "yield", "title": "yield", "text": "The yield expression is used in generator functions."},
]
QUESTION = "what does the with statement do?"


#: --split: where the cost goes, each piece of telemetry alone
SPLIT = {
    "audit only": {"enabled": False},
    "traces only": {"audit": {"enabled": False}},
    "full, sample_ratio 0": {"sample_ratio": 0.0},
}


def make_app(home: Path, telemetry_on: bool, telemetry: dict | None = None) -> App:
    if telemetry is None:
        telemetry = {} if telemetry_on else {"enabled": False, "audit": {"enabled": False}}
    app = App(home=home, models={"fake": {"provider": "fake"}}, roles={"chat": ["fake"], "fast": ["fake"]},
              gateway={"cache": {"enabled": False}}, telemetry=telemetry,
              providers={"fake": FunctionProvider(by_purpose({"answer": [ANSWER]}), name="fake")})
    # the real runtime, with an in-memory retriever in place of the knowledge base
    app.__dict__["runtime"] = build_runtime(app.settings, app.gateway, retriever=FakeRetriever(PASSAGES),
                                            audit=app.audit)
    return app


CPU: dict[str, list[float]] = {}
#: the request thread's own CPU time per request (the flush runs on it too, so every write counts);
#: the least noisy figure, and a conservative one: the graph's pool threads are left out of both
THREAD: dict[str, list[float]] = {}


def per_request_us(app: App, n: int, name: str = "") -> float:
    """Wall µs per request; the process's CPU µs per request (every thread, the writer's too)
    is kept in CPU[name], which other processes' load does not move."""
    # OpenTelemetry has one tracer provider per process, and keel routes it by the App that set
    # it up last; each round must run under its own App's tracing settings, not the last one built.
    app.telemetry.setup_tracing()
    gc.collect()  # start every round from the same heap: collections otherwise land in random rounds
    started, cpu_started, thread_started = time.perf_counter(), time.process_time(), time.thread_time()
    for _ in range(n):
        app.ask(QUESTION)
    app.telemetry.flush()  # the writes the requests queued count too (audit-only variants too)
    CPU.setdefault(name, []).append((time.process_time() - cpu_started) / n * 1e6)
    THREAD.setdefault(name, []).append((time.thread_time() - thread_started) / n * 1e6)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20, help="requests per round")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--split", action="store_true", help="also time each piece of telemetry alone")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    apps = {"off": make_app(home / "off", False), "full": make_app(home / "full", True)}
    for app in apps.values():
        answer = app.ask(QUESTION)
        assert answer.guardrail["verdict"] == "pass", answer.to_dict()
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    if args.split:
        for name, telemetry in SPLIT.items():
            apps[name] = make_app(home / name.replace(" ", "_"), True, telemetry)
            apps[name].ask(QUESTION)
            rounds[name] = []
    order = list(apps)
    _writer.INTERVAL_S = 3600.0  # every round flushes its own writes (see the module doc)
    _writer.wake()
    for n in range(args.rounds):  # rotate who goes first, so load drift hits all alike
        for name in order[n % len(order):] + order[:n % len(order)]:
            rounds[name].append(per_request_us(apps[name], args.requests, name))
    base = statistics.median(rounds["off"])
    full = statistics.median(rounds["full"])
    # each round of one variant against the other's round next to it: robust to a busy machine
    paired = sorted(f / o for f, o in zip(rounds["full"], rounds["off"], strict=True))
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    print(f"{args.requests} requests per round, {args.rounds} rounds, median round")
    print(f"telemetry off  {base:9.1f} µs/request (baseline)")
    print(f"telemetry full {full:9.1f} µs/request  ratio {full / base:.3f}  overhead {100 * (full / base - 1):.1f}%"
          " (target <= 10%)")
    print(f"paired rounds  median ratio {statistics.median(paired):.3f}  "
          f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; flush of queued writes inside every timed round)")
    for name in SPLIT if args.split else ():
        value = statistics.median(rounds[name])
        print(f"{name:22s} {value:9.1f} µs/request  ratio {value / base:.3f}")
    cpu_base = statistics.median(CPU["off"])
    print("process CPU time (all threads), median round:")
    for name in rounds:
        value = statistics.median(CPU[name])
        print(f"  {name:22s} {value:9.1f} CPU µs/request  ratio {value / cpu_base:.3f}")
    thread_base = statistics.median(THREAD["off"])
    print("request thread CPU time (every write included), median round:")
    for name in rounds:
        value = statistics.median(THREAD[name])
        paired_thread = statistics.median(f / o for f, o in zip(THREAD[name], THREAD["off"], strict=True))
        print(f"  {name:22s} {value:9.1f} CPU µs/request  ratio {value / thread_base:.3f}  paired {paired_thread:.3f}")


if __name__ == "__main__":
    main()
