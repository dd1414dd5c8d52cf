"""Running estimators together: every estimator on one log for one or more target policies, with
the reward model fitted once, and the paired DR estimate of the difference of two targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.ope.data import BanditData, effective_sample_size, weights
from models.ope.estimators import DM, DR, IPS, SNIPS, Replay, SwitchDR
from models.ope.intervals import satterthwaite_df, t_interval
from models.ope.reward_model import RewardModel


@dataclass
class Estimate:
    estimator: str
    value: float
    lo: float
    hi: float
    n: int
    ess: float

    def as_dict(self) -> dict:
        return {"estimator": self.estimator, "value": self.value, "lo": self.lo, "hi": self.hi,
                "n": self.n, "ess": self.ess}


def default_estimators() -> list:
    return [IPS(), SNIPS(), DM(), DR(), SwitchDR()]


class OffPolicyEvaluation:
    """Estimate one or more target policies on one log with a set of estimators.

    The reward model is fitted once (cross-fitted for DR and Switch-DR, fitted on all decisions for
    DM) and reused across target policies. DM's interval adds the reward model's own estimation
    error (`model_variance`): the influence of every logged reward on DM through the ridge fit,
    times its cross-fitted residual.
    """

    def __init__(self, data: BanditData, estimators: Sequence | None = None, reward_model: RewardModel | None = None,
                 alpha: float = 0.05, seed: int = 0, folds: int = 2):
        self.data = data
        self.estimators = list(estimators) if estimators is not None else default_estimators()
        self.alpha, self.seed = alpha, seed
        self.model = reward_model or RewardModel()
        self._q_cross = self._q_full = None
        self._folds = folds

    def q_cross(self) -> np.ndarray:
        if self._q_cross is None:
            self._q_cross = self.model.cross_fit(self.data, self._folds, self.seed)
        return self._q_cross

    def q_full(self) -> np.ndarray:
        if self._q_full is None:
            self._q_full = self.model.fit_predict(self.data, np.arange(self.data.n))
        return self._q_full

    def model_variance(self, G: np.ndarray) -> tuple[float, float]:
        """Variance of sum G * q_full from fitting q_full, and its degrees of freedom: sum_j h_j^2
        e_j^2 with e_j decision j's cross-fitted residual (a model that saw j would call a cell
        of a few zeros certain), df Satterthwaite's of the h_j."""
        data = self.data
        h = self.model.influence(data, np.arange(data.n), G)
        e = data.reward - self.q_cross()[np.arange(data.n), data.action]
        return float(np.sum(h ** 2 * e ** 2)), satterthwaite_df(h)

    def run(self, pi: np.ndarray) -> list[Estimate]:
        ess = effective_sample_size(self.data, pi)
        out = []
        for est in self.estimators:
            if isinstance(est, DM):
                q = self.q_full()
                value = est.estimate(self.data, pi, q)
                lo, hi = est.interval(self.data, pi, q, self.alpha, model_variance=self.model_variance)
                n = self.data.n
            elif getattr(est, "needs_model", False):
                q = self.q_cross()
                value = est.estimate(self.data, pi, q)
                lo, hi = est.interval(self.data, pi, q, self.alpha)
                n = self.data.n
            else:
                value = est.estimate(self.data, pi)
                lo, hi = est.interval(self.data, pi, None, self.alpha)
                n = len(est.rounds(self.data, pi)) if isinstance(est, Replay) else self.data.n
            out.append(Estimate(est.name, value, lo, hi, n, float(n) if isinstance(est, Replay) else ess))
        return out


def estimate_differences(data: BanditData, pi_a: np.ndarray, pi_b: np.ndarray, q_hat: np.ndarray,
                         alpha: float = 0.05) -> tuple[float, float, float]:
    """DR estimate of V(pi_a) - V(pi_b), paired: the per-decision differences of the same decisions,
    so noise common to both cancels; the lift that promotion criteria test. Its interval is DR's:
    t with the Satterthwaite degrees of freedom of the weights' differences."""
    dr = DR()
    diff = dr.rounds(data, pi_a, q_hat) - dr.rounds(data, pi_b, q_hat)
    v = float(np.mean(diff))
    lo, hi = t_interval(v, diff, weights(data, pi_a) - weights(data, pi_b), alpha)
    return v, lo, hi
