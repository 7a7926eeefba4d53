"""keel curation: feedback's loop. Up-votes become few-shot candidates to accept or reject
(accepted ones are shown in the answer prompts), down-votes export as evaluation cases, and votes
compare prompt versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from ..telemetry.costs import parse_since
from ._common import ConfigOption, JsonOption, SinceOption, console, make_app, print_json

curation = typer.Typer(
    help="Feedback's loop: few-shot candidates to accept, eval cases to export, votes per prompt version."
)


@curation.callback(invoke_without_command=True)
def curation_list(
    ctx: typer.Context,
    status: Annotated[
        str, typer.Option(help="pending (waiting for a decision), accepted (shown as examples) or rejected")
    ] = "pending",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Up-voted answers waiting to become few-shot examples (--status accepted: those that are)."""
    if ctx.invoked_subcommand is not None:
        return
    if status not in ("pending", "accepted", "rejected"):
        raise InputError(f"unknown status {status!r}", hint="use pending, accepted or rejected")
    rows = make_app(config).telemetry.feedback.curation_queue(status)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no {status} candidates: up-vote good answers with `keel feedback TRACE_ID up`")
    for r in rows:
        console.print(f"{r['id']:>5}  [{r['prompt_version'] or '-'}]  {r['question']!r} -> {r['answer']!r}")


def _decide(candidate_id: int, accept: bool, config: Path | None, as_json: bool) -> None:
    app = make_app(config)
    app.telemetry.feedback.curate(candidate_id, accept=accept)
    status = "accepted" if accept else "rejected"
    if as_json:
        print_json({"id": candidate_id, "status": status})
    elif not accept:
        console.print(f"candidate {candidate_id} rejected")
    elif app.settings.prompts.curated_examples:
        console.print(
            f"candidate {candidate_id} accepted: answer prompts show it for questions like it "
            f"(within {app.settings.prompts.curated_refresh_s:g}s in a running server)"
        )
    else:
        console.print(f"candidate {candidate_id} accepted (not shown: prompts.curated_examples is 0)")


@curation.command("accept")
def curation_accept(candidate_id: int, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make a candidate a few-shot example: answer prompts show it for questions like it."""
    _decide(candidate_id, True, config, as_json)


@curation.command("reject")
def curation_reject(candidate_id: int, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Drop a candidate."""
    _decide(candidate_id, False, config, as_json)


@curation.command("evals")
def curation_evals(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export down-voted answers as evaluation cases (JSONL) for `keel eval`."""
    with out.open("w", encoding="utf-8") as fh:
        n = make_app(config).telemetry.feedback.export_eval_cases(fh)
    if as_json:
        print_json({"cases": n, "file": str(out)})
    else:
        console.print(f"wrote {n} evaluation cases to {out}")


@curation.command("stats")
def curation_stats(
    by: Annotated[str, typer.Option("--by", help="prompt (the answer's prompt version) or route")] = "prompt",
    since: SinceOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Votes per prompt version or route: how a change to a prompt was received."""
    rows = make_app(config).telemetry.feedback.stats(by, since=parse_since(since))
    if as_json:
        print_json({"by": by, "since": since, "rows": rows})
        return
    from rich.table import Table

    table = Table(by, "votes", "up", "down", "up share")
    for r in rows:
        table.add_row(str(r["key"] or "-"), str(r["votes"]), str(r["up"]), str(r["down"]), f"{r['up_share']:.0%}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(curation, name="curation")
