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

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# the reward model's uncertainty: for a sensitivity G (n, K) of an estimate to q_hat, the variance of
# sum G * q_hat that comes from fitting q_hat, and its degrees of freedom
ModelVariance = Callable[[np.ndarray], tuple[float, float]]


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


def _percentile(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.nanquantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def satterthwaite_df(coef: np.ndarray) -> float:
    """Degrees of freedom of a variance estimate sum_i c_i^2 e_i^2 under equal-variance errors,
    (sum c^2)^2 / sum c^4 (Satterthwaite 1946): the number of decisions that carry the variance.
    n - 1 when every decision weighs the same; about k when k decisions of equal weight dominate."""
    c2 = np.asarray(coef, dtype=float) ** 2
    n = len(c2)
    s4 = float(np.sum(c2 ** 2))
    if n < 2 or s4 <= 0:
        return float(max(n - 1, 1))
    return float(min(max(np.sum(c2) ** 2 / s4, 1.0), n - 1))


def welch_df(parts: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance estimates
    [(variance, df), ...]."""
    total = sum(v for v, _ in parts)
    den = sum(v * v / df for v, df in parts if v > 0)
    return float(total * total / den) if den > 0 else float("inf")


def t_quantile(alpha: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, df)) if np.isfinite(df) else float(stats.norm.ppf(1 - alpha / 2))


def t_interval(center: float, values: np.ndarray, coef: np.ndarray, alpha: float,
               bias_bound: float = 0.0) -> tuple[float, float]:
    """center +- (t * se + bias_bound): se from the per-decision `values` (whose mean is the
    estimate, or its linearization), t with the Satterthwaite degrees of freedom of `coef` (the
    weight each decision's reward has in the estimate)."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    se = float(np.std(values, ddof=1) / np.sqrt(n))
    half = t_quantile(alpha, satterthwaite_df(coef)) * se + bias_bound
    return float(center - half), float(center + half)


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
        return _mean_interval(r, alpha, self.n_boot, self.bootstrap_seed)


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

    def influence(self, data: BanditData, train: np.ndarray, G: np.ndarray) -> np.ndarray:
        """For the model fitted on the decisions `train` (distinct indices): h (len(train),), the
        derivative of sum_{i,a} G[i, a] q_hat(x_i, a) with respect to each training reward. A
        ridge fit is linear in the rewards, so that sum is sum_j h_j r_j + a constant, and its
        variance from the rewards' noise is sum_j h_j^2 Var(r_j).

        Ridge with an unpenalized intercept centres the design: with Xc = X_train - xbar,
        beta = (Xc'Xc + alpha I)^-1 Xc' r and q = (X - xbar) beta + mean(r), so
        h = Xc (Xc'Xc + alpha I)^-1 (X'G - sum(G) xbar) + sum(G) / m."""
        X = self.design(data)
        rows = train * data.n_arms + data.action[train]
        Xt = X[rows]
        m = len(train)
        total = float(np.sum(G))
        xbar = np.asarray(Xt.mean(axis=0)).ravel()
        u = np.asarray(X.T @ G.reshape(-1)).ravel() - total * xbar
        if isinstance(X, np.ndarray):
            Xc = Xt - xbar
            v = np.linalg.solve(Xc.T @ Xc + self.alpha * np.eye(X.shape[1]), u)
            return Xc @ v + total / m
        from scipy.sparse.linalg import LinearOperator, cg

        def matvec(z):
            z = np.ravel(z)
            return Xt.T @ (Xt @ z) - m * xbar * float(xbar @ z) + self.alpha * z

        op = LinearOperator((X.shape[1], X.shape[1]), matvec=matvec, dtype=float)
        v, info = cg(op, u, rtol=1e-8, maxiter=10 * X.shape[1])
        return np.asarray(Xt @ v).ravel() - float(xbar @ v) + total / m

    @staticmethod
    def folds(n: int, folds: int = 2, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, folds, size=n)

    def cross_fit(self, data: BanditData, folds: int = 2, seed: int = 0) -> np.ndarray:
        """q_hat where each decision's prediction comes from a model that never saw it."""
        fold = self.folds(data.n, folds, seed)
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
