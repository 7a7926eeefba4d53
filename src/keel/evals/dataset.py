"""Evaluation datasets: JSONL, one case per line.

A case is a question and what a good run does with it. Every expectation is
optional; a case with none still measures latency, cost and the verdict::

    {"id": "assert-1", "question": "What does assert do?",
     "must_contain": ["assert"], "expected_sources": ["pydoc:assert"],
     "expected_route": "fast", "expected_status": "answered", "tags": ["kb"]}

The file ``keel curation evals`` writes (down-voted answers) loads as it is:
its ``rejected_answer`` becomes a check that the new answer is not the same
one, and its ``route``, ``comment``, ``trace_id`` and ``prompt_version`` are
kept as context, not expectations. A line that is not a valid case raises
``InputError`` naming ``file:line`` and the problem; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError, NotFound

__all__ = ["DEMO_DATASET", "Dataset", "EvalCase", "Outcome", "load_dataset", "resolve_dataset"]

#: what became of a question: the Answer's status, with refusals and blocks told apart
Outcome = Literal["answered", "refused", "blocked", "stopped", "pending_approval", "error"]
#: the name ``keel eval demo`` resolves to, shipped in keel/evals/data/
DEMO_DATASET = "demo"


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class EvalCase(BaseModel):
    """One evaluation case. Unknown fields are an error (a typo must not drop a check)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    question: str
    #: the reference answer: scored by exact match, containment and token F1
    expected_answer: str | None = None
    #: strings the answer must hold (case- and whitespace-insensitive)
    must_contain: list[str] = Field(default_factory=list)
    #: strings the answer must not hold
    must_not_contain: list[str] = Field(default_factory=list)
    #: uris, document ids or chunk ids a retrieved source should match (hit@k, MRR)
    expected_sources: list[str] = Field(default_factory=list)
    expected_route: Literal["fast", "agent"] | None = None
    expected_status: Literal["answered", "refused", "blocked", "stopped", "pending_approval"] | None = None
    #: the knowledge base to ask (default: the App's default_kb, or ``keel eval --kb``)
    kb: str | None = None
    tags: list[str] = Field(default_factory=list)
    #: free-form notes, carried into the report
    meta: dict[str, Any] = Field(default_factory=dict)
    # -- written by `keel curation evals` (feedback.export_eval_cases) ---------------------
    #: the answer a person down-voted: the new answer must not be (nearly) the same
    rejected_answer: str | None = None
    comment: str | None = None
    #: the trace of the rejected answer (not of this run)
    trace_id: str | None = None
    prompt_version: str | None = None
    #: the route that produced the rejected answer: context, not an expectation
    route: str | None = None
    source: str | None = None

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the question is empty")
        return v

    @field_validator("must_contain", "must_not_contain", "expected_sources", "tags", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("must_contain", "must_not_contain", "expected_sources")
    @classmethod
    def _no_blank_items(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("holds an empty string, which every answer would match")
        return v

    def expectations(self) -> list[str]:
        """The kinds of checks this case carries (for the report)."""
        kinds = {
            "expected_answer": self.expected_answer is not None,
            "must_contain": bool(self.must_contain),
            "must_not_contain": bool(self.must_not_contain),
            "retrieval": bool(self.expected_sources),
            "route": self.expected_route is not None,
            "status": self.expected_status is not None,
            "not_rejected": self.rejected_answer is not None,
        }
        return [k for k, on in kinds.items() if on]


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    cases: list[EvalCase]

    def fingerprint(self, cases: list[EvalCase] | None = None) -> str:
        """A hash of the cases' ids and questions: two reports compare only when it matches."""
        chosen = self.cases if cases is None else cases
        blob = json.dumps(sorted((c.id, c.question) for c in chosen), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def select(self, *, tags: list[str] | None = None, limit: int | None = None) -> list[EvalCase]:
        """The cases carrying any of ``tags`` (all when none given), at most ``limit`` of them, in file order."""
        chosen = [c for c in self.cases if not tags or set(tags) & set(c.tags)]
        if tags and not chosen:
            known = sorted({t for c in self.cases for t in c.tags}) or ["none"]
            raise InputError(
                f"no case in {self.name} has the tag(s) {', '.join(tags)}",
                hint=f"tags in this dataset: {', '.join(known)}",
            )
        return chosen[:limit] if limit is not None else chosen


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        elif err["type"] == "missing":
            parts.append(f"{where} is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


_FIELDS_HINT = (
    "each line is one JSON object: id, question, and optional expected_answer, must_contain, must_not_contain, "
    "expected_sources, expected_route (fast|agent), expected_status, kb, tags (see docs/evals.md)"
)


def _parse_line(line: str, where: str, lineno: int) -> EvalCase:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})", hint=_FIELDS_HINT) from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: a case is a JSON object, not {type(data).__name__}", hint=_FIELDS_HINT)
    data.setdefault("id", f"line-{lineno}")
    try:
        return EvalCase.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: {_explain(exc)}", hint=_FIELDS_HINT) from None


def load_dataset(path: str | Path, *, name: str | None = None) -> Dataset:
    """Read a JSONL dataset; blank lines and lines starting with ``#`` are allowed, nothing else is skipped."""
    file = Path(path)
    if not file.is_file():
        raise NotFound(
            f"dataset {file} does not exist",
            hint="pass a JSONL file of cases, `keel eval demo` for the shipped one, or export down-voted answers "
            "with `keel curation evals --out cases.jsonl`",
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read dataset {file}: {exc}", hint="a dataset is a UTF-8 JSONL file") from None
    cases: list[EvalCase] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{file}:{lineno}"
        case = _parse_line(line, where, lineno)
        if case.id in first_line:
            raise InputError(
                f"{where}: case id {case.id!r} is already used on line {first_line[case.id]}",
                hint="give every case its own id: reports and baselines match cases by id",
            )
        first_line[case.id] = lineno
        cases.append(case)
    if not cases:
        raise InputError(f"dataset {file} has no cases", hint=_FIELDS_HINT)
    return Dataset(name or file.stem, str(file), cases)


def shipped_datasets() -> list[str]:
    """Names of the datasets shipped in keel/evals/data/."""
    folder = resources.files("keel.evals") / "data"
    return sorted(p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl"))


def resolve_dataset(ref: str) -> Dataset:
    """A path to a JSONL file, or the name of a shipped dataset (``demo``)."""
    path = Path(ref)
    if path.exists() or ref.endswith(".jsonl") or "/" in ref:
        return load_dataset(path)
    if ref in shipped_datasets():
        shipped = resources.files("keel.evals") / "data" / f"{ref}.jsonl"
        with resources.as_file(shipped) as real:
            return load_dataset(real, name=ref)
    raise NotFound(
        f"dataset {ref!r} is neither a file nor a shipped dataset",
        hint=f"pass a JSONL file, or one of: {', '.join(shipped_datasets())}",
    )
