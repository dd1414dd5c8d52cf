"""Off-policy estimators: the value of a target policy from decisions another policy logged.

Every estimator is a small object with the same three methods (as zr-obp's `obp.ope`):

    rounds(data, pi, q_hat)      per-decision values whose mean is the estimate
    estimate(data, pi, q_hat)    the point estimate
    interval(data, pi, q_hat, alpha, model_variance)   a (1 - alpha) confidence interval

Notation: n logged decisions; K arms; for decision i the logged arm a_i with the logged
probability mu_i = mu(a_i | x_i), the reward r_i; the target policy's distribution pi(. | x_i) over
the same allowed arms (an (n, K) array, zero outside the allowed arms); the importance weight
w_i = pi(a_i | x_i) / mu_i; a reward model q_hat(x, a) (an (n, K) array).

References:
  IPS     Horvitz & Thompson (1952); Precup, Sutton & Singh (2000).
  SNIPS   Swaminathan & Joachims, "The self-normalized estimator for counterfactual learning", NeurIPS 2015.
  DM      Beygelzimer & Langford, "The offset tree for learning with partial labels", KDD 2009.
  DR      Dudik, Langford & Li, "Doubly robust policy evaluation and learning", ICML 2011.
  SwitchDR  Wang, Agarwal & Dudik, "Optimal and adaptive off-policy evaluation in contextual
          bandits", ICML 2017; the threshold chosen by estimated MSE with a worst-case
          bound on the bias as in that paper (and, from the data, Su, Dimakopoulou, Krishnamurthy &
          Dudik, "Doubly robust off-policy evaluation with shrinkage", ICML 2020).
  Replay  Li, Chu, Langford & Wang, "Unbiased offline evaluation of contextual-bandit-based news
          article recommendation algorithms", WSDM 2011.

Intervals (docs/ope.md has the coverage study behind these choices):
  IPS, SNIPS, DR, the paired DR lift: the estimate +- t * se, se from the per-decision values
          (SNIPS linearized), and Student's t with Satterthwaite's degrees of freedom of the
          importance weights, (sum w^2)^2 / sum w^4: how many decisions actually carry the
          variance. When a learned, near-greedy logger leaves a handful of decisions with weights
          near 100, that is about ten, and a normal (or percentile-bootstrap) interval is too
          narrow: its variance estimate rests on those few. This is the small-sample correction
          of Satterthwaite (1946) as used for heteroskedastic regression by Bell & McCaffrey
          (2002) and Imbens & Kolesar, "Robust standard errors in small samples" (REStat 2016),
          with the weights in the role of leverage. With many comparable weights it is the
          normal interval.
  DM      the reward model's own estimation error: DM is linear in the logged rewards through the
          ridge fit, so its variance is sum_j h_j^2 e_j^2 (h_j the influence of decision j's reward
          on DM, e_j its cross-fitted residual, so a cell of a few unlucky zeros is not taken for
          a certain zero), plus the spread of the per-decision values; t with Satterthwaite's
          degrees of freedom of the h_j. It assumes the model is right: on adaptively collected
          logs the model is biased where the logger stopped exploring (Nie et al., AISTATS 2018)
          and no interval around DM can know by how much.
  SwitchDR  bias-aware: the estimate +- (t * se + B), B a bound on the bias switching to the
          model can cause (the target's probability where it switches times the reward range), so
          switching never buys a narrower interval than that bound allows.
  Replay  Wilson's score interval for 0/1 rewards, else a percentile bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.ope.data import BanditData, weights
from models.ope.intervals import bootstrap_mean_interval, t_interval, t_quantile, welch_df, wilson

# the reward model's uncertainty: for a sensitivity G (n, K) of an estimate to q_hat, the variance of
# sum G * q_hat that comes from fitting q_hat, and its degrees of freedom
ModelVariance = Callable[[np.ndarray], tuple[float, float]]


class _WeightedMean:
    """An estimator whose value is the mean of its per-decision rounds, each carrying the
    decision's importance weight: Student's t interval with the weights' degrees of freedom."""

    def estimate(self, data, pi, q_hat=None) -> float:
        return float(np.mean(self.rounds(data, pi, q_hat)))

    def interval(self, data, pi, q_hat=None, alpha=0.05, model_variance: ModelVariance | None = None):
        r = self.rounds(data, pi, q_hat)
        return t_interval(float(np.mean(r)) if len(r) else float("nan"), r, weights(data, pi), alpha)


@dataclass
class IPS(_WeightedMean):
    """Inverse propensity scoring:  V = 1/n sum_i w_i r_i.  Unbiased when mu > 0 wherever pi > 0."""

    name: str = "IPS"
    needs_model = False

    def rounds(self, data: BanditData, pi: np.ndarray, q_hat: np.ndarray | None = None) -> np.ndarray:
        return weights(data, pi) * data.reward


@dataclass
class SNIPS:
    """Self-normalized IPS:  V = sum_i w_i r_i / sum_i w_i.  Slightly biased, often much less variable."""

    name: str = "SNIPS"
    needs_model = False

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        w = weights(data, pi)
        return w * data.reward / np.mean(w)

    def estimate(self, data, pi, q_hat=None) -> float:
        w = weights(data, pi)
        return float(np.sum(w * data.reward) / np.sum(w)) if np.sum(w) > 0 else float("nan")

    def interval(self, data, pi, q_hat=None, alpha=0.05, model_variance: ModelVariance | None = None):
        w = weights(data, pi)
        if np.sum(w) <= 0:
            return float("nan"), float("nan")
        v = self.estimate(data, pi)
        # the ratio's linearization: its per-decision influence, whose mean is zero
        return t_interval(v, w * (data.reward - v) / np.mean(w), w, alpha)


def _dm_rounds(pi: np.ndarray, q_hat: np.ndarray) -> np.ndarray:
    return np.sum(pi * q_hat, axis=1)


@dataclass
class DM:
    """Direct method:  V = 1/n sum_i sum_a pi(a | x_i) q_hat(x_i, a).  As good as the reward model."""

    name: str = "DM"
    needs_model = True

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        return _dm_rounds(pi, q_hat)

    def estimate(self, data, pi, q_hat=None) -> float:
        return float(np.mean(self.rounds(data, pi, q_hat)))

    def interval(self, data, pi, q_hat=None, alpha=0.05, model_variance: ModelVariance | None = None):
        """The spread of the per-decision values, plus the reward model's estimation error when
        `model_variance` says what it is (OffPolicyEvaluation does); without it the model is
        taken as exact, which is optimistic."""
        r = self.rounds(data, pi, q_hat)
        n = len(r)
        if n < 2:
            return float("nan"), float("nan")
        parts = [(float(np.var(r, ddof=1) / n), float(n - 1))]
        if model_variance is not None:
            parts.append(model_variance(pi / n))
        var = sum(v for v, _ in parts)
        half = t_quantile(alpha, welch_df(parts)) * np.sqrt(var)
        v = float(np.mean(r))
        return v - half, v + half


@dataclass
class DR(_WeightedMean):
    """Doubly robust:  V = 1/n sum_i [ sum_a pi(a | x_i) q_hat(x_i, a) + w_i (r_i - q_hat(x_i, a_i)) ].
    Unbiased if either the propensities or the reward model are right; q_hat should be cross-fitted."""

    name: str = "DR"
    needs_model = True

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        idx = np.arange(data.n)
        return _dm_rounds(pi, q_hat) + weights(data, pi) * (data.reward - q_hat[idx, data.action])


TAUS = (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, float("inf"))


@dataclass
class SwitchDR(DR):
    """Switch-DR: DR where the importance weight is at most `tau`, the reward model alone elsewhere:
        V = 1/n sum_i [ sum_a pi(a | x_i) q_hat(x_i, a) + 1{w_i <= tau} w_i (r_i - q_hat(x_i, a_i)) ].
    Caps the variance of rare, heavily weighted decisions at the price of the model's bias there.

    That bias is at most B(tau) = 1/n sum_i sum_a pi(a | x_i) 1{pi(a | x_i) / mu(a | x_i) > tau}
    max(q_hat - lo, hi - q_hat): the target's probability on the switched (decision, arm) pairs
    times the farthest the true mean reward can be from the model within the reward bounds
    [lo, hi] (the policy's; the observed range when the data has none). With `tau=None` (the
    default) tau is the one of `taus` (infinity included: plain DR) that minimizes the estimated
    MSE se(tau)^2 + B(tau)^2, Wang, Agarwal & Dudik's own rule. The interval is bias-aware,
    estimate +- (t * se + B(tau)), so switching buys a narrower interval only when the target
    puts little probability where the weights explode.

    (A bias bound from the data instead, the switched decisions' dropped corrections with an
    upper confidence bound, as in Su et al. 2020 and obp's tuning, never lets switching pay: the
    bound's own noise is the variance switching removes. docs/ope.md.)

    B(tau) reads the logging policy's probability of every allowed arm (`data.logging_pmf`);
    without it, the switched pairs are estimated from the logged ones by importance weighting."""

    name: str = "SwitchDR"
    tau: float | None = None
    taus: tuple[float, ...] = TAUS

    def _parts(self, data, pi, q_hat, tau):
        idx = np.arange(data.n)
        w = weights(data, pi)
        keep = w <= tau
        correction = w * (data.reward - q_hat[idx, data.action])
        return _dm_rounds(pi, q_hat) + keep * correction, np.where(keep, w, 0.0)

    @staticmethod
    def bias_bound(data: BanditData, pi: np.ndarray, q_hat: np.ndarray, tau: float) -> float:
        if not np.isfinite(tau):
            return 0.0
        lo, hi = data.reward_bounds if data.reward_bounds is not None else (np.min(data.reward), np.max(data.reward))
        gap = np.maximum(np.abs(q_hat - lo), np.abs(hi - q_hat))
        if data.logging_pmf is not None:
            mu = data.logging_pmf
            with np.errstate(divide="ignore", invalid="ignore"):
                switched = (pi > 0) & ((mu <= 0) | (pi > tau * mu))
            return float(np.sum(pi * switched * gap) / data.n)
        idx = np.arange(data.n)
        w = weights(data, pi)
        return float(np.mean((w > tau) * w * gap[idx, data.action]))

    def chosen_tau(self, data, pi, q_hat) -> float:
        if self.tau is not None:
            return float(self.tau)
        best = None
        for tau in self.taus:
            r, _ = self._parts(data, pi, q_hat, tau)
            var = float(np.var(r, ddof=1) / data.n) if data.n > 1 else 0.0
            mse = var + self.bias_bound(data, pi, q_hat, tau) ** 2
            if best is None or mse < best[0]:
                best = (mse, tau)
        return float(best[1])

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        return self._parts(data, pi, q_hat, self.chosen_tau(data, pi, q_hat))[0]

    def interval(self, data, pi, q_hat=None, alpha=0.05, model_variance: ModelVariance | None = None):
        tau = self.chosen_tau(data, pi, q_hat)
        r, kept_w = self._parts(data, pi, q_hat, tau)
        v = float(np.mean(r)) if len(r) else float("nan")
        return t_interval(v, r, kept_w, alpha, bias_bound=self.bias_bound(data, pi, q_hat, tau))


@dataclass
class Replay:
    """Li et al.'s replay by rejection sampling, for (nearly) uniformly random logs.

    The target draws an arm for each logged context; the decision is kept when it equals the logged
    arm. With non-uniform logging (or allowed sets of different sizes) a kept decision is further
    accepted with probability mu_min / mu_i, so that every context is kept with the same
    probability mu_min and the kept rewards are an unbiased sample of the target's; with uniform
    logging over a fixed set of arms this is exactly Li et al.'s replay. The estimate is the mean
    reward of the kept decisions; the interval Wilson's score interval when rewards are 0/1 (a
    bootstrap of a handful of rare clicks would claim [0, 0]), else a percentile bootstrap of that
    mean with `n_boot` resamples drawn from `bootstrap_seed` (`seed` draws the target's arms).
    """

    name: str = "Replay"
    needs_model = False
    seed: int = 12345
    n_boot: int = 1000
    bootstrap_seed: int = 0

    def kept(self, data: BanditData, pi: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        cdf = np.cumsum(pi, axis=1)
        u = rng.random(data.n) * cdf[:, -1]
        drawn = np.minimum((cdf < u[:, None]).sum(axis=1), data.n_arms - 1)
        mu_min = float(np.min(data.pscore))
        accept = rng.random(data.n) < mu_min / data.pscore
        return (drawn == data.action) & accept

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        return data.reward[self.kept(data, pi)]

    def estimate(self, data, pi, q_hat=None) -> float:
        r = self.rounds(data, pi, q_hat)
        return float(np.mean(r)) if len(r) else float("nan")

    def interval(self, data, pi, q_hat=None, alpha=0.05, model_variance: ModelVariance | None = None):
        r = self.rounds(data, pi, q_hat)
        if len(r) and np.all((r == 0) | (r == 1)):
            return wilson(int(r.sum()), len(r), alpha)  # a bootstrap of few, rare clicks says [0, 0]
        return bootstrap_mean_interval(r, alpha, self.n_boot, self.bootstrap_seed)
