"""Logged bandit feedback as arrays, and the importance weights of a target policy on it.

Notation (as in every module of models/ope): n logged decisions; K arms; for decision i the logged
arm a_i with the logged probability mu_i = mu(a_i | x_i), the reward r_i; the target policy's
distribution pi(. | x_i) over the same allowed arms (an (n, K) array, zero outside the allowed
arms); the importance weight w_i = pi(a_i | x_i) / mu_i.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BanditData:
    """Logged bandit feedback over a catalogue of K arms.

    reward (n,), action (n,) the logged arm's index in 0..K-1, pscore (n,) its logged probability,
    allowed (n, K) bool. `user_tokens[i]` are decision i's context features as (name, value) pairs
    (strings have value 1), `arm_tokens[k]` arm k's; reward models featurize from them.
    `logging_pmf` (n, K) is the logging policy's probability of every arm, `reward_bounds` the
    range rewards are confined to (the policy's shaped-reward bounds).
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    allowed: np.ndarray
    user_tokens: list[list[tuple[str, float]]] | None = None
    arm_tokens: list[list[tuple[str, float]]] | None = None
    logging_pmf: np.ndarray | None = None
    reward_bounds: tuple[float, float] | None = None  # the smallest and largest reward possible

    @property
    def n(self) -> int:
        return len(self.reward)

    @property
    def n_arms(self) -> int:
        return self.allowed.shape[1]


def weights(data: BanditData, pi: np.ndarray) -> np.ndarray:
    return pi[np.arange(data.n), data.action] / data.pscore


def effective_sample_size(data: BanditData, pi: np.ndarray) -> float:
    """Kish's effective sample size of the importance weights, (sum w)^2 / sum w^2."""
    w = weights(data, pi)
    s2 = float(np.sum(w ** 2))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0
