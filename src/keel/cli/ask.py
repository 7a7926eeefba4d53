"""keel ask / keel chat: questions through the request graph.

Ctrl-C during an answer stops its run at the next step and exits 130; a second Ctrl-C quits at
once (see :mod:`keel.cli._interrupt`)."""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import Cancelled
from ._common import ConfigOption, JsonOption, console, err_console, make_app, print_json
from ._interrupt import run_interruptible

if TYPE_CHECKING:
    from ..graph import Answer

KbOption = Annotated[str | None, typer.Option("--kb", help="knowledge base to answer from (default: 'default')")]
SessionOption = Annotated[str | None, typer.Option("--session", help="continue a conversation by its id")]
UserOption = Annotated[str | None, typer.Option("--user", help="who is asking (budgets, approvals, audit)")]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="the customer or team asking (budgets, audit)")]


def show(answer: Answer, as_json: bool) -> None:
    """Print an answer; exit with its error's code when it paused or stopped."""
    if as_json:
        print_json(answer.to_dict())
    else:
        _show_human(answer)
    if answer.exception is not None:
        raise typer.Exit(answer.exception.exit_code)


def _show_human(answer: Answer) -> None:
    if answer.status == "pending_approval" and answer.approval:
        a = answer.approval
        console.print(f"[yellow]waiting for approval[/] {a['id']}: {a['tool']} {a['args']} (expires {a['expires_at']})")
        console.print(f"  keel approvals approve {a['id']}   or   keel approvals reject {a['id']}")
    elif answer.status == "stopped":
        console.print(f"[red]stopped[/]: {(answer.error or {}).get('message', '')}")
    else:
        console.print(answer.answer, markup=False, highlight=False)
    for n, s in enumerate(answer.sources, 1):
        console.print(f"[dim][{n}] {s.get('title') or s.get('id')} (score {s.get('score')})[/]")
    g, u = answer.guardrail, answer.usage
    grounded = "" if g.get("groundedness") is None else f", groundedness {g['groundedness']}"
    console.print(
        f"[dim]route {answer.route or '-'} ({answer.route_reason}); verdict {g.get('verdict', '-')}"
        f"{grounded}; "
        f"{u.get('input_tokens', 0)} in / {u.get('output_tokens', 0)} out tokens, "
        f"${u.get('cost_usd', 0):.6f}; trace {answer.trace_id}; {answer.latency_ms:.0f} ms[/]"
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def ask(
        question: Annotated[str, typer.Argument(help="the question")],
        kb: KbOption = None,
        session: SessionOption = None,
        user: UserOption = None,
        tenant: TenantOption = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Answer QUESTION with sources, route, guardrail verdict, cost and trace id.

        Ctrl-C stops the run at its next step (exit 130); a second Ctrl-C quits at once."""
        keel_app = make_app(config)
        show(run_interruptible(functools.partial(keel_app.ask, question, kb=kb, session=session, user=user,
                                                 tenant=tenant)), as_json)

    @app.command()
    def chat(
        kb: KbOption = None,
        session: SessionOption = None,
        user: UserOption = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Talk in a session kept by the checkpointer; an empty line or Ctrl-D ends it.

        Ctrl-C during an answer stops its run and ends the chat (exit 130); a second Ctrl-C quits at once."""
        keel_app = make_app(config)
        session = session or "chat_" + uuid.uuid4().hex[:12]
        console.print(f"[dim]session {session}; empty line to quit[/]")
        while True:
            try:
                question = typer.prompt("you", default="", show_default=False, prompt_suffix="> ")
            except (EOFError, typer.Abort):
                break
            if not question.strip():
                break
            answer = run_interruptible(functools.partial(keel_app.ask, question, kb=kb, session=session, user=user))
            if as_json:
                print_json(answer.to_dict())
            else:
                _show_human(answer)
            if isinstance(answer.exception, Cancelled):
                err_console.print(f"continue with: keel chat --session {session}", markup=False, highlight=False)
                raise typer.Exit(answer.exception.exit_code)
