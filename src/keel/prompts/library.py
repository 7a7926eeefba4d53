"""Prompt templates as files, versioned by content, rendered in a sandbox.

A template is a ``.j2`` file; its version is the first 12 hex digits of the
SHA-256 of its bytes, so editing a prompt changes its version and every
answer's trace says which prompt produced it. Rendering uses Jinja2's
``SandboxedEnvironment`` with ``StrictUndefined``: a template cannot reach
Python internals, and a missing variable is an error, not an empty string.
User templates in an override folder replace the built-ins by name.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError

__all__ = ["PromptLibrary", "PromptTemplate", "Rendered"]

log = logging.getLogger("keel.prompts")


@dataclass(frozen=True)
class Rendered:
    text: str
    name: str
    version: str


@dataclass
class PromptTemplate:
    name: str
    source: str
    origin: str
    _compiled: jinja2.Template

    @property
    def version(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]

    def render(self, **variables: Any) -> Rendered:
        try:
            text = self._compiled.render(**variables)
        except jinja2.UndefinedError as exc:
            raise ConfigError(
                f"prompt {self.name!r} ({self.origin}) needs a variable: {exc.message}",
                hint="fix the template or pass the variable",
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise ConfigError(
                f"prompt {self.name!r} tried something the sandbox forbids: {exc}",
                hint="templates may only format the variables they are given",
            ) from None
        return Rendered(text.strip(), self.name, self.version)


class PromptLibrary:
    def __init__(self, override_dir: Path | None = None, *, required: bool = False) -> None:
        """``override_dir``: templates there replace the built-ins of the same name. ``required``:
        the folder was named in the settings, so a missing one is a ConfigError, not "no overrides"."""
        self.env = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        # keep key order as written: a small model copies the order it is shown
        self.env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
        self.override_dir = override_dir
        self._cache: dict[str, PromptTemplate] = {}
        if override_dir is not None:
            self._check_overrides(override_dir, required)

    def _check_overrides(self, folder: Path, required: bool) -> None:
        if not folder.is_dir():
            if required:
                raise ConfigError(f"prompts.dir {folder} is not a folder",
                                  hint="create it, or unset prompts.dir to use <home>/prompts")
            return
        unknown = sorted(p.stem for p in folder.glob("*.j2") if p.stem not in self.names())
        if unknown:  # a misspelt override would otherwise be ignored without a word
            log.warning("prompt templates in %s replace no built-in: %s (built-ins: %s)",
                        folder, ", ".join(unknown), ", ".join(self.names()))

    def _source(self, name: str) -> tuple[str, str]:
        if self.override_dir is not None:
            path = self.override_dir / f"{name}.j2"
            if path.is_file():
                return path.read_text(encoding="utf-8"), str(path)
        ref = resources.files("keel.prompts").joinpath(f"templates/{name}.j2")
        if not ref.is_file():
            raise ConfigError(
                f"no prompt template named {name!r}",
                hint=f"add {name}.j2 to the prompts folder, or use one of: {', '.join(self.names())}",
            )
        return ref.read_text(encoding="utf-8"), f"keel/prompts/templates/{name}.j2"

    def get(self, name: str) -> PromptTemplate:
        if name not in self._cache:
            source, origin = self._source(name)
            try:
                compiled = self.env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(
                    f"prompt {origin} line {exc.lineno}: {exc.message}", hint="fix the Jinja2 syntax"
                ) from None
            self._cache[name] = PromptTemplate(name, source, origin, compiled)
        return self._cache[name]

    def render(self, name: str, **variables: Any) -> Rendered:
        return self.get(name).render(**variables)

    def names(self) -> list[str]:
        folder = resources.files("keel.prompts").joinpath("templates")
        return sorted(p.name.removesuffix(".j2") for p in folder.iterdir() if p.name.endswith(".j2"))

    def versions(self) -> dict[str, str]:
        return {name: self.get(name).version for name in self.names()}
