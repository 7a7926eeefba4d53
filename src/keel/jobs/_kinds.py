"""The kinds of job: what each takes (checked at submit time) and how a worker runs it.

    ask      {question, kb?, session?, user?, tenant?}   -> the Answer JSON
    ingest   {paths, kb?}                                -> the IngestReport
    extract  {text, schema, role?}                       -> the ExtractResult

A run returns ``(result, error)``: an ``ask`` that a limit or budget stopped keeps its
partial Answer as the result *and* fails with the error that stopped it.

Each run gets the job's cancel token (current while it runs, see :mod:`keel._cancel`): an
``ask`` stops at its next node, model or tool call, an ``extract`` at its next model call,
an ``ingest`` after the file it is storing (those stored stay; submitting again skips them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._cancel import CancelToken, check_cancelled
from ..config import Settings
from ..errors import ApprovalRequired, InputError, KeelError, SchemaError

if TYPE_CHECKING:
    from ..app import App

__all__ = ["KINDS", "Kind", "Outcome", "validate"]

Outcome = tuple[dict[str, Any] | None, KeelError | None]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AskPayload(_Payload):
    question: str = Field(min_length=1)
    kb: str | None = None
    session: str | None = None
    user: str | None = None
    tenant: str | None = None


class IngestPayload(_Payload):
    paths: list[str] = Field(min_length=1)
    kb: str | None = None

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        # the worker may run elsewhere (another cwd, another process): pin each path now
        if any(not p.strip() for p in paths):
            raise ValueError("a path is empty")
        return [str(Path(p).expanduser().absolute()) for p in paths]


class ExtractPayload(_Payload):
    text: str = Field(min_length=1)
    schema_: dict[str, Any] = Field(alias="schema")
    role: str = "chat"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass(frozen=True)
class Kind:
    payload: type[_Payload]
    run: Callable[[App, dict[str, Any], CancelToken], Outcome]
    #: extra checks that need the settings (question length, JSON Schema validity)
    check: Callable[[_Payload, Settings], None] | None = None


def _run_ask(app: App, payload: dict[str, Any], cancel: CancelToken) -> Outcome:
    answer = app.ask(payload["question"], kb=payload.get("kb"), session=payload.get("session"),
                     user=payload.get("user"), tenant=payload.get("tenant"), cancel=cancel)
    error = answer.exception
    # waiting for a person is the answer, not a failure: the approval id is in the result
    return answer.to_dict(), None if isinstance(error, ApprovalRequired) else error


def _check_ask(payload: _Payload, settings: Settings) -> None:
    from ..guardrails.input_guard import validate_question

    validate_question(payload.question, settings.guardrails)  # type: ignore[attr-defined]


def _run_ingest(app: App, payload: dict[str, Any], cancel: CancelToken) -> Outcome:
    def stop_if_cancelled(done: int, total: int, label: str) -> None:  # called after each file
        check_cancelled()

    return app.ingest(list(payload["paths"]), kb=payload.get("kb"), progress=stop_if_cancelled).to_dict(), None


def _run_extract(app: App, payload: dict[str, Any], cancel: CancelToken) -> Outcome:
    return app.extract(payload["text"], payload["schema"], role=payload.get("role", "chat")).to_dict(), None


def _check_extract(payload: _Payload, settings: Settings) -> None:
    from ..structured import OutputSchema

    try:
        OutputSchema.from_json_schema(payload.schema_)  # type: ignore[attr-defined]
    except SchemaError as exc:
        raise InputError(f"bad payload for an 'extract' job: schema: {exc.message}", hint=exc.hint) from None


KINDS: dict[str, Kind] = {
    "ask": Kind(AskPayload, _run_ask, _check_ask),
    "ingest": Kind(IngestPayload, _run_ingest),
    "extract": Kind(ExtractPayload, _run_extract, _check_extract),
}


def validate(kind: str, payload: Any, settings: Settings) -> dict[str, Any]:
    """The payload as the worker will receive it, or InputError saying what is wrong."""
    spec = KINDS.get(kind)
    if spec is None:
        raise InputError(f"unknown job kind {kind!r}", hint=f"use one of: {', '.join(sorted(KINDS))}")
    if not isinstance(payload, dict):
        raise InputError(f"the payload of a {kind!r} job must be a JSON object, not {type(payload).__name__}",
                         hint=_fields_hint(spec))
    try:
        parsed = spec.payload.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(payload)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InputError(f"bad payload for a {kind!r} job: {where}: {first['msg']}{more}",
                         hint=_fields_hint(spec)) from None
    if spec.check is not None:
        spec.check(parsed, settings)
    return parsed.model_dump(mode="json", by_alias=True, exclude_none=True)


def _fields_hint(spec: Kind) -> str:
    fields = [f.alias or name if f.is_required() else f"{f.alias or name}?"
              for name, f in spec.payload.model_fields.items()]
    return "the payload takes {" + ", ".join(fields) + "}"
