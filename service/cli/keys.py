"""`tactful keys create|list|revoke`: the API keys of a store (service/api/auth.py). A key is
printed once, when it is created, alone on standard output (so `KEY=$(tactful keys create ...)`
works); only its hash is kept. Running services see a new or revoked key within a second or two."""
from __future__ import annotations

import click

from service.api.auth import SCOPES, check_name, create_key, parse_scopes
from service.cli.options import db_option, now_value, open_store
from service.store import KeyNameTaken
from service.times import to_rfc3339


@click.group("keys")
def keys_group():
    """API keys: requests carry one as `Authorization: Bearer <key>`."""


def _checked(check):
    def callback(ctx, param, value):
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return callback


def _when(ts: float | None) -> str:
    return to_rfc3339(float(int(ts))) if ts is not None else "-"


@keys_group.command("create")
@click.option("--name", required=True, callback=_checked(check_name),
              help="What the key is for (unique among the keys not revoked).")
@click.option("--scopes", required=True, callback=_checked(parse_scopes),
              help="Comma-separated: " + "; ".join(f"{k} ({v})" for k, v in SCOPES.items()) + ".")
@db_option
def create_cmd(name: str, scopes: list[str], db: str) -> None:
    """Create a key and print it, this once."""
    store = open_store(db, must_exist=False)
    first = not store.api_key_table()
    try:
        token = create_key(store, name, scopes, now_value())
    except KeyNameTaken as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(token)
    click.echo(f"Created the API key {name!r} ({', '.join(scopes)}) in {store.location}. It is shown this once: "
               f"keep it now (only its hash is stored).", err=True)
    if first:
        click.echo("This is the store's first key: from now on every request but /healthz, /readyz and /openapi.json "
                   "needs a key (running services within a second or two).", err=True)


@keys_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@db_option
def list_cmd(show_all: bool, db: str) -> None:
    """The keys: name, scopes, created, last used (to the minute); never a key."""
    store = open_store(db)
    every = store.api_keys(include_revoked=True)
    store.close()
    keys = [k for k in every if show_all or k["revoked_at"] is None]
    if not every:
        click.echo("no API key: the store serves without authentication, on a loopback address only "
                   "(tactful keys create --name NAME --scopes ...)", err=True)
    elif not any(k["revoked_at"] is None for k in every):
        click.echo("no active API key (every one is revoked): every request but /healthz, /readyz and /openapi.json is "
                   "refused until you create one", err=True)
    if not keys:
        return
    rows = [("NAME", "SCOPES", "CREATED", "LAST USED") + (("REVOKED",) if show_all else ())]
    for k in keys:
        row = (k["name"], ",".join(k["scopes"]), _when(k["created_at"]), _when(k["last_used_at"]))
        rows.append(row + ((_when(k["revoked_at"]),) if show_all else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


@keys_group.command("revoke")
@click.argument("name")
@db_option
def revoke_cmd(name: str, db: str) -> None:
    """Revoke the key NAME: running services refuse it within a second or two."""
    store = open_store(db)
    done = store.revoke_api_key(name, now_value())
    left = len(store.api_keys())
    store.close()
    if not done:
        raise click.ClickException(f"no API key named {name!r} (tactful keys list shows them)")
    click.echo(f"Revoked the API key {name!r}." + ("" if left else " No key is left: every request but /healthz, /readyz "
                                                   "and /openapi.json is refused until you create one."), err=True)
