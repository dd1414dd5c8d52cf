"""`tactful policies pause|resume|status`: an operator's switch for a whole policy, the same as
`POST /v1/policies/{policy}/pause` and `/resume` (service/decision/arms.py `PolicyPause`).
Running services hold every decision of a paused policy from their next decision on.
`tactful policies breaker|reset-breaker`: the circuit breakers (service/learning/breaker.py)."""
from __future__ import annotations

import getpass

import click

from service.cli.options import db_option, open_store, policies_option, policy_named, policy_option
from service.clock import SystemClock
from service.decision.arms import PolicyPause
from service.learning.breaker import reset, targets

reason_option = click.option("--reason", required=True, help="Why: shown in every decision while paused, and kept.")


@click.group("policies")
def policies_group():
    """A policy's switches: pause, resume, status; circuit breakers."""


def _switch(name: str, policies: str, db: str) -> tuple[PolicyPause, object]:
    policy = policy_named(policies, name)
    store = open_store(db)
    return PolicyPause(store, lambda _: policy, SystemClock()), store


def _echo(state: dict) -> None:
    if state["paused"]:
        click.echo(f"{state['policy']}: PAUSED since {state['since']}: {state['reason']}")
    else:
        click.echo(f"{state['policy']}: serving")


@policies_group.command("pause")
@policy_option
@reason_option
@db_option
@policies_option
def pause_cmd(policy_name: str, reason: str, db: str, policies: str) -> None:
    """Hold every decision of the policy until it is resumed."""
    _set(policy_name, True, reason, db, policies)


@policies_group.command("resume")
@policy_option
@reason_option
@db_option
@policies_option
def resume_cmd(policy_name: str, reason: str, db: str, policies: str) -> None:
    """Serve the policy again."""
    _set(policy_name, False, reason, db, policies)


def _set(name: str, paused: bool, reason: str, db: str, policies: str) -> None:
    if not reason.strip():
        raise click.BadParameter("say why, in a few words", param_hint="--reason")
    switch, store = _switch(name, policies, db)
    try:
        state = switch.set(name, paused, reason, f"cli:{getpass.getuser()}")
    finally:
        store.close()
    _echo(state)
    if not state["changed"]:
        click.echo(f"(it was {'paused' if paused else 'serving'} already: nothing changed)", err=True)


@policies_group.command("status")
@policy_option
@db_option
@policies_option
def status_cmd(policy_name: str, db: str, policies: str) -> None:
    """Whether the policy is paused, and its latest pauses and resumes."""
    switch, store = _switch(policy_name, policies, db)
    try:
        state = switch.state(policy_name)
    finally:
        store.close()
    _echo(state)
    for e in state["events"]:
        click.echo(f"  {e['at']}  {e['kind']:<7} {e['by_whom'] or '-'}: {e['reason']}")


@policies_group.command("breaker")
@policy_option
@db_option
@policies_option
def breaker_cmd(policy_name: str, db: str, policies: str) -> None:
    """The policy's circuit breakers: which are open, why, and since when."""
    policy = policy_named(policies, policy_name)
    store = open_store(db)
    try:
        rows = store.breakers(policy.name)
    finally:
        store.close()
    if policy.spec.safety is None:
        click.echo(f"{policy.name}: no [safety] table, so no circuit breaker watches it")
    opened = {t: b for t, b in sorted(rows.items()) if b["status"] == "open"}
    if not opened:
        click.echo(f"{policy.name}: every circuit breaker is closed")
    for what, b in opened.items():
        click.echo(f"{what}: OPEN: {b['detail']}")


@policies_group.command("reset-breaker")
@policy_option
@click.option("--target", help="What the breaker watches: content:<id>, channel:<name> or policy (default: every "
                               "open one).")
@reason_option
@db_option
@policies_option
def reset_breaker_cmd(policy_name: str, target: str | None, reason: str, db: str, policies: str) -> None:
    """Close a tripped circuit breaker (or every open one), with a reason."""
    policy = policy_named(policies, policy_name)
    if target is not None and target not in targets(policy, ("content", "channel", "policy")):
        raise click.BadParameter(f"{target!r} is not watched by a breaker of {policy.name!r} (one of: "
                                 f"{', '.join(targets(policy, ('content', 'channel', 'policy')))})",
                                 param_hint="--target")
    if not reason.strip():
        raise click.BadParameter("say why, in a few words", param_hint="--reason")
    store = open_store(db)
    try:
        done = reset(store, policy, target, reason.strip(), f"cli:{getpass.getuser()}", SystemClock().now())
    finally:
        store.close()
    click.echo(f"{policy.name}: reset {', '.join(done)}" if done else f"{policy.name}: no open breaker to reset")
