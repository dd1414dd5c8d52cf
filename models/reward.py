"""Reward shaping: turn what happened after a decision into one number, and that number into a
VW cost.

    reward = sum over outcome types t that arrived within the window of  weight[t] * value[t]
             (or `default` when no outcome arrived at all)
           - fatigue_per_contact * (contacts the person had in the fatigue window before it)
             (sends only: holding costs no fatigue)

An outcome type counts once per decision (its largest value): three clicks on one message are one
click. Rewards are clipped to the policy's [min, max] and mapped to costs in [0, 1]
(cost = (max - reward) / (max - min)), so an unsubscribe sits at the worst end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class RewardSpec:
    weights: Mapping[str, float]
    default: float = 0.0
    fatigue_per_contact: float = 0.0
    lo: float = -10.0
    hi: float = 4.0


def shaped_reward(spec: RewardSpec, outcomes: Iterable[tuple[str, float]], *, is_send: bool,
                  recent_contacts: int) -> float:
    best: dict[str, float] = {}
    for kind, value in outcomes:
        best[kind] = max(best.get(kind, value), value)
    if best:
        reward = sum(spec.weights.get(kind, 0.0) * value for kind, value in best.items())
    else:
        reward = spec.default
    if is_send:
        reward -= spec.fatigue_per_contact * recent_contacts
    return float(reward)


def to_cost(spec: RewardSpec, reward: float) -> float:
    clipped = min(max(reward, spec.lo), spec.hi)
    return (spec.hi - clipped) / (spec.hi - spec.lo)
