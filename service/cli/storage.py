"""The store's upkeep: `tactful db upgrade` (schema migrations alone), `tactful prune` (bounded
storage) and `tactful backup` (a consistent copy of a live SQLite store)."""
from __future__ import annotations

import os
import re

import click

from service.cli.options import db_option, now_value, open_store
from service.store import StoreError, is_postgres
from service.store import open_store as connect
from service.store.copy import copy_store

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(ctx, param, value: str | None) -> float | None:
    if value is None:
        return None
    m = _AGE.match(value.strip())
    if not m:
        raise click.BadParameter(f"{value!r} is not an age such as 180d, 12h or 2w", ctx, param)
    return float(m[1]) * _UNITS[m[2]]


@click.group("db")
def db_group():
    """The store's schema: upgrade, copy."""


@db_group.command("upgrade")
@db_option
def db_upgrade(db: str) -> None:
    """Apply the schema migrations the store lacks (every command also does at start)."""
    try:
        store = connect(db, secret=os.environ.get("TACTFUL_SECRET"), migrate=False)
        found, now = store.migrate()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    store.close()
    click.echo(f"{store.location}: schema version {now}" + (f" (was {found})" if found != now else " (up to date)"))


@db_group.command("copy")
@click.option("--from", "source", required=True, help="The store to copy: a SQLite file (or a PostgreSQL URL).")
@click.option("--to", "target", required=True, help="An empty PostgreSQL store (postgresql://...).")
def db_copy(source: str, target: str) -> None:
    """Copy every decision, outcome, person, model version and setting into an empty PostgreSQL
    store: how one machine moves to several. Stop serving from --from first."""
    if not is_postgres(target):
        raise click.BadParameter("the target must be a PostgreSQL URL (postgresql://...)", param_hint="--to")
    src = open_store(source)
    try:
        dst = connect(target, secret=os.environ.get("TACTFUL_SECRET"))
        counts = copy_store(src, dst, lambda table, n: click.echo(f"  {table}: {n:,} rows", err=True)
                            if n % 50000 == 0 else None)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    dst.close()
    src.close()
    click.echo(f"copied {src.location} to {dst.location}: " + ", ".join(f"{n:,} {t}" for t, n in counts.items() if n))


@click.command("prune")
@db_option
@click.option("--keep-versions", type=click.IntRange(1), default=None,
              help="Keep each policy's newest N model versions (and always the active one, the shadow, "
                   "and the ones a rollback or the revert guard would return to).")
@click.option("--decisions-older-than", "age", callback=_age, default=None, metavar="AGE",
              help="Remove decisions made longer ago than AGE (180d, 12h, 2w) once their reward window has "
                   "closed and they were learned, with their outcomes.")
@click.option("--now", help="Ages count back from this time (default: now).")
def prune_cmd(db: str, keep_versions: int | None, age: float | None, now: str | None) -> None:
    """Remove old model versions and old decisions; never what serving, rollback or learning needs."""
    if keep_versions is None and age is None:
        raise click.UsageError("say what to prune: --keep-versions N and/or --decisions-older-than AGE")
    store = open_store(db)
    if keep_versions is not None:
        removed = store.prune_versions(keep_versions)
        for policy, versions in sorted(removed.items()):
            click.echo(f"{policy}: removed {len(versions)} model versions ({versions[0]}..{versions[-1]})")
        if not removed:
            click.echo("no model version to remove")
    if age is not None:
        at = now_value(now)
        counts = store.prune_decisions(at - age, at)
        click.echo(f"removed {counts['decisions']} decisions, {counts['outcomes']} outcomes, "
                   f"{counts['deliveries']} delivery reports, {counts['shadow_decisions']} shadow scores, "
                   f"{counts['requests']} request ids older than a day")
    if not is_postgres(db):
        click.echo("(SQLite reuses the freed pages; `sqlite3 FILE VACUUM` while nothing serves returns them "
                   "to the disk)")
    store.close()


@click.command("backup")
@db_option
@click.argument("out", type=click.Path(dir_okay=False))
def backup_cmd(db: str, out: str) -> None:
    """Copy a live SQLite store to OUT, consistently, while it serves (SQLite's online backup)."""
    if os.path.exists(out):
        raise click.BadParameter(f"{out!r} exists; name a new file", param_hint="OUT")
    store = open_store(db)
    try:
        store.backup(out)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"backed up {store.location} to {out} ({os.path.getsize(out):,} bytes)")
