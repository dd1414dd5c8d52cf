"""What the data commands share: their options, and turning option values into a policy, a store
and times, with a click error naming the option when a value is wrong. The one place they read the
wall clock is `now_value()`."""
from __future__ import annotations

import os
from pathlib import Path

import click

from service.clock import SystemClock
from service.policy import Policy, PolicyError, load_policies
from service.policy.stored import mismatch
from service.policy.catalog import with_catalog
from service.store import Store, StoreError, is_postgres
from service.store import open_store as connect
from service.times import parse_time

db_option = click.option("--db", envvar="TACTFUL_DB", default="tactful.db", show_default=True,
                         help="The store: a SQLite file or a postgresql:// URL (or set TACTFUL_DB).")
policies_option = click.option("--policies", default="examples/policies", show_default=True,
                               help="Directory of policy TOML files (or one file): the ones the service used.")
mismatch_option = click.option("--ignore-policy-mismatch", "ignore_mismatch", is_flag=True,
                               help="Go on when the policy differs from the one the store was written with.")
policy_option = click.option("--policy", "policy_name", required=True, help="The policy's name.")
since_option = click.option("--since", help="Only decisions made at or after this time (RFC 3339 or a date).")
until_option = click.option("--until", help="Only decisions made before this time.")
now_option = click.option("--now", help="Decisions whose reward window closed before this time are final "
                                        "(default: now).")


def policy_named(policies_dir: str, name: str, store: Store | None = None) -> Policy:
    """The policy of that name in the directory; with `store`, with its live catalog applied
    (contents added or retired over HTTP, service/policy/catalog.py), as the service serves it."""
    try:
        policies = load_policies(policies_dir)
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--policies") from None
    if name not in policies:
        raise click.BadParameter(f"no policy named {name!r} in {policies_dir} (known: {', '.join(sorted(policies))})",
                                 param_hint="--policy")
    if store is None:
        return policies[name]
    try:
        return with_catalog(policies[name], store.catalog_changes(name))
    except PolicyError as exc:
        raise click.ClickException(f"the live catalog of {name!r} does not apply to its file: {exc}") from None


def policy_in_store(db: str, policies_dir: str, name: str, ignore_mismatch: bool = False) -> tuple[Policy, Store]:
    """The policy `--policy` names from `--policies`, and the store `--db` names, checked to be the
    policy the store was written with (service/policy/stored.py): a click error saying what
    differs and what to do, or a warning with `--ignore-policy-mismatch` -- with its live catalog
    applied (contents added or retired over HTTP, service/policy/catalog.py)."""
    store = open_store(db)
    try:
        policy = policy_named(policies_dir, name)
    except click.BadParameter as exc:
        if name in store.recorded_policies():
            path = store.recorded_policy(name)["path"]
            exc.message += f"; {store.location} was written with it from {path}: pass --policies {Path(path).parent}"
        raise
    different = mismatch(store, policy)
    if different is not None:
        if not ignore_mismatch:
            raise click.ClickException(str(different))
        click.echo(f"warning (--ignore-policy-mismatch): {different.differences[0]} (and "
                   f"{len(different.differences) - 1} more differences); going on with {policy.path}", err=True)
    try:  # as the service serves it: with the contents added or retired over HTTP
        return with_catalog(policy, store.catalog_changes(name)), store
    except PolicyError as exc:
        raise click.ClickException(f"the live catalog of {name!r} does not apply to its file: {exc}") from None


def open_store(db: str, must_exist: bool = True) -> Store:
    """The store `--db` names, its schema brought up to date; a click error naming `--db` when it
    cannot be opened."""
    if must_exist and not is_postgres(db) and not Path(db).is_file():
        raise click.BadParameter(f"{db!r} does not exist: name the store `tactful serve` wrote (--db PATH, or "
                                 f"set TACTFUL_DB), or run this where that file is", param_hint="--db")
    try:
        return connect(db, secret=os.environ.get("TACTFUL_SECRET"))
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="--db") from None


def time_value(value: str | None, hint: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def now_value(value: str | None = None) -> float:
    """`--now` when given, else the wall clock."""
    at = time_value(value, "--now")
    return at if at is not None else SystemClock().now()
