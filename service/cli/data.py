"""The data scientist's commands: export, evaluate, retrain, import-obd and `models ...`.

Thin click commands over library functions (service/export.py, service/evaluate.py,
service/retrain.py, service/obd.py, service/modelops.py), registered on the `tactful` group by
`register(main)` in service/cli.py. Bad input is a click error naming the option, never a
traceback.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import click

from service.clock import SystemClock


def _policy(policies_dir: str, name: str):
    from service.policy import PolicyError, load_policies

    try:
        policies = load_policies(policies_dir)
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--policies") from None
    if name not in policies:
        raise click.BadParameter(f"no policy named {name!r} in {policies_dir} (known: {', '.join(sorted(policies))})",
                                 param_hint="--policy")
    return policies[name], policies


def _store(db: str, must_exist: bool = True):
    from service.store import Store

    if must_exist and not Path(db).is_file():
        raise click.BadParameter(f"{db!r} does not exist", param_hint="--db")
    return Store(db, secret=os.environ.get("TACTFUL_SECRET"))


def _time(value: str | None, hint: str) -> float | None:
    from service.times import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _now(value: str | None = None) -> float:
    """`--now` when given, else the wall clock: the one place these commands read it."""
    at = _time(value, "--now")
    return at if at is not None else SystemClock().now()


db_option = click.option("--db", default="tactful.db", show_default=True, help="SQLite file of the store.")
policies_option = click.option("--policies", default="examples/policies", show_default=True,
                               help="Directory of policy TOML files.")
policy_option = click.option("--policy", "policy_name", required=True, help="The policy's name.")
since_option = click.option("--since", help="Only decisions made at or after this time (RFC 3339 or a date).")
until_option = click.option("--until", help="Only decisions made before this time.")


@click.command("export")
@db_option
@policies_option
@policy_option
@since_option
@until_option
@click.option("--format", "fmt", type=click.Choice(["vw", "csv", "parquet"]), required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, writable=True), help="Output file.")
@click.option("--now", help="Decisions whose reward window closed before this time are final (default: now).")
def export_cmd(db, policies, policy_name, since, until, fmt, out, now):
    """Export every final decision of a policy: features, allowed arms, logged probabilities,
    chosen arm, outcomes and shaped reward. `vw` is cb_adf text VW learns from as it is."""
    from service.offline.export import export, final_decisions

    policy, _ = _policy(policies, policy_name)
    store = _store(db)
    at = _now(now)
    rows = final_decisions(store, policy, at, _time(since, "--since"), _time(until, "--until"))
    try:
        n = export(rows, policy, fmt, out)
    except RuntimeError as exc:  # pyarrow missing
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {n} final decisions of {policy.name} to {out} ({fmt})")


@click.command("evaluate")
@db_option
@policies_option
@policy_option
@click.option("--candidate", help="A model version (3 or v3), a VW model file, or a baseline name.")
@click.option("--baseline", "baselines", multiple=True,
              help="active | uniform | logged | fallback | a version | a model file (repeatable; "
                   "default: active and uniform). The first is the reference for the lift.")
@since_option
@until_option
@click.option("--now", help="Decisions whose reward window closed before this time are final (default: now).")
@click.option("--shadow", is_flag=True, help="Report the shadow candidate's agreement and estimated value instead.")
@click.option("--out", default=None, help="Directory for report.md, estimates.png, evaluation.json "
                                          "(default: evaluation-POLICY).")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(50),
              help="Bootstrap resamples for the unsubscribe and complaint rises; "
                   "the estimators' intervals are analytic (docs/ope.md).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-store", is_flag=True, help="Do not store the evaluation beside the candidate version.")
def evaluate_cmd(db, policies, policy_name, candidate, baselines, since, until, now, shadow, out, n_boot, seed,
                 no_store):
    """Estimate a candidate's value against the active version and baselines (IPS, SNIPS, DM, DR,
    Switch-DR with 95% intervals and effective sample sizes), as a table and a report."""
    from service.offline.errors import EvaluationError
    from service.offline.evaluate import evaluate
    from service.offline.report import write_report

    policy, _ = _policy(policies, policy_name)
    store = _store(db)
    at = _now(now)
    out = out or f"evaluation-{policy.name}"
    command = "tactful " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if shadow:
        from service.learning.registry import ModelOps
        from service.learning.shadow import shadow_report

        try:
            result = shadow_report(ModelOps(store), policy, at, _time(since, "--since"), _time(until, "--until"),
                                   seed=seed)
        except EvaluationError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(result["text"])
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "shadow.json").write_text(json.dumps({k: v for k, v in result.items() if k != "text"},
                                                          indent=2, default=float))
        return
    if not candidate:
        raise click.BadParameter("name the candidate to evaluate (or use --shadow)", param_hint="--candidate")
    try:
        result = evaluate(store, policy, candidate, baselines or ("active", "uniform"), now=at,
                          since=_time(since, "--since"), until=_time(until, "--until"), n_boot=n_boot, seed=seed,
                          progress=sys.stderr.isatty())
    except EvaluationError as exc:
        raise click.BadParameter(str(exc), param_hint="--candidate/--baseline") from None
    click.echo(result.table())
    report = write_report(result, out, command)
    if result.candidate_version is not None and not no_store:
        from service.learning.registry import ModelOps

        ModelOps(store).store_evaluation(policy.name, result.candidate_version, result.as_dict(), at)
        click.echo(f"stored beside {policy.name} version {result.candidate_version}")
    click.echo(f"report: {report}")


@click.command("retrain")
@db_option
@policies_option
@policy_option
@since_option
@until_option
@click.option("--now", help="Decisions whose reward window closed before this time are final (default: now).")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.5),
              help="The latest share of the decisions, held out to choose and evaluate the candidate.")
@click.option("--bootstrap", "n_boot", default=500, show_default=True, type=click.IntRange(50))
@click.option("--seed", default=0, show_default=True, type=int)
def retrain_cmd(db, policies, policy_name, since, until, now, holdout, n_boot, seed):
    """Train VW offline from the logs over a small grid (exploration, interactions, learning rate),
    choose by DR on a later held-out time slice, and store the winner as a candidate version (not
    active) with its evaluation beside it."""
    from service.offline.errors import EvaluationError
    from service.learning.retrain import retrain

    policy, _ = _policy(policies, policy_name)
    store = _store(db)
    try:
        r = retrain(store, policy, _now(now), _time(since, "--since"), _time(until, "--until"), holdout,
                    n_boot=n_boot, seed=seed, progress=sys.stderr.isatty())
    except EvaluationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"trained on {r['train']} decisions, chose on the {r['held_out']} latest (DR on the held-out slice):")
    for c in r["search"]:
        mark = "*" if c.vw_args == r["chosen"] else " "
        click.echo(f" {mark} {c.dr:.4f} [{c.lo:.4f}, {c.hi:.4f}]  {c.vw_args}")
    click.echo(r["evaluation"].table())
    click.echo(f"candidate version {r['version']} of {policy.name} written (not active); promote with: "
               f"tactful models promote --db {db} --policies {policies} --policy {policy.name} {r['version']}")


@click.command("import-obd")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--db", default="obd.db", show_default=True, help="SQLite file of the store (created if missing).")
@click.option("--policies", default="obd-policies", show_default=True,
              help="Directory where each imported logging policy's TOML file is written.")
def import_obd_cmd(directory, db, policies):
    """Import Open Bandit Dataset logs (DIR/<logger>/<campaign>.csv and item_context.csv) into a
    store, one policy per logging policy, so that `tactful evaluate` runs on them."""
    from service.offline.obd import import_obd

    store = _store(db, must_exist=False)
    try:
        summaries = import_obd(directory, store, policies, progress=sys.stderr.isatty())
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(f"cannot import {directory}: {exc}") from None
    for s in summaries:
        click.echo(f"{s['policy']}: {s['impressions']} impressions, {s['clicks']} clicks "
                   f"(observed click rate {s['click_rate']:.4%})")
    click.echo(f"policies written to {policies}/; evaluate with: tactful evaluate --db {db} --policies {policies} "
               f"--policy {summaries[0]['policy']} --candidate bts-zozotown --baseline uniform")


@click.group("models")
def models_group():
    """Model versions: list, show, activate, rollback, promote, shadow."""


def _ops(db: str):
    from service.learning.registry import ModelOps

    return ModelOps(_store(db))


def _problem(exc) -> click.ClickException:
    from service.errors import Problem

    if isinstance(exc, Problem):
        return click.ClickException(exc.detail)
    raise exc


def _version_arg(value: str) -> int:
    v = value.lstrip("v")
    if not v.isdigit():
        raise click.BadParameter(f"{value!r} is not a model version number", param_hint="VERSION")
    return int(v)


@models_group.command("list")
@db_option
@policies_option
@policy_option
def models_list(db, policies, policy_name):
    """Every version of a policy: parent, source, what it learned, whether it is active."""
    from service.times import to_rfc3339

    policy, _ = _policy(policies, policy_name)
    ops = _ops(db)
    shadow = ops.shadow_version(policy.name)
    click.echo(f"{'':2}{'version':>7} {'parent':>6}  {'source':<8} {'created':<20} {'learned':>8}  evaluated")
    for v in ops.versions(policy.name):
        mark = "*" if v["active"] else ("s" if v["version"] == shadow else " ")
        click.echo(f"{mark:2}{v['version']:>7} {v['parent'] if v['parent'] is not None else '-':>6}  {v['source']:<8} "
                   f"{to_rfc3339(v['created_at'])[:19]:<20} {v['n_learned'] or 0:>8}  {'yes' if v['evaluations'] else '-'}")
    click.echo("(* active, s shadow)")


@models_group.command("show")
@db_option
@policies_option
@policy_option
@click.argument("version")
def models_show(db, policies, policy_name, version):
    """One version: where it came from, its activations with their reasons, its stored evaluation."""
    policy, _ = _policy(policies, policy_name)
    try:
        v = _ops(db).version(policy.name, _version_arg(version))
    except Exception as exc:
        raise _problem(exc) from None
    click.echo(json.dumps(v, indent=2, default=str))


@models_group.command("activate")
@db_option
@policies_option
@policy_option
@click.argument("version")
@click.option("--reason", required=True, help="Why: recorded with the activation.")
def models_activate(db, policies, policy_name, version, reason):
    """Serve VERSION now (every worker within about a second). The revert guard watches it."""
    policy, _ = _policy(policies, policy_name)
    try:
        r = _ops(db).activate(policy.name, _version_arg(version), reason, _now())
    except Exception as exc:
        raise _problem(exc) from None
    click.echo(f"{policy.name}: version {r['version']} active (was {r['previous']}): {reason}")


@models_group.command("rollback")
@db_option
@policies_option
@policy_option
@click.option("--to", "to", default=None, help="The version to return to (default: the one active before).")
@click.option("--reason", default=None, help="Why: recorded with the activation.")
def models_rollback(db, policies, policy_name, to, reason):
    """Activate the version that was active before the latest activation."""
    policy, _ = _policy(policies, policy_name)
    try:
        r = _ops(db).rollback(policy.name, _now(), _version_arg(to) if to else None, reason)
    except Exception as exc:
        raise _problem(exc) from None
    click.echo(f"{policy.name}: rolled back to version {r['version']} (was {r['previous']})")


@models_group.command("promote")
@db_option
@policies_option
@policy_option
@click.argument("version")
@click.option("--reason", default=None, help="Recorded with the activation (default: the evaluation's lift).")
def models_promote(db, policies, policy_name, version, reason):
    """Activate VERSION if its stored evaluation meets every promotion criterion of the policy;
    otherwise refuse and say which it misses."""
    from service.learning.registry import PromotionRefused

    policy, _ = _policy(policies, policy_name)
    try:
        r = _ops(db).promote(policy, _version_arg(version), _now(), reason)
    except PromotionRefused as exc:
        raise click.ClickException(f"version {version} of {policy.name} is not promoted; it misses:\n  - "
                                   + "\n  - ".join(exc.misses)) from None
    except Exception as exc:
        raise _problem(exc) from None
    click.echo(f"{policy.name}: version {r['version']} promoted and active (was {r['previous']}): {r['reason']}")


@models_group.command("shadow")
@db_option
@policies_option
@policy_option
@click.argument("version", required=False)
@click.option("--off", is_flag=True, help="Stop shadow scoring.")
def models_shadow(db, policies, policy_name, version, off):
    """Score every live decision with VERSION beside the active one (logged, never served)."""
    policy, _ = _policy(policies, policy_name)
    if not off and not version:
        raise click.BadParameter("name the version to shadow, or pass --off", param_hint="VERSION")
    try:
        _ops(db).set_shadow(policy.name, None if off else _version_arg(version), _now())
    except Exception as exc:
        raise _problem(exc) from None
    click.echo(f"{policy.name}: shadow scoring {'off' if off else f'by version {version}'}")


def register(main: click.Group) -> None:
    main.add_command(retrain_cmd)
    main.add_command(models_group)
    main.add_command(import_obd_cmd)
    main.add_command(export_cmd)
    main.add_command(evaluate_cmd)
