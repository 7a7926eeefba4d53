"""The runtime's own overhead per request against a bare three-node LangGraph chain, in one run.

    .venv/bin/python bench/bench_graph.py [--requests 200]

keel: the whole graph (input guard, router, retrieval from a fake in-memory
retriever, fast-path answer from a zero-latency scripted model, quality guard,
response), SQLite checkpointer, spans into an OpenTelemetry SDK provider with
an in-memory exporter (telemetry on), an audit hook collecting records.
Also with LangGraph's in-memory checkpointer, to show what SQLite costs.
Bare: StateGraph of three trivial nodes, compiled without a checkpointer.
Rounds alternate; the median round is reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.config import load_settings
from keel.graph import FakeRetriever, build_runtime, by_purpose
from keel.models.fake import FunctionProvider
from keel.models.gateway import Gateway

ANSWER = "The with statement wraps the execution of a block with methods defined by a context manager [1]."
PASSAGES = [
    {
        "id": "with",
        "title": "The with statement",
        "text": "The with statement is used to wrap the execution of a block with methods defined by a "
        "context manager.",
    },
    {"id": "yield", "title": "yield", "text": "The yield expression is used in generator functions."},
]


class _S(TypedDict, total=False):
    q: str
    a: str
    b: str


def bare_chain() -> Any:
    g = StateGraph(_S)
    g.add_node("one", lambda s: {"a": s["q"]})
    g.add_node("two", lambda s: {"b": s["a"]})
    g.add_node("three", lambda s: {"q": s["b"]})
    g.add_edge(START, "one")
    g.add_edge("one", "two")
    g.add_edge("two", "three")
    g.add_edge("three", END)
    return g.compile()


def keel_runtime(home: Path, checkpointer: Any = None) -> tuple[Any, InMemorySpanExporter]:
    settings = load_settings(
        home=home,
        roles={"chat": ["fake"], "fast": ["fake"]},
        models={"fake": {"provider": "fake"}},
        gateway={"cache": {"enabled": False}},
    )
    provider = FunctionProvider(by_purpose({"answer": [ANSWER]}), name="fake")
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    records: list[Any] = []
    runtime = build_runtime(
        settings,
        Gateway.from_settings(settings, {"fake": provider}),
        retriever=FakeRetriever(PASSAGES),
        audit=lambda e, d: records.append((e, d)),
        tracer=tracer_provider.get_tracer("bench"),
        checkpointer=checkpointer,
    )
    return runtime, exporter


def per_request_us(fn: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    n = parser.parse_args().requests
    home = Path(tempfile.mkdtemp())
    sqlite_rt, exporter = keel_runtime(home / "a")
    memory_rt, exporter2 = keel_runtime(home / "b", InMemorySaver())
    bare = bare_chain()
    answer = sqlite_rt.ask("what does the with statement do?")
    assert answer.guardrail["verdict"] == "pass", answer.to_dict()
    spans_per_request = len(exporter.get_finished_spans())
    rounds: dict[str, list[float]] = {
        "keel (SQLite checkpointer)": [],
        "keel (in-memory checkpointer)": [],
        "bare 3-node LangGraph chain": [],
    }
    for _ in range(parser.parse_args().rounds):
        rounds["bare 3-node LangGraph chain"].append(per_request_us(lambda: bare.invoke({"q": "x"}), n * 5))
        rounds["keel (SQLite checkpointer)"].append(
            per_request_us(lambda: sqlite_rt.ask("what does the with statement do?"), n)
        )
        rounds["keel (in-memory checkpointer)"].append(
            per_request_us(lambda: memory_rt.ask("what does the with statement do?"), n)
        )
        exporter.clear()
        exporter2.clear()
    base = statistics.median(rounds["bare 3-node LangGraph chain"])
    print(
        f"{n} keel requests per round, {parser.parse_args().rounds} rounds, median round; "
        f"{spans_per_request} spans per keel request"
    )
    for name, values in rounds.items():
        median = statistics.median(values)
        print(f"{name:32s} {median:10.1f} µs/request   ratio {median / base:6.1f}x")


if __name__ == "__main__":
    main()
