"""Off-policy estimators: the value of a target policy from decisions another policy logged.

Every estimator is a small object with the same three methods (as zr-obp's `obp.ope`):

    rounds(data, pi, q_hat)      per-decision values whose mean is the estimate
    estimate(data, pi, q_hat)    the point estimate
    interval(data, pi, q_hat, alpha, n_boot, seed, refit)   a (1 - alpha) percentile-bootstrap interval

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
          bandits", ICML 2017.
  Replay  Li, Chu, Langford & Wang, "Unbiased offline evaluation of contextual-bandit-based news
          article recommendation algorithms", WSDM 2011.

Intervals are percentile bootstraps over decisions. The DM interval refits the reward model on
every bootstrap sample when given `refit` (most of DM's error is the model's, which resampling
fixed predictions would hide); DR and Switch-DR resample their per-decision values with the
cross-fitted reward model fixed, which is sound because their error is dominated by the
importance-weighted residuals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

Refit = Callable[[np.ndarray], np.ndarray]  # bootstrap sample indices -> q_hat for all decisions


@dataclass
class BanditData:
    """Logged bandit feedback over a catalogue of K arms.

    reward (n,), action (n,) the logged arm's index in 0..K-1, pscore (n,) its logged probability,
    allowed (n, K) bool. `user_tokens[i]` are decision i's context features as (name, value) pairs
    (strings have value 1), `arm_tokens[k]` arm k's; reward models featurize from them.
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    allowed: np.ndarray
    user_tokens: list[list[tuple[str, float]]] | None = None
    arm_tokens: list[list[tuple[str, float]]] | None = None
    logging_pmf: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.reward)

    @property
    def n_arms(self) -> int:
        return self.allowed.shape[1]

    def subset(self, idx: np.ndarray) -> "BanditData":
        return BanditData(self.reward[idx], self.action[idx], self.pscore[idx], self.allowed[idx],
                          [self.user_tokens[i] for i in idx] if self.user_tokens is not None else None,
                          self.arm_tokens,
                          self.logging_pmf[idx] if self.logging_pmf is not None else None)


def weights(data: BanditData, pi: np.ndarray) -> np.ndarray:
    return pi[np.arange(data.n), data.action] / data.pscore


def effective_sample_size(data: BanditData, pi: np.ndarray) -> float:
    """Kish's effective sample size of the importance weights, (sum w)^2 / sum w^2."""
    w = weights(data, pi)
    s2 = float(np.sum(w ** 2))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


def _boot_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentile(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _mean_interval(values: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap of a mean, in chunks so memory stays small."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, step):
        m = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        means[start:start + m] = values[idx].mean(axis=1)
    return _percentile(means, alpha)


@dataclass
class IPS:
    """Inverse propensity scoring:  V = 1/n sum_i w_i r_i.  Unbiased when mu > 0 wherever pi > 0."""

    name: str = "IPS"
    needs_model = False

    def rounds(self, data: BanditData, pi: np.ndarray, q_hat: np.ndarray | None = None) -> np.ndarray:
        return weights(data, pi) * data.reward

    def estimate(self, data, pi, q_hat=None) -> float:
        return float(np.mean(self.rounds(data, pi, q_hat)))

    def interval(self, data, pi, q_hat=None, alpha=0.05, n_boot=1000, seed=0, refit: Refit | None = None):
        return _mean_interval(self.rounds(data, pi, q_hat), alpha, n_boot, seed)


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

    def interval(self, data, pi, q_hat=None, alpha=0.05, n_boot=1000, seed=0, refit: Refit | None = None):
        w = weights(data, pi)
        wr = w * data.reward
        rng = np.random.default_rng(seed)
        vals = np.empty(n_boot)
        step = max(1, 2_000_000 // max(data.n, 1))
        for start in range(0, n_boot, step):
            m = min(step, n_boot - start)
            idx = rng.integers(0, data.n, size=(m, data.n))
            den = w[idx].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                vals[start:start + m] = wr[idx].sum(axis=1) / den
        return _percentile(vals, alpha)


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

    def interval(self, data, pi, q_hat=None, alpha=0.05, n_boot=200, seed=0, refit: Refit | None = None):
        if refit is None:
            return _mean_interval(self.rounds(data, pi, q_hat), alpha, n_boot, seed)
        vals = np.empty(n_boot)
        for b, idx in enumerate(_boot_indices(data.n, n_boot, seed)):
            q_b = refit(idx)
            vals[b] = np.mean(_dm_rounds(pi[idx], q_b[idx]))
        return _percentile(vals, alpha)


@dataclass
class DR:
    """Doubly robust:  V = 1/n sum_i [ sum_a pi(a | x_i) q_hat(x_i, a) + w_i (r_i - q_hat(x_i, a_i)) ].
    Unbiased if either the propensities or the reward model are right; q_hat should be cross-fitted."""

    name: str = "DR"
    needs_model = True

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        idx = np.arange(data.n)
        return _dm_rounds(pi, q_hat) + weights(data, pi) * (data.reward - q_hat[idx, data.action])

    def estimate(self, data, pi, q_hat=None) -> float:
        return float(np.mean(self.rounds(data, pi, q_hat)))

    def interval(self, data, pi, q_hat=None, alpha=0.05, n_boot=1000, seed=0, refit: Refit | None = None):
        return _mean_interval(self.rounds(data, pi, q_hat), alpha, n_boot, seed)


@dataclass
class SwitchDR(DR):
    """Switch-DR: DR where the importance weight is at most `tau`, the reward model alone elsewhere:
        V = 1/n sum_i [ sum_a pi(a | x_i) q_hat(x_i, a) + 1{w_i <= tau} w_i (r_i - q_hat(x_i, a_i)) ].
    Caps the variance of rare, heavily weighted decisions at the price of the model's bias there."""

    name: str = "SwitchDR"
    tau: float = 50.0

    def rounds(self, data, pi, q_hat=None) -> np.ndarray:
        idx = np.arange(data.n)
        w = weights(data, pi)
        return _dm_rounds(pi, q_hat) + (w <= self.tau) * w * (data.reward - q_hat[idx, data.action])


@dataclass
class Replay:
    """Li et al.'s replay by rejection sampling, for (nearly) uniformly random logs.

    The target draws an arm for each logged context; the decision is kept when it equals the logged
    arm. With non-uniform logging (or allowed sets of different sizes) a kept decision is further
    accepted with probability mu_min / mu_i, so that every context is kept with the same
    probability mu_min and the kept rewards are an unbiased sample of the target's; with uniform
    logging over a fixed set of arms this is exactly Li et al.'s replay. The estimate is the mean
    reward of the kept decisions; the interval Wilson's score interval when rewards are 0/1 (a
    bootstrap of a handful of rare clicks would claim [0, 0]), else a bootstrap of that mean.
    """

    name: str = "Replay"
    needs_model = False
    seed: int = 12345

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

    def interval(self, data, pi, q_hat=None, alpha=0.05, n_boot=1000, seed=0, refit: Refit | None = None):
        r = self.rounds(data, pi, q_hat)
        if len(r) and np.all((r == 0) | (r == 1)):
            return wilson(int(r.sum()), len(r), alpha)  # a bootstrap of few, rare clicks says [0, 0]
        return _mean_interval(r, alpha, n_boot, seed)


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson's score interval for a proportion: honest with few or no successes."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


# -- the reward model --------------------------------------------------------------------------

@dataclass
class RewardModel:
    """A scikit-learn ridge regression of the reward on hashed features of (context, arm): the arm's
    own features, the context's, and every context feature crossed with the arm's id, so that a
    table of per-segment arm means is within its reach."""

    alpha: float = 1.0
    n_features: int = 2 ** 18
    _X_all: object = field(default=None, repr=False)

    def design(self, data: BanditData):
        """The hashed (n * K, d) design matrix of every (decision, arm) pair, built once."""
        from sklearn.feature_extraction import FeatureHasher

        if self._X_all is not None and self._X_all.shape[0] == data.n * data.n_arms:
            return self._X_all
        arm_toks = data.arm_tokens or [[(f"arm{k}", 1.0)] for k in range(data.n_arms)]
        users = data.user_tokens or [[] for _ in range(data.n)]

        def pairs():
            for u in users:
                for k, at in enumerate(arm_toks):
                    yield at + [(f"x^{k}^{name}", value) for name, value in u] + [("bias", 1.0)]

        hasher = FeatureHasher(n_features=self.n_features, input_type="pair", alternate_sign=False)
        X = hasher.transform(pairs()).tocsr()
        X = X[:, np.unique(X.indices)]  # only the columns some pair uses: ridge solves stay small
        self._X_all = X.toarray() if X.shape[1] <= 2000 else X.tocsr()
        return self._X_all

    def fit_predict(self, data: BanditData, train: np.ndarray) -> np.ndarray:
        """Fit on the logged (decision, arm, reward) of the decisions `train` (indices, repeats
        allowed); predict q_hat (n, K) for every decision and arm."""
        from sklearn.linear_model import Ridge

        X = self.design(data)
        rows = train * data.n_arms + data.action[train]
        dense = isinstance(X, np.ndarray)
        model = Ridge(alpha=self.alpha, solver="cholesky" if dense else "sparse_cg", fit_intercept=True)
        model.fit(X[rows], data.reward[train])
        return np.asarray(model.predict(X)).reshape(data.n, data.n_arms)

    def cross_fit(self, data: BanditData, folds: int = 2, seed: int = 0) -> np.ndarray:
        """q_hat where each decision's prediction comes from a model that never saw it."""
        rng = np.random.default_rng(seed)
        fold = rng.integers(0, folds, size=data.n)
        q = np.zeros((data.n, data.n_arms))
        for f in range(folds):
            train = np.flatnonzero(fold != f)
            pred = self.fit_predict(data, train)
            q[fold == f] = pred[fold == f]
        return q


# -- running them together -----------------------------------------------------------------------

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
    DM) and reused across target policies.
    """

    def __init__(self, data: BanditData, estimators: Sequence | None = None, reward_model: RewardModel | None = None,
                 alpha: float = 0.05, n_boot: int = 1000, dm_boot: int = 200, seed: int = 0, folds: int = 2):
        self.data = data
        self.estimators = list(estimators) if estimators is not None else default_estimators()
        self.alpha, self.n_boot, self.dm_boot, self.seed = alpha, n_boot, dm_boot, seed
        self.model = reward_model or RewardModel()
        self._q_cross = self._q_full = None
        self._folds = folds
        self._refits: dict[int, np.ndarray] = {}

    @property
    def needs_model(self) -> bool:
        return any(getattr(e, "needs_model", False) for e in self.estimators)

    def q_cross(self) -> np.ndarray:
        if self._q_cross is None:
            self._q_cross = self.model.cross_fit(self.data, self._folds, self.seed)
        return self._q_cross

    def q_full(self) -> np.ndarray:
        if self._q_full is None:
            self._q_full = self.model.fit_predict(self.data, np.arange(self.data.n))
        return self._q_full

    def _refit(self, idx: np.ndarray) -> np.ndarray:
        key = hash(idx[:32].tobytes()) ^ len(idx)
        if key not in self._refits:  # bootstrap samples are shared across target policies
            self._refits[key] = self.model.fit_predict(self.data, idx)
        return self._refits[key]

    def run(self, pi: np.ndarray) -> list[Estimate]:
        ess = effective_sample_size(self.data, pi)
        out = []
        for est in self.estimators:
            if isinstance(est, DM):
                q = self.q_full()
                value = est.estimate(self.data, pi, q)
                lo, hi = est.interval(self.data, pi, q, self.alpha, self.dm_boot, self.seed, refit=self._refit)
                n = self.data.n
            elif getattr(est, "needs_model", False):
                q = self.q_cross()
                value = est.estimate(self.data, pi, q)
                lo, hi = est.interval(self.data, pi, q, self.alpha, self.n_boot, self.seed)
                n = self.data.n
            else:
                value = est.estimate(self.data, pi)
                lo, hi = est.interval(self.data, pi, None, self.alpha, self.n_boot, self.seed)
                n = len(est.rounds(self.data, pi)) if isinstance(est, Replay) else self.data.n
            out.append(Estimate(est.name, value, lo, hi, n, float(n) if isinstance(est, Replay) else ess))
        return out


def estimate_differences(data: BanditData, pi_a: np.ndarray, pi_b: np.ndarray, q_hat: np.ndarray,
                         alpha: float = 0.05, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """DR estimate of V(pi_a) - V(pi_b) with a paired bootstrap interval (the same decisions for
    both, so their shared noise cancels): the lift that promotion criteria test."""
    dr = DR()
    diff = dr.rounds(data, pi_a, q_hat) - dr.rounds(data, pi_b, q_hat)
    lo, hi = _mean_interval(diff, alpha, n_boot, seed)
    return float(np.mean(diff)), lo, hi
