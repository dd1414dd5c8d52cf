"""The model-version commands: `tactful models list|show|activate|rollback|promote|shadow`.

Thin click commands over the VersionRegistry (service/learning/registry.py), named in
service/cli/main.py. A refusal of the library (an unknown version, one already active, a
promotion criterion missed) is a click error that says why.
"""
from __future__ import annotations

import json

import click

from service.cli.options import (db_option, mismatch_option, now_value, policies_option, policy_in_store,
                                 policy_option)
from service.errors import Problem
from service.learning.registry import VersionRegistry, PromotionRefused
from service.times import to_rfc3339


@click.group("models")
def models_group():
    """Model versions: list, show, activate, rollback, promote, shadow."""


def _version_arg(value: str) -> int:
    v = value.lstrip("v")
    if not v.isdigit():
        raise click.BadParameter(f"{value!r} is not a model version number", param_hint="VERSION")
    return int(v)


@models_group.command("list")
@db_option
@policies_option
@policy_option
@mismatch_option
def models_list(db, policies, policy_name, ignore_mismatch):
    """Every version of a policy: parent, source, what it learned, whether it is active."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    ops = VersionRegistry(store)
    shadow = ops.shadow_version(policy.name)
    click.echo(f"{'':2}{'version':>7} {'parent':>6}  {'source':<8} {'created':<20} {'learned':>8}  evaluated")
    for v in ops.versions(policy.name):
        mark = "*" if v["active"] else ("s" if v["version"] == shadow else " ")
        click.echo(f"{mark:2}{v['version']:>7} {v['parent'] if v['parent'] is not None else '-':>6}  {v['source']:<8} "
                   f"{(to_rfc3339(v['created_at']) or '-')[:19]:<20} {v['n_learned'] or 0:>8}  {'yes' if v['evaluations'] else '-'}")
    click.echo("(* active, s shadow)")


@models_group.command("show")
@db_option
@policies_option
@policy_option
@mismatch_option
@click.argument("version")
def models_show(db, policies, policy_name, version, ignore_mismatch):
    """One version: where it came from, its activations with their reasons, its stored evaluation."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    try:
        v = VersionRegistry(store).version(policy.name, _version_arg(version))
    except Problem as exc:
        raise click.ClickException(exc.detail) from None
    v["created_at"] = to_rfc3339(v["created_at"])
    v["activations"] = [a | {"at": to_rfc3339(a["at"])} for a in v["activations"]]
    if v.get("evaluation") and "stored_at" in v["evaluation"]:
        v["evaluation"]["stored_at"] = to_rfc3339(v["evaluation"]["stored_at"])
    click.echo(json.dumps(v, indent=2, default=str))


@models_group.command("activate")
@db_option
@policies_option
@policy_option
@mismatch_option
@click.argument("version")
@click.option("--reason", default=None, help="Why: recorded with the activation (default: \"activated from the "
              "command line\"; POST .../activate over HTTP records \"activated over HTTP\").")
def models_activate(db, policies, policy_name, version, reason, ignore_mismatch):
    """Serve VERSION now (every worker within about a second). The revert guard watches it."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    reason = reason if reason and reason.strip() else "activated from the command line"
    try:
        r = VersionRegistry(store).activate(policy.name, _version_arg(version), reason, now_value())
    except Problem as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{policy.name}: version {r['version']} active (was {r['previous']}): {reason}")


@models_group.command("rollback")
@db_option
@policies_option
@policy_option
@mismatch_option
@click.option("--to", "to", default=None, help="The version to return to (default: the one active before).")
@click.option("--reason", default=None, help="Why: recorded with the activation.")
def models_rollback(db, policies, policy_name, to, reason, ignore_mismatch):
    """Activate the version that was active before the latest activation."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    try:
        r = VersionRegistry(store).rollback(policy.name, now_value(), _version_arg(to) if to else None, reason)
    except Problem as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{policy.name}: rolled back to version {r['version']} (was {r['previous']})")


@models_group.command("promote")
@db_option
@policies_option
@policy_option
@mismatch_option
@click.argument("version")
@click.option("--reason", default=None, help="Recorded with the activation (default: the evaluation's lift).")
def models_promote(db, policies, policy_name, version, reason, ignore_mismatch):
    """Activate VERSION if its stored evaluation meets every promotion criterion of the policy;
    otherwise refuse and say which it misses."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    try:
        r = VersionRegistry(store).promote(policy, _version_arg(version), now_value(), reason)
    except PromotionRefused as exc:
        raise click.ClickException(f"version {version} of {policy.name} is not promoted; it misses:\n  - "
                                   + "\n  - ".join(exc.misses)) from None
    except Problem as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{policy.name}: version {r['version']} promoted and active (was {r['previous']}): {r['reason']}")


@models_group.command("shadow")
@db_option
@policies_option
@policy_option
@mismatch_option
@click.argument("version", required=False)
@click.option("--off", is_flag=True, help="Stop shadow scoring.")
def models_shadow(db, policies, policy_name, version, off, ignore_mismatch):
    """Score every live decision with VERSION beside the active one (logged, never served)."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    if not off and not version:
        raise click.BadParameter("name the version to shadow, or pass --off", param_hint="VERSION")
    try:
        VersionRegistry(store).set_shadow(policy.name, None if off else _version_arg(version), now_value())
    except Problem as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(f"{policy.name}: shadow scoring {'off' if off else f'by version {version}'}")
