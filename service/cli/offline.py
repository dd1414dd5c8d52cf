"""The offline commands: export, evaluate, retrain and import-obd.

Thin click commands over library functions (service/offline/export.py, evaluate.py, report.py,
obd.py; service/learning/retrain.py and shadow_report.py), named in service/cli/main.py. Bad
input is a click error naming the option, never a traceback.
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from service.cli.options import (db_option, mismatch_option, now_option, now_value, open_store, policies_option,
                                 policy_in_store, policy_option, since_option, time_value, until_option)
from service.learning.rank_retrain import evaluate_rank, retrain_rank, table
from service.learning.registry import VersionRegistry
from service.learning.retrain import reference_baselines, retrain
from service.learning.shadow_report import shadow_report
from service.offline.errors import EvaluationError, NotEnoughData, not_enough_data
from service.offline.evaluate import evaluate
from service.offline.export import export, final_decisions
from service.offline.obd import campaign_of, import_obd
from service.offline.obd_priors import ZOZOTOWN_PRIOR
from service.offline.report import write_report
from service.times import to_rfc3339

OUT = "out"  # default outputs go under ./out, which the repository ignores


@click.command("export")
@db_option
@policies_option
@policy_option
@mismatch_option
@since_option
@until_option
@click.option("--format", "fmt", type=click.Choice(["vw", "csv", "parquet"]), required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, writable=True), help="Output file.")
@now_option
def export_cmd(db, policies, policy_name, since, until, fmt, out, now, ignore_mismatch):
    """Export every final decision of a policy: features, allowed arms, logged probabilities,
    chosen arm, outcomes and shaped reward. `vw` is cb_adf text VW learns from as it is."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    rows = final_decisions(store, policy, now_value(now), time_value(since, "--since"), time_value(until, "--until"))
    try:
        n = export(rows, policy, fmt, out)
    except RuntimeError as exc:  # pyarrow missing
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {n} final decisions of {policy.name} to {out} ({fmt})")
    if n == 0:
        click.echo(f"note: {not_enough_data(store, policy, now_value(now), time_value(since, '--since'), time_value(until, '--until'))}",
                   err=True)


@click.command("evaluate")
@db_option
@policies_option
@policy_option
@mismatch_option
@click.option("--candidate", help="A model version (3 or v3), a VW model file, or a baseline name.")
@click.option("--baseline", "baselines", multiple=True,
              help="active | uniform | logged | fallback | a version | a model file (repeatable; "
                   "default: active and uniform, or logged and uniform while the policy has no active "
                   "version, as after import-obd). The first is the reference for the lift.")
@since_option
@until_option
@now_option
@click.option("--shadow", is_flag=True, help="Report the shadow candidate's agreement and estimated value instead.")
@click.option("--out", default=None, help="Directory for report.md, estimates.png, evaluation.json "
                                          "(default: out/evaluation-POLICY).")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(50),
              help="Bootstrap resamples for the unsubscribe and complaint rises; "
                   "the estimators' intervals are analytic (docs/ope.md).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-store", is_flag=True, help="Do not store the evaluation beside the candidate version.")
def evaluate_cmd(db, policies, policy_name, candidate, baselines, since, until, now, shadow, out, n_boot, seed,
                 no_store, ignore_mismatch):
    """Estimate a candidate's value against the active version and baselines (IPS, SNIPS, DM, DR,
    Switch-DR with 95% intervals and effective sample sizes), as a table and a report."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    at = now_value(now)
    out = out or f"{OUT}/evaluation-{policy.name}"
    command = "tactful " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if shadow:
        _shadow(store, policy, at, time_value(since, "--since"), time_value(until, "--until"), seed, Path(out))
        return
    if not candidate:
        raise click.BadParameter("name the candidate to evaluate (or use --shadow)", param_hint="--candidate")
    if policy.spec.kind == "personalizer":
        _rank_evaluate(store, policy, candidate, at, since, until, n_boot, seed, Path(out), no_store)
        return
    try:
        result = evaluate(store, policy, candidate, baselines or reference_baselines(store, policy), now=at,
                          since=time_value(since, "--since"), until=time_value(until, "--until"), n_boot=n_boot,
                          seed=seed, progress=sys.stderr.isatty())
    except NotEnoughData as exc:  # the data is missing, not an option wrong
        raise click.ClickException(str(exc)) from None
    except EvaluationError as exc:
        raise click.BadParameter(str(exc), param_hint="--candidate/--baseline") from None
    click.echo(result.table())
    report = write_report(result, out, command)
    if result.candidate_version is not None and not no_store:
        _store_beside(store, policy, result.candidate_version, result.as_dict(), at, since)
    click.echo(f"report: {report}")


def _store_beside(store, policy, version: int, evaluation: dict, at: float, since: str | None) -> None:
    """Store an evaluation beside the version it evaluated (what `tactful models promote` reads),
    unless it is in-sample: a retrained version evaluated on decisions it was trained on would
    look better than it is and replace retrain's held-out evaluation."""
    registry = VersionRegistry(store)
    end = registry.trained_until(policy.name, version)
    start = time_value(since, "--since")
    if end is not None and (start is None or start <= end):
        click.echo(f"not stored beside {policy.name} version {version}: it was trained on decisions up to "
                   f"{to_rfc3339(end)} and this evaluation includes them, so it overstates the version (its "
                   f"held-out evaluation from retrain stays what promote reads); evaluate it on later decisions "
                   f"only, with --since after {to_rfc3339(end)}, to store one")
        return
    registry.store_evaluation(policy.name, version, evaluation, at)
    click.echo(f"stored beside {policy.name} version {version}")


def _rank_evaluate(store, policy, candidate, at, since, until, n_boot, seed, out: Path, no_store) -> None:
    """`evaluate` on a Personalizer loop (service/learning/rank_retrain.py): a version or VW
    arguments scored over the logged Rank events, printed and written to `out`/evaluation.json."""
    try:
        result = evaluate_rank(store, policy, candidate, at, time_value(since, "--since"),
                               time_value(until, "--until"), n_boot=n_boot, seed=seed)
    except NotEnoughData as exc:
        raise click.ClickException(str(exc)) from None
    except EvaluationError as exc:
        raise click.BadParameter(str(exc), param_hint="--candidate") from None
    click.echo(table(result))
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    if result["version"] is not None and not no_store:
        _store_beside(store, policy, result["version"], result, at, since)
    click.echo(f"report: {out / 'evaluation.json'}")


def _rank_retrain(store, policy, r_args: dict, db, policies) -> None:
    try:
        r = retrain_rank(store, policy, **r_args)
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"learned {r['train']} Rank events, chose on the next {r['select']} (SNIPS, progressive):")
    for c in r["search"]:
        mark = "*" if c["vw_args"] == r["chosen"] else " "
        click.echo(f" {mark} {c['value']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}]  {c['vw_args']}")
    click.echo(f"the chosen setting learned those {r['train'] + r['select']} events, evaluated on the "
               f"{r['held_out']} latest (held-out):")
    click.echo(table(r["evaluation"]))
    click.echo(candidate_written(r, policy.name, db, policies, store.active_version(policy.name)))


def _shadow(store, policy, now, since, until, seed, out: Path) -> None:
    """`evaluate --shadow`: the shadow report, printed and written to `out`/shadow.json."""
    try:
        result = shadow_report(store, policy, now, since, until, seed=seed)
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result["text"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "shadow.json").write_text(json.dumps({k: v for k, v in result.items() if k != "text"},
                                                indent=2, default=float))


@click.command("retrain")
@db_option
@policies_option
@policy_option
@mismatch_option
@since_option
@until_option
@now_option
@click.option("--select", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.45),
              help="The share of the decisions before the held-out slice on which the grid is compared.")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.45),
              help="The latest share of the decisions, held out to evaluate the chosen candidate (and "
                   "nothing else: it takes no part in training or choosing).")
@click.option("--bootstrap", "n_boot", default=500, show_default=True, type=click.IntRange(50))
@click.option("--seed", default=0, show_default=True, type=int)
def retrain_cmd(db, policies, policy_name, since, until, now, select, holdout, n_boot, seed, ignore_mismatch):
    """Train VW offline from the logs over a small grid (exploration, interactions), choose by DR
    on a later time slice, train the winner on everything before the held-out slice, and store it
    as a candidate version (not active) with its evaluation on the latest, held-out slice. A policy
    with logs and no active version (imported logs) gets its first version this way."""
    policy, store = policy_in_store(db, policies, policy_name, ignore_mismatch)
    if policy.spec.kind == "personalizer":
        _rank_retrain(store, policy, {"now": now_value(now), "since": time_value(since, "--since"),
                                      "until": time_value(until, "--until"), "holdout": holdout, "select": select,
                                      "n_boot": n_boot, "seed": seed}, db, policies)
        return
    try:
        r = retrain(store, policy, now_value(now), time_value(since, "--since"), time_value(until, "--until"),
                    holdout, n_boot=n_boot, seed=seed, progress=sys.stderr.isatty(), select=select)
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"trained on {r['train']} decisions, chose on the next {r['select']} (DR on the selection slice):")
    for c in r["search"]:
        mark = "*" if c.vw_args == r["chosen"] else " "
        click.echo(f" {mark} {c.dr:.4f} [{c.lo:.4f}, {c.hi:.4f}]  {c.vw_args}")
    click.echo(f"the chosen configuration trained again on those {r['train'] + r['select']} decisions, "
               f"evaluated on the {r['held_out']} latest (held out):")
    click.echo(r["evaluation"].table())
    click.echo(candidate_written(r, policy.name, db, policies, store.active_version(policy.name)))


def candidate_written(r: dict, policy: str, db: str, policies: str, active: int | None) -> str:
    """What a retrain wrote, and how to promote it."""
    promote = f"tactful models promote --db {db} --policies {policies} --policy {policy} {r['version']}"
    if r["new"]:
        return f"candidate version {r['version']} of {policy} written (not active); promote with: {promote}"
    same = f"the same model as version {r['version']} of {policy}, which an earlier retrain wrote: no new version"
    if r["version"] == active:
        return f"{same}; it is the active version"
    return f"{same}; the evaluation above is stored with it; promote with: {promote}"


@click.command("import-obd")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--db", default="obd.db", show_default=True,
              help="The store to import into: a SQLite file (created if missing) or a PostgreSQL URL. TACTFUL_DB "
                   "is not read: an import never lands in the service's store by accident.")
@click.option("--policies", default=f"{OUT}/obd-policies", show_default=True,
              help="Directory where each imported logging policy's TOML file is written.")
def import_obd_cmd(directory, db, policies):
    """Import Open Bandit Dataset logs (DIR/<logger>/<campaign>.csv and item_context.csv) into a
    store, one policy per logging policy, so that `tactful evaluate` runs on them."""
    store = open_store(db, must_exist=False)
    try:
        summaries = import_obd(directory, store, policies, progress=sys.stderr.isatty())
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(f"cannot import {directory}: {exc}") from None
    for s in summaries:
        click.echo(f"{s['policy']}: {s['impressions']} impressions, {s['clicks']} clicks "
                   f"(observed click rate {s['click_rate']:.4%})")
    click.echo(obd_next_step(summaries, db, policies))


def obd_next_step(summaries: list[dict], db: str, policies: str) -> str:
    """The protocol's next command per imported campaign (docs/ope.md): the Bernoulli TS policy
    estimated from that campaign's uniform-random logs; without random logs, what is missing;
    for a campaign with no published prior, a command that works without one (retrain)."""
    campaigns = sorted({s.get("campaign") or campaign_of(s["policy"]) for s in summaries})
    lines = [f"policies written to {policies}/."]
    for campaign in campaigns:
        mine = [s for s in summaries if (s.get("campaign") or campaign_of(s["policy"])) == campaign]
        random = [s["policy"] for s in mine if s["logger"].lower() == "random"]
        if campaign not in ZOZOTOWN_PRIOR:
            lines.append(f"campaign {campaign!r}: no Bernoulli TS prior is published for it (Open Bandit Pipeline "
                         f"has {', '.join(sorted(ZOZOTOWN_PRIOR))}), so bts-zozotown cannot be evaluated on it; "
                         f"train and evaluate a first model version with: tactful retrain --db {db} "
                         f"--policies {policies} --policy {(random or [mine[0]['policy']])[0]}")
        elif not random:
            lines.append(f"campaign {campaign!r}: the Open Bandit protocol (docs/ope.md) estimates the Bernoulli TS "
                         "policy from the uniform-random logs, and none were imported: add the `random/` "
                         "directory of the dataset and import again")
        else:
            lines.append(f"campaign {campaign!r}: evaluate Bernoulli TS on the uniform-random logs (the protocol "
                         f"of docs/ope.md) with: tactful evaluate --db {db} --policies {policies} --policy "
                         f"{random[0]} --candidate bts-zozotown --baseline uniform")
    return "\n".join(lines)
