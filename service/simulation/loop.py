"""The run loop: one decision maker's run, ask by ask, in virtual time order.

For each ask: the outcomes that are due are reported to the target, the learner steps if
`learn_every` of virtual time has passed, the simulator works out what the truth expects of each
arm for this person now (and the best arm its own rules allow: the oracle in place), and the
target decides. A send is re-checked against the simulator's own record of the person
(referee.py), and what the person does is sampled from the truth with the ask's draws and queued
as outcomes with their own timestamps. The warm-up's asks come first and are not measured.
"""
from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

import numpy as np
from tqdm import tqdm

from models.baselines import Ask, Feedback
from models.reward import shaped_reward
from service.decision.explain import MODES
from service.simulation.referee import Checker, PersonRecord, Rule, rules_for
from service.simulation.targets import Target
from service.simulation.truth import OUTCOME_TYPES, pressure, sample_outcomes
from service.simulation.world import World, resolve_send_at
from service.times import to_rfc3339


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
    model_version: int | None = None  # the version the target served at the end (None: no model)

    @property
    def decisions_per_second(self) -> float:
        """Every decision made, the warm-up's included, per second of wall time."""
        return (len(self.arm) + self.warmup_decisions) / self.wall_seconds if self.wall_seconds > 0 else float("nan")


class _Rows:
    """The per-ask record of a run, the warm-up's asks included."""

    def __init__(self, n: int):
        self.arm = np.full(n, -1, dtype=np.int32)
        self.send = np.zeros(n, dtype=bool)
        self.expected = np.zeros(n)
        self.best = np.zeros(n)
        self.realized = np.zeros(n)
        self.outcomes = {k: np.zeros(n, dtype=bool) for k in OUTCOME_TYPES}
        self.violations = np.zeros(n, dtype=np.int16)
        self.mode_code = np.zeros(n, dtype=np.int8)
        self.fcontacts = np.zeros(n, dtype=np.int16)
        self.reasons: dict[str, int] = {}
        self.examples: list[str] = []


@dataclass
class _Moment:
    """One ask as the simulator sees it before the decision."""
    i: int                      # the ask's row
    t: float
    person: int
    segment: int
    record: PersonRecord
    fatigue_contacts: int       # sends inside the policy's fatigue window
    slot_at: list[float]        # when each timing slot would send
    probs: dict[str, np.ndarray]  # the truth's outcome probabilities of every send arm
    values: np.ndarray          # the true expected shaped reward of every arm
    best: float                 # ... of the best arm the simulator's own rules allow


def _groups(world: World) -> dict[tuple[str, int], np.ndarray]:
    """The send arms grouped by (channel, timing), the unit every guardrail rule decides on."""
    truth, pol = world.truth, world.policy
    groups: dict[tuple[str, int], list] = {}
    for a in np.flatnonzero(~truth.is_hold):
        groups.setdefault((pol.arms[a].channel, int(truth.arm_timing[a])), []).append(int(a))
    return {k: np.array(v) for k, v in groups.items()}


def _people(world: World) -> tuple[list[PersonRecord], list[str], list[dict]]:
    """The simulator's own record of everybody, their user ids, and the context a campaign tool
    sends about each of them (the features the policy declares)."""
    pop, features = world.population, world.policy.spec.features
    segments = [s.name for s in world.scenario.spec.segments]
    zones = {z: ZoneInfo(z) for z in set(pop.timezone)}
    records = [PersonRecord(zones[pop.timezone[p]], dict(pop.consent[p])) for p in range(world.people)]
    users = [f"{world.scenario.name}-{p:06d}" for p in range(world.people)]
    contexts = []
    for p in range(world.people):
        ctx = {"segment": segments[pop.segment[p]], "country": pop.country[p], "tenure_days": float(pop.tenure_days[p])}
        contexts.append({k: v for k, v in ctx.items() if k in features and v is not None})
    return records, users, contexts


def daypart(hour: int) -> str:
    return ("night" if hour < 6 else "morning" if hour < 12 else "afternoon" if hour < 17
            else "evening" if hour < 21 else "late")


class Loop:
    """One decision maker's run against `target`. `timer` (seconds, monotonic) times the parts of
    the run for the report; nothing the run decides depends on it."""

    def __init__(self, world: World, maker: str, target: Target, timer: Callable[[], float], *,
                 extra_rules: Sequence[Rule] = (), register_timezones: bool = True):
        self.world, self.maker, self.target, self.timer = world, maker, target, timer
        self.register_timezones = register_timezones
        pol, truth, spec = world.policy, world.truth, world.scenario.spec
        rules, self.unchecked = rules_for(pol)
        self.checker = Checker(list(rules) + list(extra_rules))
        # the simulator's own allowed set (for the oracle-in-place figure) follows the policy's rules only
        self.policy_checker = Checker(rules)
        self.accepted = set(pol.outcome_types)
        self.window = pol.spec.reward.window
        self.fatigue_window = pol.spec.reward.fatigue.window
        self.half_life = spec.fatigue.half_life
        self.keep = max([c.window for c in pol.spec.guardrails.caps] + [self.fatigue_window, 10 * self.half_life])
        self.sends_idx = np.flatnonzero(~truth.is_hold)
        self.hold_idx = int(np.flatnonzero(truth.is_hold)[0]) if truth.is_hold.any() else None
        self.groups = _groups(world)
        self.records, self.users, self.contexts = _people(world)
        # the warm-up's asks first (business as usual, not measured), then the run's
        self.n_warm = len(world.warm_t)
        self.ask_t = np.concatenate([world.warm_t, world.ask_t])
        self.ask_person = np.concatenate([world.warm_person, world.ask_person]).astype(int)
        self.uniforms = np.concatenate([world.warm_uniforms, world.uniforms])
        self.rows = _Rows(len(self.ask_t))
        # outcomes to report, in time order: (at, tie, event_id, type, person, channel)
        self.queue: list[tuple[float, int, str, str, int, str | None]] = []
        self.tie = itertools.count()
        self.pending: deque[tuple[float, Feedback]] = deque()
        self.spent = {"decide": 0.0, "outcomes": 0.0, "learn": 0.0}

    def run(self, progress: bool) -> Run:
        world, target, n = self.world, self.target, len(self.ask_t)
        learn_every = world.scenario.spec.learn_every
        next_learn = float(self.ask_t[0]) + learn_every
        t0 = self.timer()
        self.introduce(float(self.ask_t[0]) - 1.0)
        bar = tqdm(total=n, desc=f"{world.scenario.name}:{self.maker}", unit="dec", disable=not progress,
                   mininterval=1.0, smoothing=0.1)
        target.warm_up(self.n_warm > 0)
        for i in range(n):
            if i == self.n_warm:
                target.warm_up(False)
            t = float(self.ask_t[i])
            self.deliver(t)
            if t >= next_learn:
                self.learn(t)
                while next_learn <= t:
                    next_learn += learn_every
            self.ask(self.moment(i, t, int(self.ask_person[i])))
            bar.update(1)
        bar.close()
        # the rest of the outcomes, then one last learning step: the log ends complete
        end = float(self.ask_t[-1]) + self.window + 1.0
        self.deliver(end)
        self.learn(end)
        self.deliver(math.inf)  # stored, but too late to count
        return self.result(self.timer() - t0)

    def introduce(self, start: float) -> None:
        """Tell the service each person's consent and, unless told not to, time zone."""
        pop = self.world.population
        for p in range(self.world.people):
            self.target.grant(self.users[p], pop.consent[p], start)
            if self.register_timezones:
                self.target.register(self.users[p], pop.timezone[p], start)

    def deliver(self, until: float) -> None:
        """Report the outcomes due by `until`; an unsubscribe or complaint changes the record."""
        t_in = self.timer()
        while self.queue and self.queue[0][0] <= until:
            at, _, event_id, kind, p, channel = heapq.heappop(self.queue)
            if kind in self.accepted:
                self.target.outcome(event_id, kind, at, f"sim-{kind}")
            if kind in ("unsubscribe", "complaint") and channel is not None:
                rec = self.records[p]
                if kind == "unsubscribe":
                    rec.consent[channel] = False
                rec.left[channel] = (kind, at)
        self.spent["outcomes"] += self.timer() - t_in

    def learn(self, now: float) -> None:
        """A learning step, told which decisions' reward windows have closed by `now`."""
        feedback = []
        while self.pending and self.pending[0][0] <= now:
            feedback.append(self.pending.popleft()[1])
        t_in = self.timer()
        self.target.learn(now, feedback)
        self.spent["learn"] += self.timer() - t_in

    def moment(self, i: int, t: float, p: int) -> _Moment:
        """The person as the simulator knows them now, and what the truth expects of every arm."""
        world, truth, rec = self.world, self.world.truth, self.records[p]
        seg = int(world.population.segment[p])
        if rec.sends and rec.sends[0][1] < t - self.keep:
            rec.sends = [s for s in rec.sends if s[1] >= t - self.keep]
        fc = sum(1 for _, at in rec.sends if at > t - self.fatigue_window)
        # where the service resolves timing slots: the person's zone once it was told, else the policy's
        tz = rec.timezone if self.register_timezones else world.policy.tz
        slot_at = [resolve_send_at(tm, t, tz) for tm in truth.timings]
        slot_hour = np.array([datetime.fromtimestamp(s, rec.timezone).hour for s in slot_at])
        slot_pressure = np.array([pressure(rec.sends, s, self.half_life) for s in slot_at])
        sends_idx = self.sends_idx
        probs = truth.probabilities(seg, t, sends_idx, slot_hour[truth.arm_timing[sends_idx]],
                                    slot_pressure[truth.arm_timing[sends_idx]])
        values = np.full(len(world.policy.arms), truth.default)
        values[sends_idx] = truth.expected_reward(probs, fc)
        allowed_sends = [g for (ch, ti), g in self.groups.items()
                         if self.policy_checker.allows(rec, ch, slot_at[ti], t)]
        best_value = max([values[self.hold_idx]] if self.hold_idx is not None else [-math.inf])
        if allowed_sends:
            best_value = max(best_value, float(values[np.concatenate(allowed_sends)].max()))
        return _Moment(i, t, p, seg, rec, fc, slot_at, probs, values, best_value)

    def ask(self, m: _Moment) -> None:
        """The target decides; a send is checked and the person's response queued."""
        rows, world = self.rows, self.world
        ask = Ask(m.segment, expected=lambda allowed, v=m.values: v[np.asarray(allowed)])
        t_in = self.timer()
        context = self.contexts[m.person]
        if "daypart" in world.policy.spec.features:  # what a campaign tool knows of the moment: the local daypart
            context = context | {"daypart": daypart(datetime.fromtimestamp(m.t, m.record.timezone).hour)}
        event_id, arm_id, send_at, mode = self.target.decide(self.users[m.person], context, m.t, ask)
        self.spent["decide"] += self.timer() - t_in
        a = world.policy.arm_index[arm_id]
        rows.arm[m.i], rows.expected[m.i], rows.best[m.i] = a, m.values[a], m.best
        rows.mode_code[m.i] = MODES.index(mode)
        rows.fcontacts[m.i] = m.fatigue_contacts
        got: list[tuple[str, float]] = []
        if not world.truth.is_hold[a]:
            got = self.send(m, a, event_id, arm_id, send_at)
        rows.realized[m.i] = shaped_reward(world.reward, [(k, 1.0) for k, _ in got if k in world.reward.weights],
                                           is_send=bool(rows.send[m.i]), recent_contacts=m.fatigue_contacts)
        clicked = any(k == "click" and at <= m.t + self.window for k, at in got)
        self.pending.append((m.t + self.window, Feedback(m.segment, a, clicked)))

    def send(self, m: _Moment, a: int, event_id: str, arm_id: str, send_at: float) -> list[tuple[str, float]]:
        """Check a send against the simulator's own record, then sample what the person does, from
        the truth at the real send time, with this ask's draws; queue it as outcomes."""
        truth, rows = self.world.truth, self.rows
        channel = self.world.policy.arms[a].channel
        rows.send[m.i] = True
        self.check(m, channel, event_id, arm_id, send_at)
        ti = int(truth.arm_timing[a])
        if send_at != m.slot_at[ti]:  # the service resolved the slot otherwise: judge the real send
            hour = datetime.fromtimestamp(send_at, m.record.timezone).hour
            pr = truth.probabilities(m.segment, m.t, np.array([a]), np.array([hour]),
                                     np.array([pressure(m.record.sends, send_at, self.half_life)]))
        else:
            k = int(np.searchsorted(self.sends_idx, a))
            pr = {key: v[k:k + 1] for key, v in m.probs.items()}
        got = sample_outcomes({k: float(v[0]) for k, v in pr.items()}, self.uniforms[m.i], send_at,
                              self.world.scenario.spec.response)
        m.record.sends.append((channel, send_at))
        for kind, at in got:
            rows.outcomes[kind][m.i] = True
            heapq.heappush(self.queue, (at, next(self.tie), event_id, kind, m.person, channel))
        return got

    def check(self, m: _Moment, channel: str, event_id: str, arm_id: str, send_at: float) -> None:
        """The independent check: every rule the send breaks is a violation."""
        rows = self.rows
        found = self.checker.reasons(m.record, channel, send_at, m.t)
        if found:
            rows.violations[m.i] = len(found)
            for name, why in found:
                rows.reasons[name] = rows.reasons.get(name, 0) + 1
                if len(rows.examples) < 20:
                    rows.examples.append(f"decision {m.i} ({event_id}) {arm_id} at {to_rfc3339(send_at)}: "
                                         f"{name}: {why}")

    def result(self, wall: float) -> Run:
        r, n_warm = self.rows, self.n_warm
        m = slice(n_warm, len(self.ask_t))  # what is measured: the run after the warm-up
        seconds = {k: round(v, 2) for k, v in self.spent.items()}
        seconds["simulator"] = round(wall - sum(self.spent.values()), 2)
        return Run(self.maker, self.target.mode, self.world, r.arm[m], r.send[m], r.expected[m], r.best[m],
                   r.realized[m], {k: v[m] for k, v in r.outcomes.items()}, r.violations[m], r.reasons,
                   r.mode_code[m], r.fcontacts[m], self.unchecked, wall, r.examples, seconds,
                   sorted({rule.name for rule in self.checker.rules}), n_warm, int((r.violations[:n_warm] > 0).sum()))
