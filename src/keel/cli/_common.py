"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..app import App

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="keel.yaml to use (default: ./keel.yaml or KEEL_CONFIG)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
SinceOption = Annotated[str | None, typer.Option("--since", help="only since: 24h, 7d, 30m or a date (2026-11-01)")]

console = Console()
err_console = Console(stderr=True)


def make_app(config: Path | None) -> App:
    return App(config)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
