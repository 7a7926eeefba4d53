"""LLM-as-judge (optional, off by default): a model grades each answer from 1 to 5.

Turned on with ``keel eval --judge``. The grade goes through the App's gateway
(role ``judge``, else ``chat``), so it is budgeted, cached, traced and costed
like any call; its cost is reported apart from the answers' cost. A judge is
itself a model's opinion: a small model's grades are noise, and even a large
model's should be read beside the deterministic metrics, never instead of
them. The report marks the metric ``judge.score`` and names the judge's model.
"""

from __future__ import annotations

import json
from typing import Any

from ..models.base import ChatRequest, Message
from .dataset import EvalCase
from .metrics import CaseResult

__all__ = ["Judge"]

_SCHEMA = {
    "type": "object",
    "properties": {
        "grade": {"type": "integer", "minimum": 1, "maximum": 5},
        "why": {"type": "string", "maxLength": 160},
    },
    "required": ["grade", "why"],
    "additionalProperties": False,
}

_INSTRUCTIONS = (
    "You grade an assistant's answer to a question. Grade 5: correct, complete and supported by the sources; "
    "3: partly correct or partly unsupported; 1: wrong, off topic or unsupported. A refusal is correct only "
    "when the sources do not hold the answer. Reply with JSON: {\"grade\": 1-5, \"why\": \"one short reason\"}."
)


class Judge:
    def __init__(self, gateway: Any, *, role: str | None = None) -> None:
        self.gateway = gateway
        chains = getattr(gateway, "chains", {}) or {}
        self.role = role or ("judge" if "judge" in chains else "chat")
        self.cost_usd = 0.0
        self.models: set[str] = set()

    def prompt(self, case: EvalCase, result: CaseResult, sources: list[str]) -> str:
        parts = [f"Question: {case.question}"]
        if case.expected_answer:
            parts.append(f"Reference answer: {case.expected_answer}")
        if sources:
            parts.append("Sources:\n" + "\n".join(f"[{n}] {s[:600]}" for n, s in enumerate(sources, 1)))
        parts.append(f"Answer to grade: {result.answer}")
        return "\n\n".join(parts)

    def __call__(self, case: EvalCase, result: CaseResult, answer: dict[str, Any]) -> None:
        """The runner's ``enrich`` hook: grade with the answer's source texts."""
        self.grade(case, result, [str(s.get("text") or "") for s in answer.get("sources") or []])

    def grade(self, case: EvalCase, result: CaseResult, sources: list[str] | None = None) -> None:
        """Set ``result.judge`` to {"score" (0-1), "grade" (1-5), "why", "model"}."""
        request = ChatRequest(
            messages=[Message(role="system", content=_INSTRUCTIONS),
                      Message(role="user", content=self.prompt(case, result, sources or []))],
            json_schema=_SCHEMA,
            schema_name="grade",
            max_tokens=96,
            metadata={"purpose": "eval_judge", "eval_case": case.id},
        )
        response = self.gateway.chat(request, role=self.role)
        self.cost_usd += float(response.cost_usd or 0.0)
        self.models.add(response.model)
        data = json.loads(response.text)
        grade = min(5, max(1, int(data["grade"])))
        result.judge = {"score": round((grade - 1) / 4, 4), "grade": grade, "why": str(data.get("why", ""))[:160],
                        "model": response.model}
