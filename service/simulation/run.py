"""Replay simulation: run a policy's real decision code against a synthetic population.

    tactful simulate SCENARIO.toml [--policy FILE] [--decisions N] [--seed S] [--url URL]
                     [--db PATH] [--out DIR] [--run NAME ...] [--compare]

A scenario (scenario.py, docs/simulation.md) declares the population and the truth about how it
responds (truth.py). The simulator asks the decision code about one person at a time, in virtual
time, samples what the person does from the truth, and reports it back as outcomes with their
timestamps, in time order (loop.py). The decision code is the real one: `DecisionEngine.decide`
with its guardrails, store and VW model, and `OnlineLearner.step` whenever `learn_every` of
virtual time has passed -- in process with a `ManualClock`, or over HTTP against `tactful serve
--clock request` (`--url`) (targets.py). The decision makers ("--run") are in makers.py. Every
send is re-checked against the simulator's own record of the person (referee.py).

Library first: `simulate(...)` does the work and returns the results; the click command
(service/cli/simulate.py) is a thin layer over it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

from service.simulation.errors import SimulationError
from service.simulation.loop import Loop, Run
from service.simulation.makers import check_maker
from service.simulation.metrics import run_metrics
from service.simulation.referee import Rule
from service.simulation.report import compare_report, write_run
from service.simulation.targets import InProcess, OverHTTP
from service.simulation.world import World, build_world


# -- one run -------------------------------------------------------------------------------

def run_maker(world: World, maker: str, *, monotonic: Callable[[], float], url: str | None = None,
              db: str | None = None, progress: bool = True, extra_rules: Sequence[Rule] = (),
              register_timezones: bool = True) -> Run:
    """One decision maker's run. `monotonic` is the caller's wall clock (time.monotonic): it times
    the run's parts for the report and paces the engine's model caches; no decision depends on
    it. `extra_rules` are checked on top of the policy's own (to try out rules the policy does
    not declare, e.g. referee.QuietHoursRule).

    `register_timezones`: tell the service each person's time zone before the run (their
    preferences, as a campaign tool would), so that timing slots and quiet hours resolve in the
    person's own zone. Without it the service falls back to the policy's zone, while the
    independent check still judges quiet hours in the person's true zone: the test suite uses
    that to show the check catches sends at the wrong local time."""
    check_maker(maker)
    tmp = None
    if url:
        if maker != "tactful":
            raise SimulationError(f"--url runs the server's own policy: only 'tactful' can run there, not {maker!r}")
        target = OverHTTP(world, url)
    else:
        if db is None:
            shm = Path("/dev/shm")  # a RAM-backed file when there is one: the real store, without disk I/O
            tmp = tempfile.TemporaryDirectory(prefix="tactful-sim-", dir=shm if shm.is_dir() else None)
            db = str(Path(tmp.name) / "simulation.db")
        target = InProcess(world, maker, db, world.seed, monotonic)
    try:
        run = Loop(world, maker, target, monotonic, extra_rules=extra_rules,
                   register_timezones=register_timezones).run(progress)
        run.model_version = target.active_version()
        return run
    finally:
        target.close()
        if tmp is not None:
            tmp.cleanup()


# -- the library entry point ------------------------------------------------------

def simulate(scenario: str | Path, *, monotonic: Callable[[], float], policy: str | Path | None = None,
             decisions: int | None = None, seed: int | None = None, url: str | None = None, db: str | None = None,
             out: str | Path | None = None, makers: Sequence[str] = ("tactful",), compare: bool = False,
             progress: bool = True) -> dict:
    """Run each decision maker on the same population, asks and random draws; write metrics.json,
    plots and report.md to `out` (one sub-directory per maker when comparing). Returns the metrics.
    `monotonic`: the caller's wall clock, as for `run_maker`."""
    makers = list(makers)
    for m in makers:
        check_maker(m)
    world = build_world(scenario, policy, decisions, seed)
    runs = []
    for m in makers:
        path = None
        if db:
            path = db if len(makers) == 1 else str(Path(db).with_name(f"{Path(db).stem}-{m}{Path(db).suffix or '.db'}"))
        runs.append(run_maker(world, m, monotonic=monotonic, url=url, db=path, progress=progress))
    oracle = next((r for r in runs if r.maker == "oracle"), None)
    results = {"scenario": world.scenario.name, "runs": {}}
    out = Path(out) if out else None
    for r in runs:
        metrics = run_metrics(r, oracle)
        results["runs"][r.maker] = metrics
        if out:
            write_run(r, metrics, out / r.maker if compare or len(runs) > 1 else out, oracle)
    if out and (compare or len(runs) > 1):
        results["comparison"] = compare_report(runs, results["runs"], out)
    return results
