"""`tactful policies pause|resume|status`: an operator's switch for a whole policy, the same as
`POST /v1/policies/{policy}/pause` and `/resume` (service/decision/arms.py `PolicyPause`).
Running services hold every decision of a paused policy from their next decision on."""
from __future__ import annotations

import getpass

import click

from service.cli.options import db_option, open_store, policies_option, policy_named, policy_option
from service.clock import SystemClock
from service.decision.arms import PolicyPause

reason_option = click.option("--reason", required=True, help="Why: shown in every decision while paused, and kept.")


@click.group("policies")
def policies_group():
    """A policy's switch: pause (hold every decision), resume, status."""


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
