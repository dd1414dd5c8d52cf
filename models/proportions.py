"""Intervals for a proportion: Wilson's score interval (the off-policy estimators' for 0/1 rewards,
models/ope/) and Clopper and Pearson's exact one (the circuit breaker's,
service/learning/breaker.py). Only scipy.special, not scipy.stats: the learner and the web
workers load this."""
from __future__ import annotations

import math
from statistics import NormalDist

from scipy.special import betaincinv


def wilson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson's score interval for a proportion: honest with few or no successes. Two-sided at
    level 1 - alpha; each bound alone is a one-sided bound at level 1 - alpha / 2."""
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def clopper_pearson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper and Pearson's exact interval for a proportion: never below its level, however few
    the successes (Wilson's lower bound is too high for a handful of rare events, so a breaker
    judged by it trips on noise: tests/test_breaker.py). Two-sided at level 1 - alpha; each bound
    alone is a one-sided bound at level 1 - alpha / 2."""
    lower = float(betaincinv(successes, n - successes + 1, alpha / 2)) if successes > 0 else 0.0
    upper = float(betaincinv(successes + 1, n - successes, 1 - alpha / 2)) if successes < n else 1.0
    return lower, upper
