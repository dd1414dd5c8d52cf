"""Known-truth logs: the REAL decision engine driven by a synthetic population whose expected reward
for every (segment, arm) is known, so the true value of any target policy can be computed exactly.

This is the stand-in for the simulator of issue 4 (`tactful simulate`, service/simulation/run.py):
everything that needs logs with a known truth goes through `generate_log(world, ...)` and
`true_value(world, ...)`, and can be pointed at the simulator once it exists.

The world:
  - a small policy (`world_policy()`): 4 contents x 2 channels x 2 timings + hold = 17 arms,
    consent opt-out on both channels and no caps, so every arm is allowed unless a person
    unsubscribed from a channel;
  - people in segments; a person's segment is their only context feature;
  - each (segment, arm) has a click probability and an unsubscribe probability; the policy's
    reward is click = 1, unsubscribe = -5, no fatigue, so E[reward | segment, arm] =
    p_click - 5 p_unsub exactly.

Logging policies: `uniform` puts every person in the holdout group, served uniform random choice
among the allowed arms (holdout_share = 0.999999); `engine` is the engine's own VW exploration
(squarecb with an epsilon floor) learning online every `learn_every` decisions.

The truth: given the logged contexts (segment and allowed arms of every decision), the value of a
target policy pi is  V(pi) = 1/n sum_i sum_a pi(a | x_i) E[r | segment_i, a],  exact, no
sampling. It is the value conditional on the contexts that arrived, which is what an estimator
computed on that log estimates; see docs/ope.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from service.clock import ManualClock
from service.decision.engine import DecideInput, DecisionEngine, OutcomeInput
from service.runtime import build_engine, build_learner, numbered_ids
from service.policy import Policy, parse_policy
from service.store import open_store

START = 1_780_000_000.0  # 2026-05-28: a fixed virtual start
CONTENTS = ("tips", "sale", "bundle", "loyalty")
CHANNELS = ("email", "push")
TIMINGS = ("now", "evening")
SEGMENTS = ("bargain", "newbie", "loyal", "lapsed")


# The engine's learner as the logger: the example policy's settings (examples/policies), with a
# larger exploration floor and fewer hash bits for this small policy, and no history cross (this
# world does not tire).
ENGINE_ARGS = "--squarecb --gamma_scale 300 --epsilon 0.1 -q UA --ignore I --clip_p 0.5 -l 0.1 -b 18"
# ... and the example's settings before 2026-11-23: weights up to 10 and VW's default step. A
# greedier logger, which gives up on unlucky arms sooner: the hard case for the estimators.
GREEDY_ARGS = "--squarecb --gamma_scale 300 --epsilon 0.1 -q UA --ignore I --clip_p 0.1 -b 18"
# ... and the example's own floor since 2026-11-30 (0.01): arms the model scores low are logged with
# probability down to 0.01 / 17, a floor ten times lower
FLOOR_ARGS = "--squarecb --gamma_scale 300 --epsilon 0.01 -q UA --ignore I --clip_p 0.5 -l 0.1 -b 18"
LOGGERS = {"uniform": ENGINE_ARGS, "engine": ENGINE_ARGS, "greedy": GREEDY_ARGS, "floor": FLOOR_ARGS}


def world_policy(name: str = "truth", logging: str = "uniform", vw_args: str | None = None,
                 extra: dict | None = None) -> Policy:
    """`logging`: "uniform" (a holdout of everyone: uniform random among the allowed arms), or the
    engine's own learner, "engine", "greedy" or "floor" (LOGGERS); `vw_args` overrides the
    learner's."""
    data = {
        "name": name,
        "channels": list(CHANNELS),
        "content": [{"id": c, "topic": c, "features": {"discount": 0.1 * i}} for i, c in enumerate(CONTENTS)],
        # "evening" is a label here: a 30-minute delay, inside the 1h window (the world's outcomes
        # come at the decision; a slot at 19:00 would need a window of more than 25 hours)
        "timing": [{"name": "now", "delay_minutes": 0}, {"name": "evening", "delay_minutes": 30}],
        "features": {"segment": {"type": "string", "required": True}},
        "guardrails": {"consent": {c: "opt_out" for c in CHANNELS}},
        "reward": {"window": "1h", "default": 0.0, "weights": {"click": 1.0, "unsubscribe": -5.0,
                                                               "complaint": -10.0},
                   "min": -5.0, "max": 1.0},
        "learner": {"vw_args": vw_args or LOGGERS[logging],
                    "holdout_share": 0.999999 if logging == "uniform" else 0.0},
    }
    data.update(extra or {})
    return parse_policy(data)


@dataclass
class World:
    """Click and unsubscribe probabilities per (segment, arm id); segment shares of the population."""

    click: dict[tuple[str, str], float]
    unsub: dict[tuple[str, str], float]
    segments: tuple[str, ...] = SEGMENTS
    shares: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
    weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0, "unsubscribe": -5.0})

    def expected_reward(self, segment: str, arm: str) -> float:
        return (self.weights["click"] * self.click.get((segment, arm), 0.0)
                + self.weights["unsubscribe"] * self.unsub.get((segment, arm), 0.0))


def default_world(policy: Policy, seed: int = 0, unsub: float = 0.0) -> World:
    """Each segment has a favourite content, channel and timing; click probability is additive in
    how many of the three an arm matches (0.02 .. 0.5). `unsub` is a flat unsubscribe rate per send."""
    rng = np.random.default_rng(1000 + seed)
    click, unsubs = {}, {}
    for s in SEGMENTS:
        fav = (CONTENTS[rng.integers(len(CONTENTS))], CHANNELS[rng.integers(2)], TIMINGS[rng.integers(2)])
        for arm in policy.arms:
            if arm.hold:
                click[(s, arm.id)] = 0.0
                continue
            c, ch, t = arm.id.split(":")
            click[(s, arm.id)] = 0.02 + 0.2 * (c == fav[0]) + 0.14 * (ch == fav[1]) + 0.14 * (t == fav[2])
            unsubs[(s, arm.id)] = unsub
    return World(click, unsubs)


@dataclass
class LogRun:
    engine: DecisionEngine
    policy: Policy
    world: World
    clock: ManualClock
    event_ids: list[str]
    segments: dict[str, str]  # event id -> segment


def make_engine(db: str | Path, policies: dict[str, Policy], start: float = START,
                id_prefix: str = "ev") -> tuple[DecisionEngine, ManualClock]:
    """The real engine on a SQLite file with a manual clock and readable event ids. The engine
    draws every choice from a hash of the event id, so logs meant to be independent replications
    need different `id_prefix`es (generate_log uses the seed)."""
    clock = ManualClock(start)
    store = open_store(str(db))
    engine = build_engine(store, policies, clock, new_id=numbered_ids(id_prefix), refresh_seconds=0)
    engine.ensure_models()
    return engine, clock


def generate_log(world: World, policy: Policy, db: str | Path, n: int, seed: int = 0, people: int = 400,
                 step: float = 60.0, learn_every: int = 250, engine: DecisionEngine | None = None,
                 clock: ManualClock | None = None, on_decision: Callable[[dict], None] | None = None) -> LogRun:
    """`n` decisions of the real engine for a population of `people`, outcomes drawn from `world`
    and reported through `record_outcome`, the online learner stepping every `learn_every`
    decisions (it only matters for engine logging). Time moves `step` seconds per decision."""
    if engine is None:
        engine, clock = make_engine(db, {policy.name: policy}, id_prefix=f"s{seed}-ev")
    rng = np.random.default_rng(seed)
    segs = rng.choice(len(world.segments), size=people, p=np.array(world.shares))
    learner = build_learner(engine.store, engine.policies, clock)  # with the revert guard, as `tactful learn`
    events, seg_of = [], {}
    for i in range(n):
        u = int(rng.integers(people))
        segment = world.segments[segs[u]]
        r = engine.decide(policy.name, DecideInput(f"p{seed}-{u}", {"segment": segment}))
        events.append(r["event_id"])
        seg_of[r["event_id"]] = segment
        arm = r["action"]["arm"]
        if not r["action"]["hold"]:
            if rng.random() < world.click.get((segment, arm), 0.0):
                engine.record_outcome(r["event_id"], OutcomeInput("click", outcome_id="click"))
            if rng.random() < world.unsub.get((segment, arm), 0.0):
                engine.record_outcome(r["event_id"], OutcomeInput("unsubscribe", outcome_id="unsub"))
        if on_decision is not None:
            on_decision(r)
        clock.advance(step)
        if learn_every and (i + 1) % learn_every == 0:
            learner.step(policy.name)
    clock.advance(policy.spec.reward.window + 1)  # every decision is final
    return LogRun(engine, policy, world, clock, events, seg_of)


def best_arm_target(world: World, policy: Policy, segments: list[str], allowed: np.ndarray,
                    share: float = 0.6) -> np.ndarray:
    """A target policy (n, K): `share` on each decision's truly best allowed arm for its segment,
    the rest uniform over its allowed arms (`allowed` (n, K) bool, the policy's arm order)."""
    arm_ids = [a.id for a in policy.arms]
    pi = allowed / allowed.sum(axis=1, keepdims=True) * (1 - share)
    for i, s in enumerate(segments):
        rewards = np.array([world.expected_reward(s, a) if allowed[i, k] else -np.inf for k, a in enumerate(arm_ids)])
        pi[i, int(np.argmax(rewards))] += share
    return pi


def true_value(world: World, segments: list[str], allowed: list[list[str]], target: np.ndarray,
               arm_ids: list[str]) -> float:
    """The exact value of a target policy on logged contexts. `target` is (n, K) over the policy's
    K arms (zero outside each decision's allowed arms)."""
    table = np.array([[world.expected_reward(s, a) for a in arm_ids] for s in world.segments])
    seg_index = {s: i for i, s in enumerate(world.segments)}
    rows = table[[seg_index[s] for s in segments]]
    return float(np.mean(np.sum(target * rows, axis=1)))


# -- a population that tires ----------------------------------------------------------------------

def tiring_policy(vw_args: str, per_contact: float = 0.2) -> Policy:
    """The world policy on one timing (`now`: a send is a contact at once), rewarded for clicks,
    with a fatigue term of `per_contact` for each contact in the last 7 days."""
    return world_policy(name="tiring", logging="engine", vw_args=vw_args, extra={
        "timing": [{"name": "now", "delay_minutes": 0}],
        "reward": {"window": "1h", "default": 0.0, "weights": {"click": 1.0}, "min": -5.0, "max": 1.0,
                   "fatigue": {"per_contact": per_contact, "window": "7d"}}})


def tiring_log(db: str | Path, vw_args: str, seed: int = 0, n: int = 2400, people: int = 40,
               step: float = 3600.0, click: float = 0.4, decay: float = 0.3, per_contact: float = 0.2) -> dict:
    """The real engine and online learner (a step every 100 decisions) on a population that tires:
    a send's click probability is `click` x `decay`^(the person's contacts in the last 7 days), and
    the policy's reward charges `per_contact` for each, so a send pays only to a rested person and
    holding (worth 0) is best for a tired one. One person is asked every `step` seconds. Returns,
    over the last third: the hold share of tired (a contact in the last 7 days) and of rested
    people, how many of each, and the mean shaped reward."""
    policy = tiring_policy(vw_args, per_contact)
    engine, clock = make_engine(db, {policy.name: policy}, id_prefix=f"t{seed}")
    learner = build_learner(engine.store, engine.policies, clock)
    rng = np.random.default_rng(seed)
    sends: dict[int, list[float]] = {}
    holds: dict[str, list[bool]] = {"rested": [], "tired": []}
    rewards = []
    for i in range(n):
        u = int(rng.integers(people))
        now = clock.now()
        recent = sum(1 for at in sends.get(u, ()) if at > now - 7 * 86400)
        r = engine.decide(policy.name, DecideInput(f"p{u}", {"segment": "all"}))
        held, reward = r["action"]["hold"], 0.0
        if not held:
            sends.setdefault(u, []).append(now)
            if rng.random() < click * decay ** recent:
                engine.record_outcome(r["event_id"], OutcomeInput("click", outcome_id="click"))
                reward = 1.0
            reward -= per_contact * recent
        if i >= 2 * n // 3:
            holds["tired" if recent else "rested"].append(held)
            rewards.append(reward)
        clock.advance(step)
        if (i + 1) % 100 == 0:
            learner.step(policy.name)
    engine.store.close()
    return {"hold_tired": float(np.mean(holds["tired"])), "hold_rested": float(np.mean(holds["rested"])),
            "tired": len(holds["tired"]), "rested": len(holds["rested"]), "reward": float(np.mean(rewards))}
