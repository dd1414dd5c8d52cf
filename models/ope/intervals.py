"""Confidence intervals the estimators share: Student's t with Satterthwaite's degrees of freedom,
the percentile bootstrap of a mean, Wilson's score interval (docs/ope.md has the coverage study
behind these choices)."""
from __future__ import annotations

from statistics import NormalDist
from typing import Sequence

import numpy as np
from scipy import stats

from models.proportions import wilson  # noqa: F401 -- the estimators' import place


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


def bootstrap_mean_interval(values: np.ndarray, alpha: float, n_boot: int, seed: int) -> tuple[float, float]:
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


