"""Load an output schema: a JSON Schema file, or ``module:Model`` naming a pydantic model.

Either way the caller gets a :class:`OutputSchema` with the JSON Schema to
show the model (and to constrain decoding) and a ``validate`` that returns the
data or raises ``pydantic.ValidationError`` / ``jsonschema.ValidationError``
turned into a list of readable messages.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from ..errors import SchemaError

__all__ = ["OutputSchema", "SchemaMismatch", "load_schema"]


class SchemaMismatch(Exception):
    """The output parsed but does not fit the schema; ``errors`` says where."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class OutputSchema:
    json_schema: dict[str, Any]
    name: str = "output"
    model: type[BaseModel] | None = None

    @classmethod
    def of(cls, schema: type[BaseModel] | dict[str, Any] | OutputSchema) -> OutputSchema:
        if isinstance(schema, OutputSchema):
            return schema
        if isinstance(schema, dict):
            return cls.from_json_schema(schema)
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return cls(json_schema=schema.model_json_schema(), name=schema.__name__, model=schema)
        raise SchemaError(f"not a schema: {schema!r}", hint="pass a pydantic model class or a JSON Schema dict")

    @classmethod
    def from_json_schema(cls, schema: dict[str, Any], name: str | None = None) -> OutputSchema:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise SchemaError(f"invalid JSON Schema: {exc.message}", hint="fix the schema file") from None
        if schema.get("type") != "object":
            raise SchemaError("the schema must describe an object (\"type\": \"object\")",
                              hint="wrap the value in an object with one property")
        return cls(json_schema=schema, name=name or str(schema.get("title") or "output"))

    def validate(self, data: Any) -> dict[str, Any]:
        if self.model is not None:
            try:
                return self.model.model_validate(data).model_dump(mode="json")
            except ValidationError as exc:
                raise SchemaMismatch([
                    f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
                ]) from None
        validator = jsonschema.Draft202012Validator(self.json_schema)
        problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if problems:
            raise SchemaMismatch([
                f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in problems
            ])
        return data


def load_schema(spec: str) -> OutputSchema:
    """``path/to/schema.json`` or ``package.module:ModelName``."""
    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise SchemaError(f"schema file {spec} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{spec} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SchemaError(f"{spec} must hold a JSON object (a JSON Schema)")
        return OutputSchema.from_json_schema(data, name=path.stem)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SchemaError(f"cannot read schema {spec!r}",
                          hint="give a JSON Schema file (schema.json) or module:Model naming a pydantic model")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users name models in their own project
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SchemaError(f"cannot import {module_name!r}: {exc}", hint="check the module path") from None
    model = getattr(module, attr, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise SchemaError(f"{spec} is not a pydantic model class")
    return OutputSchema.of(model)
