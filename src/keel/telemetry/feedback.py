"""Thumbs up/down on answers, and the loop back into prompts and evaluations.

A vote is tied to its trace, so it carries the prompt version and route that
produced the answer (read from the trace's spans when the caller does not say).
Up-voted answers join a curation queue of few-shot candidates that a person
accepts or rejects; down-voted answers export as evaluation cases (JSONL) for
``keel eval``, so the failure becomes a regression test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import InputError, NotFound
from . import _schema as t
from .traces import TraceStore

__all__ = ["FeedbackStore", "Vote"]

Rating = Literal["up", "down"]
_RATINGS = {"up": 1, "down": -1, "+1": 1, "-1": -1, "1": 1}


@dataclass(frozen=True)
class Vote:
    id: int
    trace_id: str
    rating: str
    comment: str | None
    prompt_version: str | None
    route: str | None
    question: str | None
    answer: str | None
    curation_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeedbackStore:
    def __init__(self, engine: Engine, traces: TraceStore,
                 on_vote: Callable[[str, str | None], None] | None = None) -> None:
        self.engine = engine
        self.traces = traces
        self._on_vote = on_vote  # (rating, route) once a vote is stored: the metrics counter

    def record(
        self,
        trace_id: str,
        rating: str,
        *,
        comment: str | None = None,
        user_id: str | None = None,
        question: str | None = None,
        answer: str | None = None,
        prompt_version: str | None = None,
        route: str | None = None,
    ) -> Vote:
        """Store a vote on a trace; fills question, answer, prompt version and route from the trace."""
        score = _RATINGS.get(str(rating).lower())
        if score is None:
            raise InputError(f"rating {rating!r} is not up or down", hint="use up or down")
        found = self._from_trace(trace_id)
        question = question if question is not None else found.get("question")
        answer = answer if answer is not None else found.get("answer")
        prompt_version = prompt_version or found.get("prompt_version")
        route = route or found.get("route")
        row = {
            "ts": time.time(),
            "trace_id": trace_id,
            "rating": score,
            "comment": comment,
            "prompt_version": prompt_version,
            "route": route,
            "question": question,
            "answer": answer,
            "user_id": user_id,
        }
        with self.engine.begin() as conn:
            fid = conn.execute(t.feedback.insert().values(**row)).inserted_primary_key[0]
            cid = None
            if score > 0:
                cid = conn.execute(
                    t.curation.insert().values(
                        feedback_id=fid,
                        ts=row["ts"],
                        status="pending",
                        question=question,
                        answer=answer,
                        prompt_version=prompt_version,
                    )
                ).inserted_primary_key[0]
        if self._on_vote is not None:
            self._on_vote("up" if score > 0 else "down", route)
        return Vote(
            fid,
            trace_id,
            "up" if score > 0 else "down",
            comment,
            prompt_version,
            route,
            question,
            answer,
            cid,
        )

    def _from_trace(self, trace_id: str) -> dict[str, str]:
        """Question, answer, prompt version and route as the trace's spans recorded them.

        A trace that ``telemetry.sample_ratio`` left unrecorded still has its model calls' cost rows
        (costs see every call): the vote is taken, with the route and prompt version they name."""
        try:
            roots = self.traces.tree(trace_id)
        except NotFound:
            unsampled = self._from_costs(trace_id)
            if unsampled is None:
                raise NotFound(
                    f"no trace with id {trace_id!r} to attach feedback to",
                    hint="copy the trace_id from the answer, or list traces with `keel traces list`",
                ) from None
            return unsampled
        found: dict[str, str] = {}
        root = roots[0].attributes
        if "input.value" in root:
            found["question"] = str(root["input.value"])
        if "output.value" in root:
            found["answer"] = str(root["output.value"])
        stack = list(roots)
        while stack:
            node = stack.pop()
            a = node.attributes
            if "llm.prompt_template.version" in a:
                found.setdefault("prompt_version", str(a["llm.prompt_template.version"]))
            if "keel.route" in a:
                found.setdefault("route", str(a["keel.route"]))
            stack.extend(node.children)
        return found

    def _from_costs(self, trace_id: str) -> dict[str, str] | None:
        """Route and prompt version from the trace's first cost row; None if it made no model call."""
        c = t.model_calls
        with self.engine.connect() as conn:  # tree() flushed the writer: the rows are on disk
            row = conn.execute(
                sa.select(c.c.route, c.c.meta).where(c.c.trace_id == trace_id).order_by(c.c.id).limit(1)
            ).first()
        if row is None:
            return None
        meta = json.loads(row.meta or "{}")
        found = {"route": row.route, "prompt_version": meta.get("prompt_version")}
        return {k: str(v) for k, v in found.items() if v}

    def votes(self, *, rating: str | None = None, limit: int = 100) -> list[Vote]:
        q = (
            sa.select(t.feedback, t.curation.c.id.label("cid"))
            .outerjoin(t.curation, t.curation.c.feedback_id == t.feedback.c.id)
            .order_by(t.feedback.c.id.desc())
            .limit(limit)
        )
        if rating:
            q = q.where(t.feedback.c.rating == _RATINGS[rating])
        with self.engine.connect() as conn:
            return [
                Vote(
                    r.id,
                    r.trace_id,
                    "up" if r.rating > 0 else "down",
                    r.comment,
                    r.prompt_version,
                    r.route,
                    r.question,
                    r.answer,
                    r.cid,
                )
                for r in conn.execute(q)
            ]

    def stats(self, by: str = "prompt", *, since: float | None = None) -> list[dict[str, Any]]:
        """Votes per prompt version (``by="prompt"``) or route: ups, downs and the share up, most
        voted first. Comparing a prompt's versions is how a change to it is judged in production."""
        column = {"prompt": t.feedback.c.prompt_version, "route": t.feedback.c.route}.get(by)
        if column is None:
            raise InputError(f"cannot group feedback by {by!r}", hint="use prompt or route")
        up = sa.func.sum(sa.case((t.feedback.c.rating > 0, 1), else_=0))
        q = (sa.select(column.label("key"), sa.func.count().label("votes"), up.label("up"))
             .group_by(column).order_by(sa.desc("votes"), column))
        if since is not None:
            q = q.where(t.feedback.c.ts >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [{"key": r.key, "votes": r.votes, "up": int(r.up), "down": r.votes - int(r.up),
                 "up_share": round(int(r.up) / r.votes, 4)} for r in rows]

    def curation_queue(self, status: str = "pending") -> list[dict[str, Any]]:
        """Few-shot candidates (up-voted question/answer pairs) waiting for a person's decision."""
        q = sa.select(t.curation).where(t.curation.c.status == status).order_by(t.curation.c.id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def curate(self, curation_id: int, accept: bool) -> None:
        """Accept a candidate (it becomes a few-shot example) or reject it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                t.curation.update()
                .where(t.curation.c.id == curation_id)
                .values(status="accepted" if accept else "rejected")
            ).rowcount
        if not done:
            raise NotFound(f"no curation candidate {curation_id}", hint="list them with curation_queue()")

    def few_shot_examples(self, prompt_version: str | None = None) -> list[dict[str, Any]]:
        """Accepted candidates as {"id", "question", "answer"}, for a few-shot selector (keel's
        answer prompts read them through :class:`keel.prompts.CuratedExamples`)."""
        rows = self.curation_queue("accepted")
        return [
            {"id": r["id"], "question": r["question"], "answer": r["answer"]}
            for r in rows
            if r["question"] and r["answer"] and (prompt_version is None or r["prompt_version"] == prompt_version)
        ]

    def export_eval_cases(self, out: IO[str]) -> int:
        """Down-voted answers as JSONL evaluation cases: the question, the rejected answer, why."""
        n = 0
        for vote in reversed(self.votes(rating="down", limit=1_000_000)):
            case = {
                "id": f"feedback-{vote.id}",
                "question": vote.question,
                "rejected_answer": vote.answer,
                "comment": vote.comment,
                "trace_id": vote.trace_id,
                "prompt_version": vote.prompt_version,
                "route": vote.route,
                "source": "feedback",
            }
            out.write(json.dumps(case, ensure_ascii=False) + "\n")
            n += 1
        return n
