"""The runner, the report and the regression gate on a scripted model (deterministic, no real model)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel import App
from keel.cli import app as cli
from keel.errors import InputError, ModelRefused, UserError
from keel.evals import EXIT_REGRESSION, RunOptions, check_gate, evaluate, load_dataset, load_report, run_cases
from keel.graph import FakeRetriever, by_purpose
from keel.models.base import ChatRequest
from keel.models.fake import FunctionProvider

ASSERT = "Assert statements are a convenient way to insert debugging assertions into a program."
PASS = "The pass statement is a null operation: when it is executed, nothing happens."
PASSAGES = [
    {"id": "pydoc:assert#0", "doc_id": "pydoc:assert", "uri": "pydoc:assert", "title": "The assert statement",
     "text": ASSERT},
    {"id": "pydoc:pass#0", "doc_id": "pydoc:pass", "uri": "pydoc:pass", "title": "The pass statement", "text": PASS},
]
CASES = [
    {"id": "assert", "question": "What do assert statements insert into a program?", "must_contain": ["debugging"],
     "expected_sources": ["pydoc:assert"], "expected_route": "fast", "expected_status": "answered", "tags": ["kb"]},
    {"id": "pass", "question": "What happens when the pass statement is executed?",
     "expected_answer": "a null operation: when it is executed, nothing happens.",
     "expected_sources": ["pydoc:pass"], "expected_status": "answered", "tags": ["kb"]},
    {"id": "vacation", "question": "How many vacation days do new employees get?", "expected_status": "refused",
     "tags": ["refusal"]},
    {"id": "secret", "question": "Is password: hunter2hunter2 a good one?", "expected_status": "blocked",
     "must_not_contain": ["hunter2hunter2"], "tags": ["guardrail"]},
]


class EvalApp(App):
    """An App whose knowledge base is a few fixed passages, found by shared words."""

    passages: list[dict[str, Any]] = PASSAGES

    def search(self, query, *, kb=None, k=5, where=None, mode="hybrid"):  # type: ignore[no-untyped-def,override]
        return FakeRetriever(self.passages).search(query, k=k)


def drafts(good: bool = True, delay: dict[str, float] | None = None) -> Any:
    """The scripted model: quotes the passage it was given (or, when not ``good``, says something wrong)."""

    def answer(request: ChatRequest) -> str:
        prompt = "\n".join(m.content for m in request.messages)
        for marker, seconds in (delay or {}).items():
            if marker in prompt:
                time.sleep(seconds)
        if "boom" in prompt:
            return ModelRefused("the provider refused this prompt", model="scripted")  # type: ignore[return-value]
        if not good:
            return "I am not able to say anything useful here."
        if "debugging assertions" in prompt:
            return "Assert statements insert debugging assertions into a program [1]."
        if "null operation" in prompt:
            return "The pass statement is a null operation: when it is executed, nothing happens [1]."
        return "I don't know."

    return by_purpose({"answer": answer, "agent_step": answer,
                       "route_judge": ['{"label": "kb", "why": "asks about the docs"}']})


def make_app(good: bool = True, delay: dict[str, float] | None = None,
             passages: list[dict[str, Any]] = PASSAGES) -> EvalApp:
    """``good=False``: the model drafts nonsense; ``passages=[]``: the knowledge base lost its documents."""
    provider = FunctionProvider(drafts(good, delay), name="scripted")
    app = EvalApp(
        providers={"scripted": provider},
        models={"scripted": {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0}},
        roles={"chat": ["scripted"], "fast": ["scripted"]},
        gateway={"cache": {"enabled": False}, "max_retries": 0},
    )
    app.passages = passages
    return app


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    file = tmp_path / "cases.jsonl"
    file.write_text("".join(json.dumps(c) + "\n" for c in CASES))
    return file


def test_evaluate_scores_every_case_and_links_each_to_its_trace(dataset_file: Path) -> None:
    app = make_app()
    report = evaluate(app, load_dataset(dataset_file), options=RunOptions(kb="default"))
    rows = {r["id"]: r for r in report["cases"]}
    assert {i: (r["passed"], r["outcome"], r["verdict"]) for i, r in rows.items()} == {
        "assert": (True, "answered", "pass"),
        "pass": (True, "answered", "pass"),
        "vacation": (True, "refused", "refused"),
        "secret": (True, "blocked", "blocked"),
    }
    assert rows["assert"]["sources"][0] == "pydoc:assert" and rows["assert"]["scores"]["rr"] == 1.0
    assert rows["pass"]["scores"]["exact"] == 0.0 and rows["pass"]["scores"]["contains"] == 1.0
    assert rows["secret"]["route"] == "blocked" and rows["secret"]["model_calls"] == 0
    m = report["metrics"]
    assert (m["cases"], m["passed"], m["errors"], m["pass_rate"]) == (4, 4, 0, 1.0)
    assert (m["retrieval.hit@k"], m["retrieval.mrr"], m["route.accuracy"], m["status.accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["guardrail.verdicts"] == {"blocked": 1, "pass": 2, "refused": 1}
    assert m["cost.total_usd"] > 0 and m["model_calls.total"] >= 2 and m["latency.p95_ms"] >= m["latency.p50_ms"]
    assert report["dataset"]["cases"] == 4 and len(report["dataset"]["fingerprint"]) == 16
    assert report["run"]["models"]["chat"] == ["scripted"] and report["run"]["judge"] is None
    # the trace of each answered row is in the store already: `keel traces show` can open it
    for row in report["cases"]:
        assert app.telemetry.traces.tree(row["trace_id"])[0].name == "keel.ask"


def test_a_timeout_or_an_error_fails_its_case_and_the_run_goes_on(tmp_path: Path) -> None:
    file = tmp_path / "c.jsonl"
    file.write_text("".join(json.dumps(c) + "\n" for c in [
        {"id": "slow", "question": "What do assert statements insert into a program, slowly?"},
        {"id": "boom", "question": "What does boom do to assert statements in a program?"},
        CASES[1],
    ]))
    app = make_app(delay={"slowly": 6.0})
    app.ask("What happens when the pass statement is executed?", kb="default")  # built before the clock starts
    seen: list[tuple[int, int, str]] = []
    started = time.perf_counter()
    results = run_cases(app, load_dataset(file).cases, RunOptions(timeout_s=2.0, kb="default"),
                        on_result=lambda done, total, r: seen.append((done, total, r.id)))
    assert time.perf_counter() - started < 5.5  # the slow case was abandoned at its timeout, not awaited
    slow, boom, ok = results
    assert (slow.outcome, slow.error["error"]) == ("error", "timeout")  # type: ignore[index]
    assert slow.failures == ["no answer: the case took longer than 2 s"]
    assert (boom.outcome, boom.error["error"]) == ("error", "model_refused")  # type: ignore[index]
    assert ok.passed and [s[2] for s in seen] == ["slow", "boom", "pass"] and seen[-1][:2] == (3, 3)


def test_concurrency_runs_cases_at_once_but_never_more_than_asked(tmp_path: Path) -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    class Counting:
        def ask(self, question: str, *, kb: str | None = None) -> dict[str, Any]:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.05)
            with lock:
                active -= 1
            return {"status": "answered", "answer": question, "guardrail": {"verdict": "pass"}}

    file = tmp_path / "c.jsonl"
    file.write_text("".join(json.dumps({"id": str(i), "question": f"q{i}", "must_contain": f"q{i}"}) + "\n"
                            for i in range(8)))
    results = run_cases(Counting(), load_dataset(file).cases, RunOptions(concurrency=3))
    assert [r.id for r in results] == [str(i) for i in range(8)] and all(r.passed for r in results)
    assert peak == 3


def test_the_app_answers_cases_concurrently(tmp_path: Path) -> None:
    file = tmp_path / "many.jsonl"
    file.write_text("".join(json.dumps({**c, "id": f"{c['id']}-{i}"}) + "\n" for i in range(3) for c in CASES))
    report = evaluate(make_app(), load_dataset(file), options=RunOptions(kb="default", concurrency=3))
    assert report["metrics"]["pass_rate"] == 1.0 and report["run"]["concurrency"] == 3
    assert len({r["trace_id"] for r in report["cases"]}) == 12  # one trace per case, none shared


def test_the_judge_is_off_by_default_and_marked_when_on(dataset_file: Path) -> None:
    app = make_app()
    provider = app.providers["scripted"]
    assert isinstance(provider, FunctionProvider)
    inner = provider.fn

    def with_judge(request: ChatRequest) -> Any:
        if request.metadata.get("purpose") == "eval_judge":
            return '{"grade": 4, "why": "supported by the source"}'
        return inner(request)

    provider.fn = with_judge
    data = load_dataset(dataset_file)
    plain = evaluate(app, data, options=RunOptions(kb="default"))
    assert plain["metrics"]["judge.score"] is None and all(r["judge"] is None for r in plain["cases"])
    judged = evaluate(app, data, options=RunOptions(kb="default"), judge=True)
    assert judged["metrics"]["judge.score"] == 0.75
    assert judged["cases"][0]["judge"] == {"score": 0.75, "grade": 4, "why": "supported by the source",
                                           "model": "scripted"}
    assert judged["run"]["judge"]["role"] == "chat" and "not a measurement" in judged["run"]["judge"]["note"]
    assert judged["metrics"]["cost.total_usd"] == plain["metrics"]["cost.total_usd"]  # judging is costed apart
    assert judged["run"]["judge"]["cost_usd"] > 0


# -- the command and its gate ------------------------------------------------------------


def invoke(monkeypatch: pytest.MonkeyPatch, app: App, *args: str) -> Any:
    monkeypatch.setattr("keel.cli.evals.make_app", lambda config: app)
    return CliRunner().invoke(cli, ["eval", *args])


def test_keel_eval_json_and_out_then_a_regression_exits_9_naming_the_metric(
    monkeypatch: pytest.MonkeyPatch, dataset_file: Path, tmp_path: Path
) -> None:
    base = tmp_path / "baseline.json"
    first = invoke(monkeypatch, make_app(), str(dataset_file), "--kb", "default", "--json", "--out", str(base))
    assert first.exit_code == 0, first.output
    printed = json.loads(first.stdout)
    assert printed == load_report(base) and printed["metrics"]["pass_rate"] == 1.0 and "gate" not in printed

    same = invoke(monkeypatch, make_app(), str(dataset_file), "--kb", "default", "--baseline", str(base))
    assert same.exit_code == 0, same.output
    assert "gate passed against" in same.stdout and "4/4 passed" in same.stdout

    worse = invoke(monkeypatch, make_app(passages=[]), str(dataset_file), "--kb", "default", "--baseline",
                   str(base), "--json")
    assert worse.exit_code == EXIT_REGRESSION == 9
    gate = json.loads(worse.stdout)["gate"]
    regressed = {r["metric"] for r in gate["regressions"]}
    assert {"pass_rate", "retrieval.hit@k", "status.accuracy", "answer.correct"} <= regressed
    assert "answer.clean" not in regressed  # the blocked question still leaks nothing
    assert not gate["ok"] and gate["baseline"] == str(base)

    human = invoke(monkeypatch, make_app(passages=[]), str(dataset_file), "--kb", "default", "--baseline", str(base))
    assert human.exit_code == 9
    assert "REGRESSION" in human.stdout and "pass_rate fell from 1 to 0.5" in human.stdout
    assert "refused (expected answered)" in human.stdout
    assert "keel traces show" in human.stdout  # each failure says how to open its trace

    tolerant = invoke(monkeypatch, make_app(passages=[]), str(dataset_file), "--kb", "default", "--baseline",
                      str(base), "--max-drop", "1", "--json")
    assert tolerant.exit_code == 0 and json.loads(tolerant.stdout)["gate"]["ok"]


def test_a_gate_names_the_prompts_that_changed_since_its_baseline(
    monkeypatch: pytest.MonkeyPatch, dataset_file: Path, tmp_path: Path
) -> None:
    """A moved metric next to the prompt change that came with it: the report records every template's
    version, and a gate against a baseline lists the ones that differ."""
    from keel.prompts import PromptLibrary

    base = tmp_path / "baseline.json"
    app = make_app()
    first = invoke(monkeypatch, app, str(dataset_file), "--kb", "default", "--json", "--out", str(base))
    assert json.loads(first.stdout)["run"]["prompts"] == PromptLibrary().versions()
    override = app.settings.prompts_dir
    override.mkdir(parents=True, exist_ok=True)
    source = PromptLibrary().get("answer_sources").source + "\nBe brief.\n"
    (override / "answer_sources.j2").write_text(source)
    again = invoke(monkeypatch, make_app(), str(dataset_file), "--kb", "default", "--baseline", str(base), "--json")
    gate = json.loads(again.stdout)["gate"]
    new_version = PromptLibrary(override).get("answer_sources").version
    assert gate["prompts_changed"] == {"answer_sources": [PromptLibrary().get("answer_sources").version, new_version]}
    human = invoke(monkeypatch, make_app(), str(dataset_file), "--kb", "default", "--baseline", str(base))
    assert f"prompts changed since the baseline: answer_sources {PromptLibrary().get('answer_sources').version} " \
           f"-> {new_version}" in human.stdout
    (override / "answer_sources.j2").unlink()
    same = invoke(monkeypatch, make_app(), str(dataset_file), "--kb", "default", "--baseline", str(base), "--json")
    assert json.loads(same.stdout)["gate"]["prompts_changed"] == {}


def test_absolute_gates_with_min_and_max(monkeypatch: pytest.MonkeyPatch, dataset_file: Path) -> None:
    ok = invoke(monkeypatch, make_app(), str(dataset_file), "--kb", "default", "--min", "retrieval.hit@k=1",
                "--max", "error_rate=0", "--json")
    assert ok.exit_code == 0 and [c["kind"] for c in json.loads(ok.stdout)["gate"]["checks"]] == ["min", "max"]
    # a model drafting nonsense: the guardrail falls back to quoting the sources, so the answers still
    # hold the right words, but groundedness shows what happened
    low = invoke(monkeypatch, make_app(good=False), str(dataset_file), "--kb", "default", "--tags", "kb",
                 "--min", "answer.correct=0.9", "--min", "guardrail.groundedness=0.5", "--json")
    assert low.exit_code == 9
    report = json.loads(low.stdout)
    assert report["metrics"]["guardrail.verdicts"] == {"fallback": 2} and report["metrics"]["answer.correct"] == 1.0
    [regression] = report["gate"]["regressions"]
    assert regression["message"] == "guardrail.groundedness is 0, below the minimum 0.5"


def test_gate_options_are_checked_before_anything_runs(monkeypatch: pytest.MonkeyPatch, dataset_file: Path) -> None:
    typo = invoke(monkeypatch, make_app(), str(dataset_file), "--min", "retreival.hit@k=1")
    assert isinstance(typo.exception, InputError) and "unknown metric 'retreival.hit@k'" in str(typo.exception)
    wrong_way = invoke(monkeypatch, make_app(), str(dataset_file), "--baseline", "b.json", "--max-drop",
                       "latency.p95_ms=100")
    assert isinstance(wrong_way.exception, InputError) and "--max-drop: unknown metric" in str(wrong_way.exception)
    lonely = invoke(monkeypatch, make_app(), str(dataset_file), "--max-drop", "0.1")
    assert isinstance(lonely.exception, InputError) and "baseline" in str(lonely.exception)


def test_gate_refuses_a_baseline_of_other_cases(dataset_file: Path) -> None:
    report = {"dataset": {"name": "cases", "fingerprint": "aaaa"}, "metrics": {"pass_rate": 1.0}}
    other = {"dataset": {"name": "other", "fingerprint": "bbbb", "cases": 3}, "metrics": {"pass_rate": 1.0}}
    with pytest.raises(InputError, match="made from other cases") as caught:
        check_gate(report, other, baseline_name="old.json")
    assert "--out baseline.json" in (caught.value.hint or "")


def test_latency_and_cost_are_gated_only_when_asked() -> None:
    base = {"dataset": {"fingerprint": "f"}, "metrics": {"latency.p95_ms": 100.0, "cost.total_usd": 0.01,
                                                          "pass_rate": 0.9}}
    now = {"dataset": {"name": "d", "fingerprint": "f"}, "metrics": {"latency.p95_ms": 300.0, "cost.total_usd": 0.011,
                                                                     "pass_rate": 0.86}}
    assert check_gate(now, base).ok  # a 0.04 drop is inside the default 0.05; timings are not compared
    gate = check_gate(now, base, max_increase={"*": 0.5})
    assert [r["metric"] for r in gate.regressions] == ["latency.p95_ms"]
    assert gate.regressions[0]["message"] == "latency.p95_ms grew from 100 to 300 (more than +50%)"


# -- the real process: exit codes and one-line errors ----------------------------------------


def keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel", "eval", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_unhappy_paths_exit_2_with_one_line_and_what_to_do(tmp_path: Path) -> None:
    missing = keel("nope.jsonl", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: dataset nope.jsonl does not exist")
    assert "what to do:" in missing.stderr and "Traceback" not in missing.stderr

    (tmp_path / "bad.jsonl").write_text('{"id": "a", "question": "fine"}\n{"id": "b", "question": \n')
    bad = keel("bad.jsonl", cwd=tmp_path)
    assert bad.returncode == 2 and "bad.jsonl:2: not valid JSON" in bad.stderr

    (tmp_path / "base.json").write_text(json.dumps({"format": "keel.eval/1", "metrics": {},
                                                    "dataset": {"name": "demo", "fingerprint": "x", "cases": 15}}))
    (tmp_path / "mine.jsonl").write_text('{"id": "a", "question": "what is pass?"}\n')
    other = keel("mine.jsonl", "--baseline", "base.json", cwd=tmp_path)
    assert other.returncode == 2 and "made from other cases (dataset 'demo', 15 cases" in other.stderr


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"empty.jsonl": "\n"}, ["empty.jsonl"], "has no cases"),
        ({"c.jsonl": '{"question": "q"}\n', "r.json": "[1, 2]"}, ["c.jsonl", "--baseline", "r.json"],
         "is not a keel eval report"),
        ({"c.jsonl": '{"question": "q"}\n'}, ["c.jsonl", "--baseline", "gone.json"], "gone.json does not exist"),
        ({}, [], "no dataset given"),
        ({}, ["cases.jsonl", "--demo"], "not both"),
        ({"c.jsonl": '{"question": "q"}\n'}, ["c.jsonl", "--tags", "nope"], "has the tag(s) nope"),
    ],
)
def test_more_usage_errors_are_typed_with_exit_code_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      files: dict[str, str], args: list[str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = invoke(monkeypatch, make_app(), *args)  # in-process: main() maps the error to its exit code
    assert isinstance(result.exception, UserError) and result.exception.exit_code == 2
    assert message in str(result.exception) and result.exception.hint


def test_a_failing_gate_exits_9_from_a_real_process(tmp_path: Path) -> None:
    """Blocked questions reach no model, so this runs the real graph with the default settings."""
    (tmp_path / "g.jsonl").write_text(
        '{"id": "ok", "question": "Is password: hunter2hunter2 fine?", "expected_status": "blocked"}\n'
        '{"id": "wrong", "question": "My key is sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t, ok?",'
        ' "expected_status": "answered"}\n'
    )
    out = keel("g.jsonl", "--min", "pass_rate=1", "--out", "r.json", cwd=tmp_path)
    assert out.returncode == 9, out.stderr
    assert "pass_rate is 0.5, below the minimum 1" in out.stdout
    assert "[2/2] wrong FAIL blocked" in out.stderr  # one progress line per case when stderr is not a terminal
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["gate"]["ok"] is False and report["metrics"]["outcomes"] == {"blocked": 2}


def test_a_down_voted_answer_exported_by_feedback_becomes_a_failing_case(tmp_path: Path) -> None:
    """The loop the seed asks for: thumbs down -> `keel curation evals` -> `keel eval` catches the same answer."""
    app = make_app()
    question = "What do assert statements insert into a program?"
    asked = app.ask(question, kb="default")
    app.telemetry.flush()
    app.telemetry.feedback.record(asked.trace_id, "down", comment="too terse")
    file = tmp_path / "down.jsonl"
    with file.open("w") as fh:
        assert app.telemetry.feedback.export_eval_cases(fh) == 1
    [case] = load_dataset(file).cases
    assert (case.question, case.rejected_answer, case.comment) == (question, asked.answer, "too terse")
    report = evaluate(app, load_dataset(file), options=RunOptions(kb="default"))
    [row] = report["cases"]
    assert not row["passed"] and row["failures"] == ["gave the down-voted answer again"]
    assert report["metrics"]["answer.not_rejected"] == 0.0
