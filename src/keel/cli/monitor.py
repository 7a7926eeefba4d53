"""keel traces | costs | feedback | audit: what happened, what it cost, what people thought, proof."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

from ..errors import InputError
from ..telemetry.costs import GROUPINGS, parse_since
from ..telemetry.traces import SpanNode
from ._common import ConfigOption, JsonOption, SinceOption, console, make_app, print_json


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _label(node: SpanNode) -> str:
    parts = [f"[bold]{node.name}[/bold]", f"{node.duration_ms:.1f} ms"]
    i, o = node.tokens
    if i or o:
        parts.append(f"{i}→{o} tok")
    if node.cost_usd:
        parts.append(f"${node.cost_usd:.6f}")
    if node.kind:
        parts.append(f"[dim]{node.kind}[/dim]")
    if node.status == "error":
        parts.append(f"[red]error: {node.status_message or ''}[/red]")
    return "  ".join(parts)


def _add(tree: Tree, node: SpanNode) -> None:
    branch = tree.add(_label(node))
    for child in node.children:
        _add(branch, child)


def _list_traces(config: Path | None, limit: int, since: str | None, as_json: bool) -> None:
    rows = make_app(config).telemetry.traces.list(limit=limit, since=parse_since(since))
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        console.print("no traces yet: run `keel ask` (or any model call) first")
        return
    from rich import box
    from rich.table import Column, Table

    # the id is what you copy: never cut. Under 110 columns (a pipe is 80) the other columns would be
    # squeezed to nothing, so a narrow listing keeps the few that fit; --json has every field
    wide = console.width >= 110
    columns = ["started", "root", "ms", "spans", "tokens", "USD", "status"] if wide else ["time", "ms", "tokens",
                                                                                          "status"]
    table = Table(Column("trace id", no_wrap=True, min_width=32), *(Column(c, no_wrap=True) for c in columns),
                  box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD)
    for r in rows:
        status = "[red]error[/red]" if r.status == "error" else r.status
        tokens = f"{r.input_tokens}→{r.output_tokens}"
        if wide:
            table.add_row(r.trace_id, _when(r.start_time), r.name, f"{r.duration_ms:.1f}", str(r.spans), tokens,
                          f"{r.cost_usd:.6f}", status)
        else:
            table.add_row(r.trace_id, time.strftime("%H:%M:%S", time.localtime(r.start_time)),
                          f"{r.duration_ms:.0f}", tokens, status)
    console.print(table)


def _register_traces(app: typer.Typer) -> None:
    traces = typer.Typer(help="Recorded traces: list them, or show one as a span tree.", no_args_is_help=False)

    @traces.callback(invoke_without_command=True)
    def traces_default(
        ctx: typer.Context,
        config: ConfigOption = None,
        as_json: JsonOption = False,
        limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
        since: SinceOption = None,
    ) -> None:
        """List recent traces (same as `keel traces list`)."""
        if ctx.invoked_subcommand is None:
            _list_traces(config, limit, since, as_json)

    @traces.command("list")
    def traces_list(
        config: ConfigOption = None,
        as_json: JsonOption = False,
        limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
        since: SinceOption = None,
    ) -> None:
        """Recent traces, newest first: root span, duration, span count, tokens, cost."""
        _list_traces(config, limit, since, as_json)

    @traces.command("show")
    def traces_show(trace_id: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
        """One trace as a tree of spans with timings, tokens and cost."""
        roots = make_app(config).telemetry.traces.tree(trace_id)
        if as_json:
            print_json({"trace_id": trace_id, "spans": [r.to_dict() for r in roots]})
            return
        tree = Tree(f"trace {trace_id}")
        for root in roots:
            _add(tree, root)
        console.print(tree)

    @traces.command("prune")
    def traces_prune(
        older_than: Annotated[str, typer.Option("--older-than", help="delete traces older than: 30d, 12h or a date")],
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Delete traces that started before --older-than (telemetry.trace_retention_days does it on open)."""
        cutoff = parse_since(older_than, option="--older-than")
        assert cutoff is not None  # the option is required and parse_since rejects what it cannot read
        deleted = make_app(config).telemetry.traces.prune(cutoff)
        if as_json:
            print_json({"deleted_spans": deleted, "before": cutoff})
        else:
            console.print(f"deleted {deleted} spans of traces that started before {_when(cutoff)}")

    app.add_typer(traces, name="traces")


def _register_costs(app: typer.Typer) -> None:
    @app.command()
    def costs(
        config: ConfigOption = None,
        as_json: JsonOption = False,
        by: Annotated[str, typer.Option("--by", help=f"group by: {', '.join(GROUPINGS)}")] = "model",
        since: SinceOption = None,
    ) -> None:
        """Spend by model, user, day, session, request, tenant, route, prompt (template@version) or call."""
        rows = make_app(config).telemetry.costs.summary(by, since=parse_since(since))
        if as_json:
            print_json(
                {
                    "by": by,
                    "since": since,
                    "total_usd": round(sum(r["cost_usd"] for r in rows), 9),
                    "rows": rows,
                }
            )
            return
        from rich.table import Table

        table = Table()
        # the key is what the table is for: fold it, never cut it to "answer_so…" on a narrow terminal
        table.add_column(by, overflow="fold")
        for name in ("calls", "errors", "cache hits", "tokens in", "tokens out", "USD"):
            table.add_column(name)
        for r in rows:
            table.add_row(
                str(r["key"] if r["key"] is not None else "-"),
                str(r["calls"]),
                str(r["errors"]),
                str(r["cache_hits"]),
                str(r["input_tokens"]),
                str(r["output_tokens"]),
                f"{r['cost_usd']:.6f}",
            )
        console.print(table)
        console.print(f"total ${sum(r['cost_usd'] for r in rows):.6f}")


def _register_budgets(app: typer.Typer) -> None:
    @app.command()
    def budgets(
        user: Annotated[str | None, typer.Option("--user")] = None,
        session: Annotated[str | None, typer.Option("--session")] = None,
        tenant: Annotated[str | None, typer.Option("--tenant")] = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """What is left of each budget that applies (all traffic, plus the given user/session/tenant)."""
        hook = make_app(config).budget
        if not hasattr(hook, "usage"):
            if as_json:
                print_json([])
            else:
                console.print("no budgets configured (add budgets: to keel.yaml)")
            return
        ids = {"user_id": user, "session_id": session, "tenant_id": tenant}
        rows = hook.usage({k: v for k, v in ids.items() if v})
        if as_json:
            print_json(rows)
            return
        for r in rows:
            resets = f", resets {r['resets_at']}" if r["resets_at"] else ""
            console.print(
                f"{r['budget']:<32} ${r['spent_usd']:.6f} spent + ${r['reserved_usd']:.6f} reserved "
                f"of ${r['limit_usd']:.6f}, ${r['left_usd']:.6f} left{resets}"
            )


def _register_feedback(app: typer.Typer) -> None:
    @app.command()
    def feedback(
        trace_id: str,
        rating: Annotated[str, typer.Argument(help="up or down")],
        comment: Annotated[str | None, typer.Option("--comment", "-m")] = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Thumbs up (becomes a few-shot candidate) or down (becomes an evaluation case) on an answer."""
        if rating not in ("up", "down"):
            raise InputError(f"rating {rating!r} is not up or down", hint="keel feedback TRACE_ID up|down")
        vote = make_app(config).telemetry.feedback.record(trace_id, rating, comment=comment)
        if as_json:
            print_json(vote.to_dict())
            return
        where = "queued as a few-shot candidate" if vote.curation_id else "kept as an evaluation case"
        console.print(f"feedback {vote.id} on {trace_id}: {vote.rating} ({where})")


def _register_audit(app: typer.Typer) -> None:
    audit = typer.Typer(help="The hash-chained audit ledger: verify it, export it.", no_args_is_help=True)

    @audit.command("verify")
    def audit_verify(
        config: ConfigOption = None,
        as_json: JsonOption = False,
        file: Annotated[Path | None, typer.Option("--file", help="verify an export instead")] = None,
    ) -> None:
        """Check every record's hash and link; name the first record that was edited, removed or moved."""
        from ..telemetry.audit import read_export, verify_records

        if file is not None:
            if not file.is_file():
                raise InputError(f"{file} does not exist", hint="pass a file written by `keel audit export`")
            with file.open(encoding="utf-8") as fh:
                result = verify_records(read_export(fh))
        else:
            result = make_app(config).telemetry.audit.verify()
        if as_json:
            print_json(result.to_dict())
        elif result.ok:
            console.print(f"[green]ok[/green]: {result.checked} records, chain intact (head {result.head})")
        else:
            console.print(
                f"[red]FAILED[/red] at record {result.first_bad}: {result.reason} "
                f"({result.checked} records verified before it)"
            )
        if not result.ok:
            raise typer.Exit(1)

    @audit.command("export")
    def audit_export(
        config: ConfigOption = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="file (default: stdout)")] = None,
        since: Annotated[str | None, typer.Option("--since", help="ISO time, e.g. 2026-11-01")] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Write the ledger as JSON lines (verifiable later with `keel audit verify --file`)."""
        ledger = make_app(config).telemetry.audit
        if out is None:
            n = ledger.export(sys.stdout, since=since)
            return
        with out.open("w", encoding="utf-8") as fh:
            n = ledger.export(fh, since=since)
        info: dict[str, Any] = {"records": n, "file": str(out), "head": ledger.head()[1]}
        if as_json:
            print_json(info)
        else:
            console.print(f"exported {n} records to {out} (head {info['head']})")

    app.add_typer(audit, name="audit")


def register(app: typer.Typer) -> None:
    _register_traces(app)
    _register_costs(app)
    _register_budgets(app)
    _register_feedback(app)
    _register_audit(app)
