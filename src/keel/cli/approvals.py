"""keel approvals: list the tool calls waiting for a person; approve or reject one."""

from __future__ import annotations

import functools
import getpass
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InputError
from ._common import ConfigOption, JsonOption, console, make_app, print_json
from ._interrupt import run_interruptible
from .ask import show


def register(app: typer.Typer) -> None:
    @app.command()
    def approvals(
        action: Annotated[str, typer.Argument(help="list, approve or reject")] = "list",
        approval_id: Annotated[str | None, typer.Argument(help="the approval id (approve/reject)")] = None,
        by: Annotated[str | None, typer.Option("--by", help="who decides (default: your login name)")] = None,
        reason: Annotated[str | None, typer.Option("--reason", help="why (reject)")] = None,
        show_all: Annotated[bool, typer.Option("--all", help="list decided ones too")] = False,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """List pending approvals, or approve/reject one (the paused run then finishes)."""
        keel_app = make_app(config)
        if action == "list":
            rows = keel_app.approvals(None if show_all else "pending")
            if as_json:
                print_json([r.to_dict() for r in rows])
                return
            table = Table("id", "tool", "args", "requester", "status", "expires")
            for r in rows:
                table.add_row(r.id, r.tool, str(r.args), r.requester, r.status, r.to_dict()["expires_at"])
            console.print(table)
            return
        if action not in ("approve", "reject"):
            raise InputError(f"unknown action {action!r}", hint="use list, approve ID or reject ID")
        if not approval_id:
            raise InputError(f"{action} needs an approval id", hint="see `keel approvals list`")
        who = by or getpass.getuser()
        if action == "approve":
            decide = functools.partial(keel_app.approve, approval_id, by=who)
        else:
            decide = functools.partial(keel_app.reject, approval_id, by=who, reason=reason)
        show(run_interruptible(decide), as_json)  # Ctrl-C stops the resumed run, as in `keel ask`
