"""keel extract: text in, validated JSON out, each value checked against the text."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import InputError
from ..structured import load_schema
from ._common import ConfigOption, JsonOption, console, make_app, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def extract(
        text: Annotated[str, typer.Argument(help="the text to read; '-' reads standard input")],
        schema: Annotated[str, typer.Option("--schema", "-s", help="JSON Schema file, or module:Model")],
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Extract data matching SCHEMA from TEXT."""
        if text == "-":
            text = sys.stdin.read()
        if not text.strip():
            raise InputError("the text is empty", hint="pass the text as an argument, or '-' to read stdin")
        output_schema = load_schema(schema)
        result = make_app(config).extract(text, output_schema)
        if as_json:
            print_json(result.to_dict())
            return
        console.print_json(data=result.data)
        for d in result.discrepancies:
            console.print(f"[yellow]unverified[/] {d.describe()}")
        u = result.usage
        console.print(f"[dim]{u.input_tokens} in / {u.output_tokens} out tokens, ${result.cost_usd:.6f}, "
                      f"{result.model_calls} model calls ({', '.join(result.models)})[/]")
