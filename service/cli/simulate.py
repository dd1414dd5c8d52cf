"""The analyst's command: `tactful simulate`, a thin click command over
service.simulation.run.simulate (docs/simulation.md). Bad input -- a scenario or policy file that
does not validate, a run that cannot go as asked -- is a click error with its message, never a
traceback."""
from __future__ import annotations

import time

import click

from service.policy import PolicyError
from service.simulation.errors import SimulationError
from service.simulation.makers import MAKERS
from service.simulation.report import learned_summary
from service.simulation.run import simulate
from service.simulation.scenario import ScenarioError
from service.store import is_postgres


@click.command("simulate")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", type=click.Path(exists=True, dir_okay=False), help="Policy file (default: the scenario's).")
@click.option("--decisions", type=click.IntRange(1), help="Number of decisions (default: the scenario's); the "
              "population scales with it.")
@click.option("--seed", type=int, help="Random seed (default: the scenario's).")
@click.option("--url", help="Run against `tactful serve --clock request` at this address instead of in process.")
@click.option("--db", help="Keep the decision log in this store: a SQLite file (with --compare, one file per "
              "decision maker: NAME-MAKER.db) or an empty PostgreSQL database (one decision maker). "
              "TACTFUL_DB is not read: a simulation never writes into the service's store by accident.")
@click.option("--out", type=click.Path(file_okay=False), default="out/simulation", show_default=True,
              help="Directory for metrics.json, plots and report.md.")
@click.option("--run", "makers", multiple=True, type=click.Choice(MAKERS),
              help="Decision maker to run (repeatable). Default: tactful; with --compare: all of them.")
@click.option("--compare", is_flag=True, help="Run several decision makers on the same population and seed "
              "and write one comparison table and plot.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate_command(scenario, policy, decisions, seed, url, db, out, makers, compare, quiet):
    """Simulate SCENARIO (a TOML file) against the real decision code and report what happened."""
    if not makers:
        makers = MAKERS if compare else ("tactful",)
    if url and compare:
        raise click.ClickException("--compare runs baselines in process; it cannot be combined with --url")
    if db and is_postgres(db) and len(makers) > 1:
        raise click.BadParameter("a PostgreSQL store holds one decision maker's log; with --compare or several "
                                 "--run, give a SQLite file (one per maker is written beside it)", param_hint="--db")
    try:
        results = simulate(scenario, monotonic=time.monotonic, policy=policy, decisions=decisions, seed=seed,
                           url=url, db=db, out=out, makers=makers, compare=compare, progress=not quiet)
    except ScenarioError as exc:
        raise click.ClickException(f"invalid scenario: {exc}") from None
    except PolicyError as exc:
        raise click.ClickException(f"invalid policy: {exc}") from None
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    for name, m in results["runs"].items():
        t = m["totals"]
        click.echo(f"{name:>14}: shaped reward {t['shaped_reward']:.1f} ({t['shaped_reward_per_decision']:.4f}/decision), "
                   f"clicks {t['clicks']}, unsubscribes {t['unsubscribes']}, complaints {t['complaints']}, "
                   f"contacts/person-week {t['contacts_per_person_week']:.2f}, "
                   f"violations {m['guardrail_violations']['total']}, {m['decisions_per_second']:.0f} decisions/s")
    if len(results["runs"]) == 1:
        click.echo(learned_summary(next(iter(results["runs"].values()))))
    click.echo(f"wrote {out}/", err=True)
