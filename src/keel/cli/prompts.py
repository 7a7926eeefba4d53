"""keel prompts: the templates in use, with the versions traces and the audit ledger name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ._common import ConfigOption, JsonOption, console, make_app, print_json

if TYPE_CHECKING:
    from ..prompts import PromptLibrary

prompts_app = typer.Typer(help="The prompt templates in use: built-in or your overrides (prompts.dir).",
                          no_args_is_help=True)


def _library(config: ConfigOption) -> PromptLibrary:
    from ..graph.factory import build_prompts

    return build_prompts(make_app(config).settings)


@prompts_app.command("list")
def list_cmd(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every template keel renders: name, version (as in traces' llm.prompt_template.version and the
    audit ledger's answer records) and where it comes from: built in, or your override."""
    library = _library(config)
    rows = [{"name": t.name, "version": t.version, "origin": t.origin}
            for t in (library.get(name) for name in library.names())]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        console.print(f"{row['name']:<16} {row['version']}  {row['origin']}", markup=False, soft_wrap=True)


@prompts_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="a template name, e.g. answer_sources")],
    built_in: Annotated[bool, typer.Option("--built-in", help="keel's own template, even when overridden")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A template's exact text on stdout (its name, version and origin on stderr), so
    `keel prompts show answer_chat --built-in > prompts/answer_chat.j2` starts an override."""
    from ..prompts import PromptLibrary

    # --built-in also matters when redirecting into the override folder: the shell creates the
    # (empty) file before keel reads the folder
    template = (PromptLibrary() if built_in else _library(config)).get(name)
    if as_json:
        print_json({"name": template.name, "version": template.version, "origin": template.origin,
                    "source": template.source})
        return
    # plain echo: the source is shown exactly, never wrapped or styled
    typer.echo(f"# {template.name} {template.version} ({template.origin})", err=True)
    typer.echo(template.source, nl=not template.source.endswith("\n"))


def register(app: typer.Typer) -> None:
    app.add_typer(prompts_app, name="prompts")
