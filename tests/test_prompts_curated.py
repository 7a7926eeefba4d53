"""The feedback loop closed: an up-voted answer a curator accepts becomes an example in the answer prompts."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from keel import App
from keel.errors import ConfigError
from keel.graph import by_purpose
from keel.models.base import ChatRequest
from keel.models.fake import FunctionProvider
from keel.prompts import CuratedExamples

GREETING = {"id": 1, "question": "hello, how are you today?", "answer": "Very well, thank you. How can I help?"}
TAXES = {"id": 2, "question": "when is the tax return due?", "answer": "By the end of April."}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_only_examples_like_the_question_are_chosen_most_similar_last():
    curated = CuratedExamples(lambda: [TAXES, GREETING], k=2, min_similarity=0.3)
    assert curated.select("hello, how are you?") == [GREETING]
    assert curated.select("what is the boiling point of water?") == []
    curated.min_similarity = 0.0
    assert curated.select("hello, how are you?")[-1] == GREETING  # the closest sits next to the question


def test_the_accepted_set_is_re_read_once_its_refresh_period_has_passed():
    accepted: list[dict[str, Any]] = []
    clock = Clock()
    reads: list[int] = []

    def load() -> list[dict[str, Any]]:
        reads.append(1)
        return list(accepted)

    curated = CuratedExamples(load, refresh_s=30, clock=clock)
    assert curated.select("hello, how are you today?") == []
    accepted.append(GREETING)
    clock.now = 29
    assert curated.select("hello, how are you today?") == [] and len(reads) == 1  # not yet re-read
    clock.now = 30
    assert curated.select("hello, how are you today?") == [GREETING] and len(reads) == 2


def test_a_store_that_cannot_be_read_keeps_the_examples_last_read_and_warns_once(caplog):
    clock = Clock()
    answers: list[Any] = [[GREETING], OSError("database is locked"), OSError("database is locked"), [TAXES]]

    def load() -> list[dict[str, Any]]:
        result = answers.pop(0)
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[no-any-return]

    curated = CuratedExamples(load, refresh_s=1, clock=clock)
    assert curated.select("hello, how are you today?") == [GREETING]
    with caplog.at_level(logging.WARNING, logger="keel.prompts"):
        for now in (1, 2):
            clock.now = now
            assert curated.select("hello, how are you today?") == [GREETING]
    assert [r.getMessage() for r in caplog.records] == [
        "curated examples could not be read (database is locked); keeping the 1 last read"
    ]
    clock.now = 3
    assert curated.select("hello, how are you today?") == [] and curated.select("tax return due?") == [TAXES]


def test_an_example_too_long_for_a_small_models_context_is_never_shown():
    essay = {"id": 3, "question": "hello, how are you today?", "answer": "Well. " * 300}
    curated = CuratedExamples(lambda: [essay, GREETING], max_chars=1200)
    assert curated.select("hello, how are you today?") == [GREETING]


def test_k_zero_shows_none_without_reading_the_store():
    curated = CuratedExamples(lambda: pytest.fail("read"), k=0)  # type: ignore[arg-type,return-value]
    assert curated.select("hello") == []


# -- through the App: vote, accept, and the next similar question's prompt shows it -----------------


@pytest.fixture
def prompts_seen() -> list[str]:
    return []


def _app(prompts_seen: list[str], **settings: Any) -> App:
    replies = iter(["Very well, thank you. How can I help?", "Fine, thanks.", "Fine, thanks.", "Fine, thanks."])

    def answer(request: ChatRequest) -> str:
        prompts_seen.append(request.messages[0].content)
        return next(replies)

    provider = FunctionProvider(
        by_purpose({"answer": answer, "route_judge": ['{"label": "chat", "why": "small talk"}']}), name="scripted"
    )
    return App(
        providers={"scripted": provider},
        models={"scripted": {"provider": "fake"}},
        roles={"chat": ["scripted"], "fast": ["scripted"]},
        gateway={"cache": {"enabled": False}},
        **settings,
    )


def _walk(nodes: list[Any]) -> Any:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def _accept_first_answer(app: App) -> tuple[int, str]:
    first = app.ask("hello, how are you today?", user="ann")
    assert first.answer == "Very well, thank you. How can I help?"
    vote = app.telemetry.feedback.record(first.trace_id, "up", comment="friendly")
    assert vote.curation_id is not None
    app.telemetry.feedback.curate(vote.curation_id, accept=True)
    return vote.curation_id, first.trace_id


def test_an_accepted_answer_is_shown_to_the_model_for_a_similar_question(keel_home: Path, prompts_seen):
    app = _app(prompts_seen, prompts={"curated_refresh_s": 0})
    curation_id, _ = _accept_first_answer(app)
    assert "Answers that readers rated as good" not in prompts_seen[0]  # nothing was accepted yet

    answer = app.ask("hello, how are you?", user="bob")
    assert answer.status == "answered"
    assert "Q: hello, how are you today?\nA: Very well, thank you. How can I help?" in prompts_seen[-1]
    app.telemetry.flush()
    out = io.StringIO()
    app.telemetry.audit.export(out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    last_answer = [r for r in records if r["event"] == "answer"][-1]
    assert last_answer["data"]["curated_examples"] == [curation_id]
    [call] = [s for s in _walk(app.telemetry.traces.tree(answer.trace_id)) if s.name == "keel.llm.answer"]
    assert json.loads(call.attributes["keel.examples.curated"]) == [curation_id]

    seen = len(prompts_seen)
    app.ask("hi there", user="bob")  # not like it (similarity 0.05): not shown
    assert len(prompts_seen) == seen + 1 and "Answers that readers rated as good" not in prompts_seen[-1]


def test_curated_examples_zero_switches_the_loop_off(keel_home: Path, prompts_seen):
    app = _app(prompts_seen, prompts={"curated_examples": 0})
    _accept_first_answer(app)
    app.ask("hello, how are you?", user="bob")
    assert len(prompts_seen) == 2 and "Answers that readers rated as good" not in prompts_seen[-1]
    assert app.curated_examples is None


def test_a_bad_prompts_setting_is_a_config_error(keel_home: Path, prompts_seen):
    with pytest.raises(ConfigError, match="curated_min_similarity"):
        _app(prompts_seen, prompts={"curated_min_similarity": 2})
