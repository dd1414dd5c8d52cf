"""`tactful report contents`: each content's estimated value against the best content and holding,
and the candidates to retire (service/offline/contents.py), from a policy's final decisions."""
from __future__ import annotations

import json

import click

from service.cli.options import (db_option, now_option, now_value, open_store, policies_option, policy_named,
                                 policy_option, since_option, time_value, until_option)
from service.offline.contents import contents_report, evidence
from service.offline.errors import EvaluationError
from service.store.safety import REPORT


@click.group("report")
def report_group():
    """Reports from the logs: contents (candidates to retire)."""


@report_group.command("contents")
@db_option
@policies_option
@policy_option
@since_option
@until_option
@now_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--save", is_flag=True, help="Store it: GET /v1/policies/{policy}/contents/report serves the latest.")
def contents_cmd(db, policies, policy_name, since, until, now, as_json, save):
    """Each content's estimated shaped reward (DR, 95% intervals) on the decisions that allowed
    it, against the best content and against holding; those surely worse than both are
    candidates to retire (`PATCH /v1/policies/{policy}/arms/{content}` retires one)."""
    policy = policy_named(policies, policy_name)
    store = open_store(db)
    at = now_value(now)
    try:
        report = contents_report(store, policy, at, time_value(since, "--since"), time_value(until, "--until"))
    except EvaluationError as exc:
        store.close()
        raise click.ClickException(str(exc)) from None
    if save:
        store.add_safety_event(policy.name, REPORT, "policy", f"contents report over {report['decisions']} "
                               f"decisions (tactful report contents)", None, report, at)
    store.close()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{policy.name}: {report['decisions']} final decisions; DR estimates of the shaped reward with "
               f"{report['confidence']:.0%} intervals, each content on the decisions that allowed it")
    head = f"{'content':<20} {'decisions':>9} {'value':>8} {'interval':>19} {'vs best':>8} {'vs hold':>8}  verdict"
    click.echo(head)
    click.echo("-" * len(head))
    for e in report["contents"]:
        vb = f"{e['vs_best']['value']:+.3f}" if e.get("vs_best") else "best"
        vh = f"{e['vs_hold']['value']:+.3f}" if e.get("vs_hold") else "-"
        verdict = "RETIRE?" if e["retire"] else ""
        click.echo(f"{e['content']:<20} {e['decisions']:>9} {e['value']:>+8.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}] "
                   f"{vb:>8} {vh:>8}  {verdict}")
    for cid in report["not_judged"]:
        click.echo(f"{cid:<20} too few decisions allowed it to judge")
    for e in report["contents"]:
        if e["retire"]:
            click.echo(f"\n{e['content']}: {evidence(e, report)}")
