"""The decision makers a simulation compares, and how each takes the engine's place of choice.

    tactful         the policy as written: the real engine and the real online learner
    fatigue-blind   the same, with the reward reduced to clicks (no fatigue term, no penalties)
    no-breaker      the same, without the policy's `[safety]` table: no circuit breaker
    thompson, static-best, uniform, oracle   baselines (models/baselines.py), plugged in where the
                    engine's VW model scores the allowed arms: same engine, same guardrails, same
                    decision log

Every one of them first serves the warm-up as business as usual (uniform random among the
allowed arms), then decides itself (`Phase`). The pieces here stand where the engine's model
cache stands (`get(policy) -> (version, scorer)`); the in-process target (targets.py) assembles
them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from models.baselines import Ask, Oracle, SegmentThompson, StaticBest, Uniform
from service.policy import Policy, parse_policy
from service.simulation.errors import SimulationError
from service.simulation.world import World

MAKERS = ("tactful", "fatigue-blind", "no-breaker", "thompson", "static-best", "uniform", "oracle")
LEARNERS = ("tactful", "fatigue-blind", "no-breaker")  # the makers that decide with the policy's own VW model


def check_maker(name: str) -> None:
    if name not in MAKERS:
        raise _unknown(name)


def _unknown(name: str) -> SimulationError:
    return SimulationError(f"unknown decision maker {name!r} (known: {', '.join(MAKERS)})")


def fatigue_blind(data: dict, path: str) -> Policy:
    """The same policy, rewarded for clicks only: no fatigue term, no penalty for leaving."""
    d = json.loads(json.dumps(data, default=str))
    reward = dict(d.get("reward", {}))
    reward["weights"] = {k: (1.0 if k == "click" else 0.0) for k in reward.get("weights", {"click": 1.0})}
    reward["fatigue"] = {"per_contact": 0.0}
    reward["default"] = 0.0
    reward["min"], reward["max"] = 0.0, 1.0
    d["reward"] = reward
    return parse_policy(d, f"{path} (fatigue-blind)", default_name=Path(path).stem)


def without_breaker(data: dict, path: str) -> Policy:
    """The same policy without its `[safety]` table: no circuit breaker watches it."""
    d = json.loads(json.dumps(data, default=str))
    d.pop("safety", None)
    return parse_policy(d, f"{path} (no breaker)", default_name=Path(path).stem)


TWINS = {"fatigue-blind": fatigue_blind, "no-breaker": without_breaker}  # the policy, edited


def maker_policy(name: str, world: World) -> Policy:
    """The policy a decision maker runs: the world's own, or its twin's edit of it."""
    twin = TWINS.get(name)
    return twin(world.policy_data, world.policy.path) if twin else world.policy


def make_baseline(name: str, world: World, seed: int):
    """The baseline named `name` (models/baselines.py), for this world and seed."""
    if name == "uniform":
        return Uniform()
    if name == "static-best":
        return StaticBest(world.static_ranking)
    if name == "thompson":
        return SegmentThompson(len(world.scenario.spec.segments), len(world.policy.arms), world.truth.is_hold,
                               np.random.default_rng(seed + 2))
    if name == "oracle":
        return Oracle()
    raise _unknown(name)


class Scorer:
    """A baseline in the place of the engine's VW model: `predict(shared, allowed) -> pmf`."""

    def __init__(self, maker):
        self.maker = maker
        self.ask: Ask | None = None

    def predict(self, shared: str, allowed: Sequence[int]) -> np.ndarray:
        return self.maker.pmf(list(allowed), self.ask)


class ScorerCache:
    """Stands where the engine's ModelCache stands and always hands out the baseline."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def get(self, policy: str):
        return None, self.scorer


class Phase:
    """Business as usual (uniform random among the allowed arms) during the warm-up, then the
    decision maker: the same engine, store and learner throughout."""

    def __init__(self, warm, main):
        self.warm, self.main, self.warming = warm, main, False

    def get(self, policy: str):
        return (self.warm if self.warming else self.main).get(policy)


class AfterLearning:
    """The engine's ModelCache, asked for the active version only after a learning step rather
    than on every decision: a new version is served from the next decision on, deterministically
    (in virtual time a wall-clock refresh interval would be hours, and would vary run to run)."""

    def __init__(self, cache):
        self.cache = cache
        self.stale = True
        self.current: dict[str, tuple] = {}

    def get(self, policy: str):
        if self.stale or policy not in self.current:
            self.current[policy] = self.cache.get(policy)
            self.stale = False
        return self.current[policy]
