"""The router: rules first, the classifier when sure, the judge only when unsure; reasons and scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keel.config import RouterSettings
from keel.errors import ConfigError, InputError, LimitExceeded
from keel.router import (
    HashedBagOfWords,
    Router,
    SoftmaxClassifier,
    apply_rules,
    bundled_examples,
    load_classifier,
    load_examples,
    train,
)


@pytest.fixture(scope="module")
def classifier() -> SoftmaxClassifier:
    return load_classifier(None, HashedBagOfWords())


def router(classifier: SoftmaxClassifier, judge=None, **settings) -> Router:  # type: ignore[no-untyped-def]
    return Router(classifier, HashedBagOfWords(), RouterSettings(**settings), judge=judge)


@pytest.mark.parametrize(
    ("question", "route", "reason"),
    [
        ("delete notes.txt in the workspace", "agent", "rule: needs the delete_file tool"),
        ("please read todo.md", "agent", "rule: needs the read_file tool"),
        ("what is 1234 * 5678?", "agent", "rule: needs the calculator tool"),
        ("what are the files in my workspace", "agent", "rule: needs the list_files tool"),
        ("what is a decorator? how is it applied?", "agent", "rule: multi-part request"),
        ("according to the documentation, what is a coroutine", "fast", "rule: the question names the knowledge base"),
    ],
)
def test_rules_fire_on_plain_needs(question: str, route: str, reason: str) -> None:
    hit = apply_rules(question)
    assert hit is not None and (hit.route, hit.reason) == (route, reason)


def test_long_questions_and_named_kbs() -> None:
    assert apply_rules("word " * 61).reason == "rule: long request (61 words > 60)"  # type: ignore[union-attr]
    assert apply_rules("hello there", kb_named=True).needs_kb  # type: ignore[union-attr]
    assert apply_rules("hello there") is None


def test_classifier_decides_when_sure_with_scores(classifier: SoftmaxClassifier) -> None:
    d = router(classifier).decide("what does the yield statement do")
    assert (d.route, d.needs_kb, d.stage, d.label) == ("fast", True, "classifier", "kb")
    assert set(d.scores) == {"agent", "chat", "kb"} and abs(sum(d.scores.values()) - 1) < 1e-3
    assert d.reason.startswith("classifier: kb (p=") and d.overhead_us > 0


def test_judge_asked_only_when_unsure(classifier: SoftmaxClassifier) -> None:
    asked: list[str] = []

    def judge(q: str) -> tuple[str, str]:
        asked.append(q)
        return "agent", "needs steps"

    sure = router(classifier, judge, judge_below=0.05).decide("what does the yield statement do")
    assert sure.stage == "classifier" and asked == []
    unsure = router(classifier, judge, judge_below=0.99).decide("what does the yield statement do")
    assert (unsure.stage, unsure.route, asked) == ("judge", "agent", ["what does the yield statement do"])
    assert unsure.reason.startswith("judge: agent (needs steps); classifier unsure: kb")


def test_failing_or_nonsense_judge_keeps_the_classifier_guess(classifier: SoftmaxClassifier) -> None:
    def broken(q: str) -> tuple[str, str]:
        raise ValueError("bad json")

    d = router(classifier, broken, judge_below=0.99).decide("hello")
    assert d.stage == "classifier" and "judge failed: bad json" in d.reason
    d = router(classifier, lambda q: ("banana", "?"), judge_below=0.99).decide("hello")
    assert d.label == "chat"


def test_limits_raised_in_the_judge_propagate(classifier: SoftmaxClassifier) -> None:
    def over(q: str) -> tuple[str, str]:
        raise LimitExceeded("max_cost_usd", 1, 0.5)

    with pytest.raises(LimitExceeded):
        router(classifier, over, judge_below=0.99).decide("hello")


def test_held_out_accuracy_beats_the_majority_class() -> None:
    examples = bundled_examples()
    _, report = train(examples)
    majority = max(report.per_label.values()) / report.examples
    assert report.holdout >= 30 and report.holdout_accuracy > majority + 0.3


def test_training_on_user_labels_saves_and_is_picked_up(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps({"text": f"zorblat report {i}", "label": "agent"}) for i in range(30)))
    path = tmp_path / "router" / "model.npz"
    model, report = train(load_examples(labels) + bundled_examples(), save_to=path)
    loaded = load_classifier(path, HashedBagOfWords())
    assert report.path == str(path) and np.allclose(loaded.weights, model.weights)
    assert router(loaded).decide("zorblat report").label == "agent"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not a"),
        ('{"text": "x", "label": "maybe"}', "label 'maybe' is not one of"),
        ('{"text": "x"}', "is not a"),
    ],
)
def test_bad_label_files_say_what_to_fix(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_examples(path)


def test_training_needs_every_label() -> None:
    with pytest.raises(InputError, match="no examples labelled"):
        train([("hello", "chat")])


def test_features_are_stable_across_processes() -> None:
    v = HashedBagOfWords(dim=64).embed(["delete notes.txt"])[0]
    assert np.isclose(np.linalg.norm(v), 1.0) and np.count_nonzero(v) > 5
    assert np.array_equal(v, HashedBagOfWords(dim=64).embed(["delete notes.txt"])[0])


def test_a_read_only_home_still_gets_the_bundled_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fitted bundled model is cached beside the user's model; a home that refuses the write
    (readOnlyRootFilesystem, a read-only mount) costs a refit, never a failed start."""
    from keel.router import training

    def refuse(self: SoftmaxClassifier, path: Path) -> None:
        raise PermissionError(f"[Errno 30] Read-only file system: {path}")

    monkeypatch.setattr(training, "_fitted", {})
    monkeypatch.setattr(SoftmaxClassifier, "save", refuse)
    model = load_classifier(tmp_path / "router" / "model.npz", HashedBagOfWords())
    assert model.weights.shape[0] == HashedBagOfWords().dim and not (tmp_path / "router").exists()


def test_a_damaged_router_model_is_a_config_error_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "router" / "model.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 half a zip")  # a write cut short
    with pytest.raises(ConfigError, match=r"router model .*model.npz cannot be read") as caught:
        load_classifier(path, HashedBagOfWords())
    assert "keel router train" in (caught.value.hint or "")


def test_a_damaged_bundled_cache_is_refitted_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.router import training

    monkeypatch.setattr(training, "_fitted", {})
    first = load_classifier(tmp_path / "model.npz", HashedBagOfWords())  # no user model: the bundled one, cached
    [cache] = list(tmp_path.glob("bundled-*.npz"))
    cache.write_bytes(b"garbage")
    monkeypatch.setattr(training, "_fitted", {})
    again = load_classifier(tmp_path / "model.npz", HashedBagOfWords())
    assert np.allclose(again.weights, first.weights)
    assert np.allclose(SoftmaxClassifier.load(cache).weights, first.weights)  # written whole again


def test_saving_replaces_the_file_whole_and_leaves_no_partial(tmp_path: Path, classifier: SoftmaxClassifier,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.npz"
    classifier.save(path)
    before = path.read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="No space left"):
        classifier.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_model_trained_for_other_features_is_named_in_a_warning(tmp_path: Path, caplog) -> None:
    small = HashedBagOfWords(dim=64)
    examples = bundled_examples()
    model = SoftmaxClassifier.fit(small.embed([t for t, _ in examples]), [lab for _, lab in examples], epochs=5)
    model.save(tmp_path / "model.npz")
    with caplog.at_level("WARNING", logger="keel.router"):
        used = load_classifier(tmp_path / "model.npz", HashedBagOfWords())
    assert used.weights.shape[0] == 4096
    assert "trained for 64 features, not hashed-bow's 4096" in caplog.text
