"""Eval datasets: JSONL cases, the feedback export as it is, and every bad line named by file:line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from keel.errors import InputError, NotFound
from keel.evals import EvalCase, load_dataset, resolve_dataset
from keel.evals.dataset import shipped_datasets


def write(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_a_dataset_loads_every_field_and_skips_only_blank_and_comment_lines(tmp_path: Path) -> None:
    file = write(
        tmp_path / "cases.jsonl",
        "# a comment",
        {"id": "a", "question": "What does assert do?", "must_contain": "assert", "expected_sources": ["pydoc:assert"],
         "expected_route": "fast", "expected_status": "answered", "kb": "docs", "tags": "kb"},
        "",
        {"question": "Is this refused?", "expected_status": "refused", "expected_answer": "No."},
    )
    data = load_dataset(file)
    assert (data.name, data.path) == ("cases", str(file))
    first, second = data.cases
    assert first == EvalCase(id="a", question="What does assert do?", must_contain=["assert"],
                             expected_sources=["pydoc:assert"], expected_route="fast", expected_status="answered",
                             kb="docs", tags=["kb"])
    assert first.expectations() == ["must_contain", "retrieval", "route", "status"]
    assert second.id == "line-4"  # no id: named after its line, so a report still points at it
    assert second.expectations() == ["expected_answer", "status"]


def test_the_feedback_export_loads_as_it_is(tmp_path: Path) -> None:
    """The exact shape FeedbackStore.export_eval_cases writes: its route is context, not an expectation."""
    from keel.telemetry.feedback import FeedbackStore, Vote

    class _Store(FeedbackStore):
        def __init__(self) -> None:  # no database: only the export's formatting is under test
            pass

        def votes(self, *, rating: str | None = None, limit: int = 100) -> list[Vote]:
            return [Vote(7, "trace-7", "down", "made up", "answer_sources@3", "fast", "What is 2+2?", "5")]

    out = io.StringIO()
    assert _Store().export_eval_cases(out) == 1
    file = tmp_path / "feedback.jsonl"
    file.write_text(out.getvalue())
    [case] = load_dataset(file).cases
    assert (case.id, case.question, case.rejected_answer, case.route, case.source) == (
        "feedback-7", "What is 2+2?", "5", "fast", "feedback")
    assert case.expected_route is None and case.expectations() == ["not_rejected"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "a case is a JSON object, not list"),
        ('{"id": "x"}', "question is missing"),
        ('{"id": "x", "question": "   "}', "question: the question is empty"),
        ('{"id": "x", "question": "q", "must_contian": ["a"]}', "unknown field 'must_contian'"),
        ('{"id": "x", "question": "q", "expected_route": "slow"}', "expected_route"),
        ('{"id": "x", "question": "q", "must_contain": [""]}', "must_contain: holds an empty string"),
        ('{"id": "feedback-1", "question": null, "rejected_answer": "x"}', "question: Input should be a valid string"),
    ],
)
def test_a_bad_line_is_an_input_error_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    file = write(tmp_path / "bad.jsonl", {"id": "ok", "question": "fine?"}, line)
    with pytest.raises(InputError) as caught:
        load_dataset(file)
    assert caught.value.message.startswith(f"{file}:2: ")
    assert problem in caught.value.message
    assert caught.value.hint and "expected_sources" in caught.value.hint


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    file = write(tmp_path / "dup.jsonl", {"id": "a", "question": "q1"}, {"id": "b", "question": "q2"},
                 {"id": "a", "question": "q3"})
    with pytest.raises(InputError, match=r"dup.jsonl:3: case id 'a' is already used on line 1"):
        load_dataset(file)


def test_missing_and_empty_datasets(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist") as missing:
        load_dataset(tmp_path / "nope.jsonl")
    assert "keel eval demo" in (missing.value.hint or "")
    with pytest.raises(InputError, match="has no cases"):
        load_dataset(write(tmp_path / "empty.jsonl", "# only a comment", ""))
    with pytest.raises(NotFound, match="neither a file nor a shipped dataset"):
        resolve_dataset("no-such-dataset")


def test_select_by_tags_and_limit_in_file_order(tmp_path: Path) -> None:
    data = load_dataset(write(
        tmp_path / "t.jsonl",
        {"id": "1", "question": "q", "tags": ["kb"]},
        {"id": "2", "question": "q", "tags": ["refusal"]},
        {"id": "3", "question": "q", "tags": ["kb", "smoke"]},
    ))
    assert [c.id for c in data.select(tags=["kb"])] == ["1", "3"]
    assert [c.id for c in data.select(tags=["smoke", "refusal"])] == ["2", "3"]
    assert [c.id for c in data.select(limit=2)] == ["1", "2"]
    assert data.fingerprint(data.select(tags=["kb"])) != data.fingerprint()
    with pytest.raises(InputError, match="no case in t has the tag") as caught:
        data.select(tags=["nope"])
    assert caught.value.hint == "tags in this dataset: kb, refusal, smoke"


def test_the_shipped_demo_dataset_points_at_real_demo_documents() -> None:
    from keel.knowledge import demo_documents

    assert "demo" in shipped_datasets()
    data = resolve_dataset("demo")
    uris = {d.uri for d in demo_documents()}
    expected = {s for c in data.cases for s in c.expected_sources}
    assert expected and expected <= uris, sorted(expected - uris)
    kinds = {k for c in data.cases for k in c.expectations()}
    assert {"retrieval", "route", "status", "expected_answer", "must_contain", "must_not_contain"} <= kinds
    statuses = {c.expected_status for c in data.cases}
    assert {"answered", "refused", "blocked"} <= statuses
    assert len(data.select(tags=["smoke"])) == 3


def test_the_evals_package_exports_a_sorted_importable_all() -> None:
    import keel.evals

    assert keel.evals.__all__ == sorted(keel.evals.__all__)
    assert all(getattr(keel.evals, name) is not None for name in keel.evals.__all__)
