"""The ``keel`` command line: one thin module per command group.

Each command parses its arguments and calls one ``App`` method. Errors are shown
once, here at the edge: a ``KeelError`` becomes one line (plus what to do) and
its exit code; ``KEEL_RAISE_ERRORS=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from ..errors import KeelError
from . import extract as _extract
from . import init as _init
from . import models as _models

app = typer.Typer(
    name="keel",
    help="keel: the production runtime for LLM applications.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_init.register(app)
_models.register(app)
_extract.register(app)


def _register_all() -> None:
    """Every module in this package that defines ``register(app)`` adds its commands."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in ("init", "models", "extract"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(app)


_register_all()


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code here instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except KeelError as exc:
        if os.environ.get("KEEL_RAISE_ERRORS") == "1":
            raise
        typer.secho(f"error: {exc.message}", err=True, fg="red")
        if exc.hint:
            typer.echo(f"  what to do: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        if isinstance(exc, _usage_errors()):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """click's error base class: typer 0.2x runs its own copy of click (``typer._click``), whose
    exceptions are not click's; both are caught, so a mistyped option is a usage message, not a traceback."""
    import click

    errors: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # a typer that uses click itself
        return tuple(errors)
    return (*errors, ClickException)
