"""keel models: each configured model, its provider, availability, context and prices."""

from __future__ import annotations

import typer
from rich.table import Table

from ._common import ConfigOption, JsonOption, console, make_app, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
        """List the configured models with availability, context size and prices."""
        rows = make_app(config).models_status()
        if as_json:
            print_json(rows)
            return
        table = Table("name", "provider", "model", "roles", "available", "context", "$/Mtok in", "$/Mtok out")
        for r in rows:
            table.add_row(r["name"], r["provider"], r["model"], ",".join(r["roles"]),
                          "yes" if r["available"] else f"no: {r['detail']}", str(r["context_window"] or "?"),
                          f"{r['input_price_per_mtok']:g}", f"{r['output_price_per_mtok']:g}")
        console.print(table)
