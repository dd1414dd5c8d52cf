"""Replay simulation: run a policy's real decision code against a synthetic population.

    tactful simulate SCENARIO.toml [--policy FILE] [--decisions N] [--seed S] [--url URL]
                     [--db PATH] [--out DIR] [--run NAME ...] [--compare]

A scenario (models/scenario.py, docs/simulation.md) declares the population and the truth about
how it responds. The simulator asks the decision code about one person at a time, in virtual
time, samples what the person does from the truth, and reports it back as outcomes with their
timestamps, in time order. The decision code is the real one: `DecisionEngine.decide` with its
guardrails, store and VW model, and `OnlineLearner.step` whenever `learn_every` of virtual time
has passed -- in process with a `ManualClock`, or over HTTP against `tactful serve --clock
request` (`--url`).

Decision makers ("--run"):
  tactful         the policy as written: the real engine and the real online learner
  fatigue-blind   the same, with the reward reduced to clicks (no fatigue term, no penalties)
  thompson, static-best, uniform, oracle   baselines (models/baselines.py), plugged in where the
                  engine's VW model scores the allowed arms: same engine, same guardrails, same
                  decision log
Every send is re-checked against the simulator's own record of the person (service/sim_checks.py).

Library first: `simulate(...)` does the work and returns the results; the click command
(service/cli/simulate.py) is a thin layer over it.
"""
from __future__ import annotations

import heapq
import itertools
import math
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from models.baselines import Ask, Feedback
from models.reward import shaped_reward
from service.decision.explain import MODES
from service.simulation.errors import SimulationError
from service.simulation.makers import check_maker
from service.simulation.referee import Checker, PersonRecord, rules_for
from service.simulation.targets import InProcess, OverHTTP
from service.simulation.truth import OUTCOME_TYPES, pressure, sample_outcomes
from service.simulation.world import World, build_world, resolve_send_at
from service.times import to_rfc3339


# -- one run -------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything recorded about one decision maker's run, one row per ask."""
    maker: str
    mode: str
    world: World
    arm: np.ndarray
    send: np.ndarray
    expected: np.ndarray       # true expected shaped reward of the chosen arm
    best: np.ndarray           # ... of the best arm the simulator's own rules allowed (oracle in place)
    realized: np.ndarray       # shaped reward of what the person really did (every outcome counted)
    outcomes: dict[str, np.ndarray]
    violations: np.ndarray
    violation_reasons: dict[str, int]
    mode_code: np.ndarray
    fatigue_contacts: np.ndarray
    unchecked: list[str]
    wall_seconds: float
    violation_examples: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by part: decide, outcomes, learn, simulator
    rules_checked: list[str] = field(default_factory=list)
    warmup_decisions: int = 0
    warmup_violations: int = 0

    @property
    def decisions_per_second(self) -> float:
        """Every decision made, the warm-up's included, per second of wall time."""
        return (len(self.arm) + self.warmup_decisions) / self.wall_seconds if self.wall_seconds > 0 else float("nan")


def run_maker(world: World, maker: str, *, url: str | None = None, db: str | None = None,
              progress: bool = True, extra_rules: Sequence = (), register_timezones: bool = True) -> Run:
    """One decision maker's run. `extra_rules` are checked on top of the policy's own (to try
    out rules the policy does not declare, e.g. sim_checks.QuietHoursRule).

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
        target = InProcess(world, maker, db, world.seed)
    try:
        return _run(world, maker, target, progress, extra_rules, register_timezones)
    finally:
        target.close()
        if tmp is not None:
            tmp.cleanup()


def _run(world: World, maker: str, target, progress: bool, extra_rules: Sequence = (),
         register_timezones: bool = True) -> Run:
    from tqdm import tqdm

    sc, pol, truth, pop = world.scenario, world.policy, world.truth, world.population
    spec = sc.spec
    n, people = world.decisions, world.people
    rules, unchecked = rules_for(pol)
    checker = Checker(list(rules) + list(extra_rules))
    # the simulator's own allowed set (for the oracle-in-place figure) follows the policy's rules only
    policy_checker = Checker(rules)
    zones = {z: ZoneInfo(z) for z in set(pop.timezone)}
    features = pol.spec.features
    segments = [s.name for s in spec.segments]
    accepted = set(pol.outcome_types)
    window = pol.spec.reward.window
    fatigue_window = pol.spec.reward.fatigue.window
    half_life = spec.fatigue.half_life
    keep = max([c.window for c in pol.spec.guardrails.caps] + [fatigue_window, 10 * half_life])
    sends_idx = np.flatnonzero(~truth.is_hold)
    hold_idx = int(np.flatnonzero(truth.is_hold)[0]) if truth.is_hold.any() else None
    arm_index = pol.arm_index
    # arms grouped by (channel, timing), the unit every guardrail rule decides on
    groups: dict[tuple[str, int], np.ndarray] = {}
    for a in sends_idx:
        groups.setdefault((pol.arms[a].channel, int(truth.arm_timing[a])), []).append(int(a))
    groups = {k: np.array(v) for k, v in groups.items()}
    resp = spec.response

    # the simulator's own record of everybody
    records = [PersonRecord(zones[pop.timezone[p]], dict(pop.consent[p])) for p in range(people)]
    users = [f"{sc.name}-{p:06d}" for p in range(people)]
    contexts = []
    for p in range(people):
        ctx = {"segment": segments[pop.segment[p]], "country": pop.country[p], "tenure_days": float(pop.tenure_days[p])}
        contexts.append({k: v for k, v in ctx.items() if k in features and v is not None})

    # the warm-up's asks first (business as usual, not measured), then the run's
    n_warm = len(world.warm_t)
    all_t = np.concatenate([world.warm_t, world.ask_t])
    all_person = np.concatenate([world.warm_person, world.ask_person]).astype(int)
    all_u = np.concatenate([world.warm_uniforms, world.uniforms])
    n = n_warm + n  # every ask; the measured ones are the last world.decisions
    arm = np.full(n, -1, dtype=np.int32)
    send = np.zeros(n, dtype=bool)
    expected = np.zeros(n)
    best = np.zeros(n)
    realized = np.zeros(n)
    outcomes = {k: np.zeros(n, dtype=bool) for k in OUTCOME_TYPES}
    violations = np.zeros(n, dtype=np.int16)
    mode_code = np.zeros(n, dtype=np.int8)
    fcontacts = np.zeros(n, dtype=np.int16)
    reasons: dict[str, int] = {}
    examples: list[str] = []

    queue: list[tuple[float, int, str, str, int, str | None]] = []  # (at, tie, event_id, type, person, channel)
    tie = itertools.count()
    pending: deque[tuple[float, Feedback]] = deque()
    next_learn = float(all_t[0]) + spec.learn_every

    t0 = time.perf_counter()
    start = float(all_t[0]) - 1.0
    for p in range(people):
        target.grant(users[p], pop.consent[p], start)
        if register_timezones:
            target.register(users[p], pop.timezone[p], start)

    clock = time.perf_counter
    spent = {"decide": 0.0, "outcomes": 0.0, "learn": 0.0}

    def deliver(until: float) -> None:
        t_in = clock()
        while queue and queue[0][0] <= until:
            at, _, event_id, kind, p, channel = heapq.heappop(queue)
            if kind in accepted:
                target.outcome(event_id, kind, at, f"sim-{kind}")
            if kind in ("unsubscribe", "complaint") and channel is not None:
                rec = records[p]
                if kind == "unsubscribe":
                    rec.consent[channel] = False
                rec.left[channel] = (kind, at)
        spent["outcomes"] += clock() - t_in

    def learn(now: float) -> None:
        feedback = []
        while pending and pending[0][0] <= now:
            feedback.append(pending.popleft()[1])
        t_in = clock()
        target.learn(now, feedback)
        spent["learn"] += clock() - t_in

    bar = tqdm(total=n, desc=f"{sc.name}:{maker}", unit="dec", disable=not progress, mininterval=1.0,
               smoothing=0.1)
    target.warm_up(n_warm > 0)
    for i in range(n):
        if i == n_warm:
            target.warm_up(False)
        t = float(all_t[i])
        p = int(all_person[i])
        seg = int(pop.segment[p])
        rec = records[p]
        deliver(t)
        if t >= next_learn:
            learn(t)
            while next_learn <= t:
                next_learn += spec.learn_every
        # the person as the simulator knows them now
        if rec.sends and rec.sends[0][1] < t - keep:
            rec.sends = [s for s in rec.sends if s[1] >= t - keep]
        fc = sum(1 for _, at in rec.sends if at > t - fatigue_window)
        # where the service resolves timing slots: the person's zone once it was told, else the policy's
        slot_at = [resolve_send_at(tm, t, rec.timezone if register_timezones else pol.tz) for tm in truth.timings]
        slot_hour = np.array([datetime.fromtimestamp(s, rec.timezone).hour for s in slot_at])
        slot_pressure = np.array([pressure(rec.sends, s, half_life) for s in slot_at])
        probs = truth.probabilities(seg, t, sends_idx, slot_hour[truth.arm_timing[sends_idx]],
                                    slot_pressure[truth.arm_timing[sends_idx]])
        values = np.full(len(pol.arms), truth.default)
        values[sends_idx] = truth.expected_reward(probs, fc)
        allowed_sends = [g for (ch, ti), g in groups.items() if policy_checker.allows(rec, ch, slot_at[ti], t)]
        best_value = max([values[hold_idx]] if hold_idx is not None else [-math.inf])
        if allowed_sends:
            best_value = max(best_value, float(values[np.concatenate(allowed_sends)].max()))

        ask = Ask(seg, expected=lambda allowed, v=values: v[np.asarray(allowed)])
        t_in = clock()
        context = contexts[p]
        if "daypart" in features:  # what a campaign tool knows of the moment: the person's local daypart
            context = context | {"daypart": daypart(datetime.fromtimestamp(t, rec.timezone).hour)}
        event_id, arm_id, send_at, mode = target.decide(users[p], context, t, ask)
        spent["decide"] += clock() - t_in
        a = arm_index[arm_id]
        arm[i], expected[i], best[i] = a, values[a], best_value
        mode_code[i] = MODES.index(mode)
        fcontacts[i] = fc
        got: list[tuple[str, float]] = []
        if not truth.is_hold[a]:
            channel = pol.arms[a].channel
            send[i] = True
            found = checker.reasons(rec, channel, send_at, t)
            if found:
                violations[i] = len(found)
                for name, why in found:
                    reasons[name] = reasons.get(name, 0) + 1
                    if len(examples) < 20:
                        examples.append(f"decision {i} ({event_id}) {arm_id} at {to_rfc3339(send_at)}: {name}: {why}")
            # what the person does, from the truth at the real send time, with this ask's draws
            ti = int(truth.arm_timing[a])
            if send_at != slot_at[ti]:  # the service resolved the slot otherwise: judge the real send
                hour = datetime.fromtimestamp(send_at, rec.timezone).hour
                pr = truth.probabilities(seg, t, np.array([a]), np.array([hour]),
                                         np.array([pressure(rec.sends, send_at, half_life)]))
            else:
                k = int(np.searchsorted(sends_idx, a))
                pr = {key: v[k:k + 1] for key, v in probs.items()}
            got = sample_outcomes({k: float(v[0]) for k, v in pr.items()}, all_u[i], send_at, resp)
            rec.sends.append((channel, send_at))
            for kind, at in got:
                outcomes[kind][i] = True
                heapq.heappush(queue, (at, next(tie), event_id, kind, p, channel))
        realized[i] = shaped_reward(world.reward, [(k, 1.0) for k, _ in got if k in world.reward.weights],
                                    is_send=bool(send[i]), recent_contacts=fc)
        clicked = any(k == "click" and at <= t + window for k, at in got)
        pending.append((t + window, Feedback(seg, a, clicked)))
        bar.update(1)
    bar.close()
    # the rest of the outcomes, then one last learning step: the log ends complete
    end = float(all_t[-1]) + window + 1.0
    deliver(end)
    learn(end)
    deliver(math.inf)  # stored, but too late to count
    wall = time.perf_counter() - t0
    m = slice(n_warm, n)  # what is measured: the run after the warm-up
    warm_violations = int((violations[:n_warm] > 0).sum())
    return Run(maker, target.mode, world, arm[m], send[m], expected[m], best[m], realized[m],
               {k: v[m] for k, v in outcomes.items()}, violations[m], reasons,
               mode_code[m], fcontacts[m], unchecked, wall, examples,
               {k: round(v, 2) for k, v in spent.items()} | {"simulator": round(wall - sum(spent.values()), 2)},
               sorted({r.name for r in checker.rules}), n_warm, warm_violations)


def daypart(hour: int) -> str:
    return ("night" if hour < 6 else "morning" if hour < 12 else "afternoon" if hour < 17
            else "evening" if hour < 21 else "late")


# -- the library entry point ------------------------------------------------------

def simulate(scenario: str | Path, *, policy: str | Path | None = None, decisions: int | None = None,
             seed: int | None = None, url: str | None = None, db: str | None = None, out: str | Path | None = None,
             makers: Sequence[str] = ("tactful",), compare: bool = False, progress: bool = True) -> dict:
    """Run each decision maker on the same population, asks and random draws; write metrics.json,
    plots and report.md to `out` (one sub-directory per maker when comparing). Returns the metrics."""
    from service.simulation.report import compare_report, run_metrics, write_run

    makers = list(makers)
    for m in makers:
        check_maker(m)
    world = build_world(scenario, policy, decisions, seed)
    runs = []
    for m in makers:
        path = None
        if db:
            path = db if len(makers) == 1 else str(Path(db).with_name(f"{Path(db).stem}-{m}{Path(db).suffix or '.db'}"))
        runs.append(run_maker(world, m, url=url, db=path, progress=progress))
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
