"""Baseline decision makers, to compare Tactful with in simulation.

Each one scores only the arms a decision's guardrails allowed, in the place where the engine's
VW model would score them, so every baseline sits behind the same guardrails as Tactful. The
shape is the one of `VWPolicy.predict`: given the allowed arm indices (and what the baseline may
know of the moment), return a probability for each allowed arm, summing to 1.

    uniform       uniform random among the allowed arms
    static-best   the one arm with the best population average (with hindsight, from the truth);
                  when a guardrail removes it, the next best in that same fixed order
    thompson      per-segment Thompson sampling on clicks (Beta-Bernoulli per segment and arm,
                  updated when a decision's reward window closes); holds only when nothing
                  else is allowed, since holding never earns a click
    oracle        knows the true expected shaped reward of every allowed arm for this person at
                  this moment (fatigue and hazards included) and picks the best; myopic: it does
                  not plan for the contacts it will want to make later

Deterministic baselines put probability 1 on their choice: their logs are not meant for
off-policy evaluation. Plain numpy, no Flask, no store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np


@dataclass
class Ask:
    """What a baseline may know about one decision."""
    segment: int
    # the true expected shaped reward of each of the given arms, now: for the oracle only
    expected: Callable[[Sequence[int]], np.ndarray] | None = None


@dataclass
class Feedback:
    """A decision whose reward window closed: its segment, arm, and whether a click counted."""
    segment: int
    arm: int
    clicked: bool


def _one_hot(n: int, pos: int) -> np.ndarray:
    pmf = np.zeros(n)
    pmf[pos] = 1.0
    return pmf


class Uniform:
    name = "uniform"

    def pmf(self, allowed: Sequence[int], ask: Ask) -> np.ndarray:
        return np.full(len(allowed), 1.0 / len(allowed))

    def learn(self, feedback: Iterable[Feedback]) -> None:
        pass


class StaticBest:
    name = "static-best"

    def __init__(self, ranking: Sequence[int]):
        self.rank = {arm: r for r, arm in enumerate(ranking)}

    def pmf(self, allowed: Sequence[int], ask: Ask) -> np.ndarray:
        worst = len(self.rank)
        pos = min(range(len(allowed)), key=lambda i: self.rank.get(allowed[i], worst))
        return _one_hot(len(allowed), pos)

    def learn(self, feedback: Iterable[Feedback]) -> None:
        pass


@dataclass
class SegmentThompson:
    n_segments: int
    n_arms: int
    is_hold: np.ndarray
    rng: np.random.Generator
    name: str = "thompson"
    clicks: np.ndarray = field(init=False)
    trials: np.ndarray = field(init=False)

    def __post_init__(self):
        self.clicks = np.zeros((self.n_segments, self.n_arms))
        self.trials = np.zeros((self.n_segments, self.n_arms))

    def pmf(self, allowed: Sequence[int], ask: Ask) -> np.ndarray:
        idx = np.asarray(allowed)
        sends = ~self.is_hold[idx]
        if not sends.any():
            return np.full(len(allowed), 1.0 / len(allowed))
        a = 1.0 + self.clicks[ask.segment, idx]
        b = 1.0 + self.trials[ask.segment, idx] - self.clicks[ask.segment, idx]
        draw = np.where(sends, self.rng.beta(a, b), -1.0)
        return _one_hot(len(allowed), int(np.argmax(draw)))

    def learn(self, feedback: Iterable[Feedback]) -> None:
        for f in feedback:
            self.trials[f.segment, f.arm] += 1
            self.clicks[f.segment, f.arm] += f.clicked


class Oracle:
    name = "oracle"

    def pmf(self, allowed: Sequence[int], ask: Ask) -> np.ndarray:
        values = ask.expected(allowed)
        return _one_hot(len(allowed), int(np.argmax(values)))

    def learn(self, feedback: Iterable[Feedback]) -> None:
        pass
