"""The seed's validation layer: text in, validated and source-checked data out.

1. Ask the model for JSON matching the schema (constrained decoding where the
   provider has it, so the output parses).
2. Validate with pydantic / JSON Schema; on failure re-ask with the errors.
3. Check every extracted string, number and date against the source text;
   re-ask naming each unsupported value.
4. Return the data with the fields that are still unsupported listed in
   ``unverified``: never passed off as verified. If no attempt validated at all,
   raise ``ValidationFailed`` carrying the raw output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..errors import ValidationFailed
from ..models.base import ChatRequest, Message, Usage
from ..models.gateway import Gateway
from .schema import OutputSchema, SchemaMismatch
from .verify import Discrepancy, SourceIndex, find_unsupported

__all__ = ["ExtractResult", "extract"]

SYSTEM_PROMPT = (
    "You extract facts from a text into JSON. Use only values written in the text: copy names and dates "
    "exactly as written, write numbers without thousands separators, and give a currency as its code "
    "as written in the text. Answer with one JSON object with these fields:\n{fields}"
)


@dataclass
class ExtractResult:
    data: dict[str, Any]
    #: fields whose values the source text does not support
    unverified: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    model_calls: int = 0
    models: list[str] = field(default_factory=list)
    attempts: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "unverified": self.unverified,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "cost_usd": round(self.cost_usd, 8),
                "model_calls": self.model_calls,
            },
            "models": self.models,
        }


def _describe_fields(schema: dict[str, Any]) -> str:
    lines = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type", "value")
        desc = prop.get("description") or prop.get("title") or ""
        lines.append(f"- {name} ({kind}){': ' + desc if desc and desc.lower() != name.lower() else ''}")
    return "\n".join(lines)


def _bounded(schema: Any, max_len: int) -> Any:
    """A copy of the schema with every unbounded string capped at ``max_len`` characters.
    Sent to the model only: a small model under a grammar can otherwise loop inside a
    string until it runs out of tokens. Extracted values come from the text, so no
    honest value is longer than the text itself."""
    if isinstance(schema, list):
        return [_bounded(s, max_len) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v, max_len) for k, v in schema.items()}
    if out.get("type") == "string" and "maxLength" not in out and "enum" not in out and "format" not in out:
        out["maxLength"] = max_len
    return out


def _parse(raw: str) -> Any:
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    return json.loads(text)


def extract(
    text: str,
    schema: type[BaseModel] | dict[str, Any] | OutputSchema,
    gateway: Gateway,
    *,
    role: str = "chat",
    max_reasks: int = 2,
    verify: bool = True,
) -> ExtractResult:
    out_schema = OutputSchema.of(schema)
    source = SourceIndex(text)
    messages = [
        Message(role="system", content=SYSTEM_PROMPT.format(fields=_describe_fields(out_schema.json_schema)),
                cache_breakpoint=True),
        Message(role="user", content=text),
    ]
    decoding_schema = _bounded(out_schema.json_schema, max(16, min(len(text), 400)))
    result = ExtractResult(data={})
    best: tuple[dict[str, Any], list[Discrepancy]] | None = None
    last_raw, last_errors = "", []
    for _attempt in range(max_reasks + 1):
        request = ChatRequest(messages=messages, temperature=0.0, json_schema=decoding_schema,
                              schema_name=out_schema.name, max_tokens=512)
        response = gateway.chat(request, role=role)
        result.attempts += 1
        result.usage = result.usage + response.usage
        result.cost_usd += response.cost_usd
        result.model_calls += 0 if response.cached else 1
        if response.model not in result.models:
            result.models.append(response.model)
        last_raw = response.text
        try:
            data = out_schema.validate(_parse(response.text))
        except (json.JSONDecodeError, SchemaMismatch) as exc:
            last_errors = exc.errors if isinstance(exc, SchemaMismatch) else [f"not valid JSON: {exc}"]
            feedback = "Your answer did not fit the schema:\n- " + "\n- ".join(last_errors)
        else:
            problems = find_unsupported(data, source) if verify else []
            if best is None or len(problems) < len(best[1]):
                best = (data, problems)
            if not problems:
                break
            feedback = "Some values are not in the text. Fix them, using only what the text says:\n- " + "\n- ".join(
                p.describe() for p in problems
            )
        messages = [*messages, Message(role="assistant", content=response.text), Message(role="user", content=feedback)]
    if best is None:
        raise ValidationFailed(
            f"the model's output never fitted the schema after {result.attempts} attempts: {'; '.join(last_errors)}",
            raw_output=last_raw, errors=last_errors,
        )
    result.data, result.discrepancies = best
    result.unverified = sorted({p.field for p in best[1]})
    return result
