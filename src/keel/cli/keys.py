"""keel keys: API keys for the HTTP server (shown once, stored only as salted hashes)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import ConfigOption, JsonOption, console, err_console, make_app, print_json


def _store(config):  # type: ignore[no-untyped-def]
    from ..server import KeyStore

    return KeyStore.for_settings(make_app(config).settings)


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="API keys for `keel serve`: create (shown once), list, revoke.", no_args_is_help=True)

    @keys.command("create")
    def keys_create(
        name: Annotated[str, typer.Argument(help="who uses the key; it is the user for budgets, audit, approvals")],
        act_as_any: Annotated[bool, typer.Option(
            "--act-as-any", help="requests may name another user (`user` in the body): for a backend "
            "that calls keel on behalf of its own users")] = False,
        tenant: Annotated[str | None, typer.Option(
            "--tenant", help="the customer or team the key's requests are budgeted and costed as "
            "(budgets with scope tenant, keel costs --by tenant)")] = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Create a key for NAME and print it once (only its salted hash is stored).

        Requests with the key run as NAME (and as TENANT with --tenant); with --act-as-any they
        may name another user and tenant.
        """
        record, key = _store(config).create(name, act_as_any=act_as_any, tenant=tenant)
        if as_json:
            print_json({**record.to_dict(), "key": key})
            return
        typer.echo(key)
        acts = " It may act as any user." if record.act_as_any else ""
        of = f" (tenant {record.tenant!r})" if record.tenant is not None else ""
        err_console.print(f"key {record.id} for {record.name!r}{of}: copy it now, it is not shown again. "
                          f"Send it as `Authorization: Bearer <key>`.{acts}", markup=False, highlight=False)

    @keys.command("list")
    def keys_list(
        show_all: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """The keys: id, name, whether it may act as any user, tenant, created, revoked (never the key itself)."""
        rows = _store(config).list(include_revoked=show_all)
        if as_json:
            print_json([r.to_dict() for r in rows])
            return
        if not rows:
            console.print("no API keys: create one with `keel keys create NAME`", markup=False)
            return
        from rich.table import Table

        table = Table("id", "name", "acts as", "tenant", "created", "revoked")
        for r in rows:
            d = r.to_dict()
            table.add_row(d["id"], d["name"], "any user" if r.act_as_any else "itself", r.tenant or "-",
                          d["created_at"], d["revoked_at"] or "-")
        console.print(table)

    @keys.command("revoke")
    def keys_revoke(
        ref: Annotated[str, typer.Argument(help="the key's name (revokes its active keys) or id")],
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Revoke a key by name or id; requests with it get 401 from then on."""
        revoked = _store(config).revoke(ref)
        if as_json:
            print_json([r.to_dict() for r in revoked])
            return
        for r in revoked:
            console.print(f"revoked key {r.id} ({r.name})", markup=False, highlight=False)

    app.add_typer(keys, name="keys")
