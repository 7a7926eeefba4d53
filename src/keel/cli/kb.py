"""keel ingest | kb list | kb delete-doc | search: fill the knowledge base and look things up.

``keel ingest`` exits 0 when every file was stored, 2 when some were skipped
(each named with the reason; the others are stored all the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import InputError
from ..knowledge import IngestReport
from ..knowledge.ingest import Progress as ProgressFn
from ._common import ConfigOption, JsonOption, console, err_console, make_app, print_json

KbOption = Annotated[str | None, typer.Option("--kb", help="knowledge base name (default: knowledge.default_kb)")]


@contextmanager
def _progress(enabled: bool) -> Iterator[ProgressFn]:
    bar = Progress(TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=err_console, transient=True,
                   disable=not (enabled and err_console.is_terminal))
    task = bar.add_task("", total=None)

    def update(done: int, total: int, label: str) -> None:
        bar.update(task, completed=done, total=total or None, description=label[:60])

    with bar:
        yield update


def _summary(report: IngestReport) -> None:
    for f in report.failed:
        err_console.print(f"[red]skipped[/] {f.message}" + (f"\n  what to do: {f.hint}" if f.hint else ""),
                          highlight=False, soft_wrap=True)
    console.print(f"[bold]{report.kb}[/]: {report.documents} documents stored ({report.unchanged} unchanged), "
                  f"{report.pages} pages, {report.chunks} chunks, {report.embedded} embedded, "
                  f"{report.seconds:.1f} s" + (f", [red]{len(report.failed)} files failed[/]" if report.failed else ""),
                  highlight=False, soft_wrap=True)


def _register_ingest(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        paths: Annotated[list[Path] | None, typer.Argument(help="files and folders to ingest")] = None,
        demo: Annotated[bool, typer.Option("--demo", help="ingest the Python language reference (offline)")] = False,
        kb: KbOption = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Load, chunk, embed and store documents (PDF, Markdown, HTML, text; folders are walked)."""
        if not paths and not demo:
            raise InputError("nothing to ingest", hint="keel ingest handbook.pdf docs/   or   keel ingest --demo")
        app_ = make_app(config)
        with _progress(not as_json) as progress:
            report = app_.ingest_demo(kb=kb, progress=progress) if demo else None
            if paths:
                more = app_.ingest(list(paths), kb=kb, progress=progress)
                report = _merge(report, more) if report else more
        assert report is not None
        if as_json:
            print_json(report.to_dict())
        else:
            _summary(report)
        if report.failed:
            raise typer.Exit(2)


def _merge(a: IngestReport, b: IngestReport) -> IngestReport:
    return IngestReport(a.kb, a.documents + b.documents, a.unchanged + b.unchanged, a.pages + b.pages,
                        a.chunks + b.chunks, a.embedded + b.embedded, a.seconds + b.seconds, a.failed + b.failed)


def _register_kb(app: typer.Typer) -> None:
    group = typer.Typer(help="Knowledge bases: list them and their documents, delete a document.",
                        no_args_is_help=True)

    @group.command("list")
    def kb_list(kb: KbOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
        """Without --kb: every knowledge base. With --kb: its documents."""
        knowledge = make_app(config).knowledge
        if kb is None:
            rows = knowledge.list_kbs()
            if as_json:
                print_json(rows)
            elif not rows:
                console.print("no knowledge bases yet: `keel ingest PATH` or `keel ingest --demo`")
            else:
                for r in rows:
                    console.print(f"{r['kb']:<20} {r['documents']:6d} documents {r['chunks']:8d} chunks "
                                  f"{r['pages']:6d} pages", highlight=False, soft_wrap=True)
            return
        docs = knowledge.documents(kb)
        if as_json:
            print_json(docs)
            return
        table = Table("doc id", "title", "uri", "pages", "chunks")
        for d in docs:
            table.add_row(d["doc_id"], d["title"][:40], d["uri"], str(d["pages"]), str(d["chunks"]))
        console.print(table if docs else f"knowledge base {kb!r} has no documents")

    @group.command("delete-doc")
    def kb_delete_doc(
        ref: Annotated[str, typer.Argument(help="document id (or its prefix), uri or file path")],
        kb: KbOption = None, config: ConfigOption = None, as_json: JsonOption = False,
    ) -> None:
        """Delete a document and all its chunks."""
        ids = make_app(config).knowledge.delete_doc(ref, kb=kb)
        if as_json:
            print_json({"deleted": ids})
        else:
            console.print(f"deleted {len(ids)} document(s): {', '.join(ids)}")

    app.add_typer(group, name="kb")


def _register_search(app: typer.Typer) -> None:
    @app.command()
    def search(
        query: Annotated[str, typer.Argument(help="what to look for, in your own words")],
        kb: KbOption = None,
        k: Annotated[int, typer.Option("--k", "-k", help="how many chunks", min=1, max=100)] = 5,
        mode: Annotated[str, typer.Option("--mode", help="hybrid, vector or keyword")] = "hybrid",
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Ranked chunks for QUERY with score, title, uri, page and text."""
        if mode not in ("hybrid", "vector", "keyword"):
            raise InputError(f"unknown --mode {mode!r}", hint="use hybrid, vector or keyword")
        hits = make_app(config).search(query, kb=kb, k=k, mode=mode)  # type: ignore[arg-type]
        if as_json:
            print_json([{**h.to_source(), "doc_id": h.doc_id, "position": h.position,
                         "heading": h.metadata.get("heading")} for h in hits])
            return
        if not hits:
            console.print("no results (is the knowledge base empty? `keel kb list`, then `keel ingest PATH`)")
            return
        for n, h in enumerate(hits, 1):
            where = f"{h.uri}" + (f" p.{h.page}" if h.page else "")
            console.print(f"[bold]{n}. {h.title}[/]  [dim]{where}  score {h.score:.3f}[/]",
                          highlight=False, soft_wrap=True)
            text = " ".join(h.text.split())
            console.print(f"   {text[:300]}{'…' if len(text) > 300 else ''}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    _register_ingest(app)
    _register_kb(app)
    _register_search(app)
