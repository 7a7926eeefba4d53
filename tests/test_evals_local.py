"""`keel eval` end to end on the real embedded model and a real (small) demo knowledge base.

Slow-ish: opt in with ``-m local_model``. The knowledge base holds a dozen topics
of the demo corpus (the whole reference takes minutes to embed on 2 cores). The
model runs on one thread, without a re-ask and without the router's judge: on
2 cores shared with other work, llama.cpp on every core took 215 s for one
answer where one thread took 27 s, and this test is about the harness, not
the model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keel import App
from keel.evals.metrics import source_matches

pytestmark = pytest.mark.local_model

TOPICS = {"assert", "pass", "break", "continue", "del", "global", "nonlocal", "lambda", "truth", "with",
          "bltin-null-object", "raise"}


def test_demo_smoke_cases_through_the_cli_on_the_embedded_model(keel_home: Path, tmp_path: Path) -> None:
    from keel.knowledge import demo_documents

    app = App()
    docs = [d for d in demo_documents() if d.uri.removeprefix("pydoc:") in TOPICS]
    assert len(docs) == len(TOPICS)
    app.knowledge.ingest_documents(docs, total=len(docs))  # the default kb, as `keel ingest --demo` fills it
    app.knowledge.close()

    (tmp_path / "keel.yaml").write_text(
        "models:\n  local: {provider: local, model: SmolLM2-135M-Instruct, n_threads: 1}\n"
        "guardrails: {max_reasks: 0}\nrouter: {judge: false}\ngateway: {cache: {enabled: false}}\n"
    )
    env = {"KEEL_HOME": str(keel_home), "PATH": "/usr/bin:/bin"}
    exe = Path(sys.executable).with_name("keel")
    run = subprocess.run([exe, "eval", "--demo", "--tags", "smoke", "--k", "3", "--json", "--out", "report.json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["format"] == "keel.eval/1" and report["dataset"]["name"] == "demo"
    assert report["dataset"]["cases"] == 3 and report["dataset"]["tags"] == ["smoke"]
    assert report["run"]["models"]["chat"] == ["local"] and report["run"]["k"] == 3
    rows = {r["id"]: r for r in report["cases"]}
    assert set(rows) == {"assert", "refuse-vacation", "block-api-key"}

    # the guard blocks the pasted key before any model sees it
    blocked = rows["block-api-key"]
    assert (blocked["outcome"], blocked["passed"], blocked["model_calls"]) == ("blocked", True, 0)

    # retrieval is scored from the hits the real knowledge base returned for this question
    kb_row = rows["assert"]
    assert kb_row["error"] is None and kb_row["trace_id"] and kb_row["latency_ms"] > 0
    assert set(kb_row["sources"]) <= {f"pydoc:{t}" for t in TOPICS}
    hit = any(source_matches({"uri": uri}, "pydoc:assert") for uri in kb_row["sources"][:3])
    assert kb_row["scores"]["hit@k"] == float(hit)
    m = report["metrics"]
    assert m["retrieval.hit@k"] == kb_row["scores"]["hit@k"] and m["retrieval.mrr"] == kb_row["scores"]["rr"]
    assert m["cases"] == 3 and m["errors"] == 0 and m["model_calls.total"] >= 1
    assert m["latency.p50_ms"] > 0 and m["cost.total_usd"] == 0.0  # the embedded model costs nothing
    assert sum(m["outcomes"].values()) == 3 and m["guardrail.verdicts"].get("blocked") == 1

    # each row's trace is in the App's store (what `keel traces show TRACE_ID` reads)
    roots = App().telemetry.traces.tree(kb_row["trace_id"])
    assert roots[0].name == "keel.ask" and roots[0].attributes["input.value"] == "What does the assert statement do?"
