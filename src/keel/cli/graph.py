"""keel graph: the configured request graph, as text or Mermaid."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import ConfigOption, JsonOption, console, make_app, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def graph(
        mermaid: Annotated[bool, typer.Option("--mermaid", help="print a Mermaid flowchart")] = False,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Print the request graph: nodes, edges, routes and which tools need approval."""
        from ..graph.mermaid import to_mermaid

        runtime = make_app(config).runtime
        limits = runtime.deps.settings.limits
        notes = {"agent_reason": f" (max {limits.max_steps} steps)"}
        if mermaid:
            typer.echo(to_mermaid(runtime.graph, runtime.deps.tools, notes))
            return
        drawn = runtime.graph.get_graph()
        data = {
            "nodes": [n for n in drawn.nodes if not n.startswith("__")],
            "edges": [{"from": e.source, "to": e.target, "conditional": e.conditional} for e in drawn.edges],
            "tools": [
                {
                    "name": t.name,
                    "risk": t.risk,
                    "needs_approval": t.needs_approval,
                    "timeout_s": t.timeout_s,
                    "retries": t.retries,
                }
                for t in runtime.deps.tools
            ],
            "limits": limits.model_dump(),
        }
        if as_json:
            print_json(data)
            return
        for e in data["edges"]:
            console.print(f"{e['from']} {'-.->' if e['conditional'] else '-->'} {e['to']}", markup=False)
        for t in data["tools"]:
            console.print(f"tool {t['name']}: {t['risk']}{', needs approval' if t['needs_approval'] else ''}")
