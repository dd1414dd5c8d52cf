"""`tactful evaluate`: the estimated value of a candidate policy against the active version and
baselines, from a policy's decision log, with intervals and effective sample sizes; the DR lift
of the candidate over the reference and the rise of its unsubscribe and complaint rates.

The log becomes BanditData here (`bandit_data`); the targets it is scored against are in
service/offline/target_policies.py, the report in service/offline/report.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from models.featurize import HISTORY_FEATURES
from models.ope import (SNIPS, BanditData, OffPolicyEvaluation, RewardModel, default_estimators,
                        estimate_differences, weights)
from service.offline.errors import not_enough_data, per_request_actions
from service.offline.export import LoggedDecision, final_decisions
from service.offline.target_policies import resolve_target
from service.policy import Policy
from service.store import Store
from service.times import to_rfc3339

UNSUBSCRIBE_TYPES = ("unsubscribe",)
COMPLAINT_TYPES = ("complaint",)


def _tokens(values: dict) -> list[tuple[str, float]]:
    out = []
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out.append((f"{k}={v}", 1.0))
        elif isinstance(v, (int, float)):
            out.append((k, math.copysign(math.log1p(abs(v)), v)))
        else:
            out.append((f"{k}={v}", 1.0))
    return out


def arm_tokens(policy: Policy) -> list[list[tuple[str, float]]]:
    toks = []
    for arm in policy.arms:
        if arm.hold:
            toks.append([("arm=hold", 1.0)])
        else:
            c = arm.content
            toks.append([(f"arm={arm.id}", 1.0), (f"content={c.id}", 1.0), (f"channel={arm.channel}", 1.0),
                         (f"timing={arm.timing.name}", 1.0)] + [(f"c:{k}", float(v)) for k, v in c.features.items()])
    return toks


def bandit_data(policy: Policy, rows: Sequence[LoggedDecision], reward: Callable[[LoggedDecision], float] | None = None
                ) -> BanditData:
    n, K = len(rows), len(policy.arms)
    allowed = np.zeros((n, K), dtype=bool)
    logging = np.zeros((n, K))
    action = np.empty(n, dtype=int)
    for i, row in enumerate(rows):
        d = row.decision
        idx = [policy.arm_index[a] for a in d.allowed]
        allowed[i, idx] = True
        logging[i, idx] = d.probabilities
        action[i] = policy.arm_index[d.arm]
    r = np.array([reward(row) if reward else row.reward for row in rows], dtype=float)
    pscore = np.array([row.decision.probability for row in rows], dtype=float)
    users = [_tokens(row.decision.context) + _tokens({k: row.decision.history[k] for k in HISTORY_FEATURES
                                                      if k in row.decision.history}) for row in rows]
    bounds = policy.spec.reward.bounds if reward is None else None  # an indicator's: observed range
    return BanditData(r, action, pscore, allowed, users, arm_tokens(policy), logging, bounds)


def outcome_indicator(types: Sequence[str]) -> Callable[[LoggedDecision], float]:
    return lambda row: float(any(o["type"] in types for o in row.outcomes))


# -- the evaluation -------------------------------------------------------------------------------

@dataclass
class Evaluation:
    policy: str
    n: int
    since: str | None
    until: str | None
    candidate: str
    candidate_version: int | None
    reference: str
    rows: list[dict] = field(default_factory=list)      # one per (target, estimator)
    lift: dict = field(default_factory=dict)            # DR: candidate - reference
    unsubscribe: dict = field(default_factory=dict)     # estimated unsubscribe rates and the rise
    complaint: dict = field(default_factory=dict)
    logged_mean_reward: float = float("nan")

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    def table(self) -> str:
        head = f"{'target':<18} {'estimator':<9} {'value':>9} {'95% interval':>22} {'n':>7} {'ESS':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['target']:<18} {r['estimator']:<9} {r['value']:>9.4f} "
                         f"[{r['lo']:>9.4f}, {r['hi']:>9.4f}] {r['n']:>7d} {r['ess']:>9.1f}")
        if self.lift:
            lines.append("")
            lines.append(f"lift of {self.candidate} over {self.reference} (DR, paired): "
                         f"{self.lift['value']:+.4f} [{self.lift['lo']:+.4f}, {self.lift['hi']:+.4f}]")
        if self.unsubscribe:
            u = self.unsubscribe
            lines.append(f"unsubscribe rate (SNIPS): {self.candidate} {u['candidate']:.4f}, "
                         f"{self.reference} {u['reference']:.4f}, rise {u['rise']:+.4f} "
                         f"(upper bound {u['rise_hi']:+.4f})")
        return "\n".join(lines)


def _rate_rise(data: BanditData, pi_c: np.ndarray, pi_r: np.ndarray, alpha: float, n_boot: int, seed: int) -> dict:
    """Estimated rate of a 0/1 outcome under candidate and reference (SNIPS), and the rise with a
    paired bootstrap interval (both rates recomputed on the same resampled decisions)."""
    wc, wr, y = weights(data, pi_c), weights(data, pi_r), data.reward
    rng = np.random.default_rng(seed)
    rises = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, data.n, data.n)
        with np.errstate(invalid="ignore", divide="ignore"):
            rises[b] = (wc[idx] * y[idx]).sum() / wc[idx].sum() - (wr[idx] * y[idx]).sum() / wr[idx].sum()
    lo, hi = np.nanquantile(rises, [alpha / 2, 1 - alpha / 2])
    c, r = SNIPS().estimate(data, pi_c), SNIPS().estimate(data, pi_r)
    return {"candidate": c, "reference": r, "rise": c - r, "rise_lo": float(lo), "rise_hi": float(hi),
            "events": int(y.sum())}


def evaluate(store: Store, policy: Policy, candidate: str, baselines: Sequence[str] = ("active", "uniform"), *,
             now: float, since: float | None = None, until: float | None = None,
             estimators: Sequence | None = None, alpha: float = 0.05, n_boot: int = 1000,
             seed: int = 0, progress: bool = False, rows: Sequence[LoggedDecision] | None = None) -> Evaluation:
    """Evaluate `candidate` and `baselines` (service/offline/target_policies.py) on the decisions of `policy`
    decided in [since, until) and final at `now` (their reward window closed), or on `rows` when
    given (retrain's held-out slice). The first baseline is the reference of the lift."""
    if policy.spec.kind == "personalizer":
        raise per_request_actions(policy, "`tactful evaluate`")
    policy = policy.known()  # every arm it ever had: the log's arm sets change over time
    if rows is None:
        rows = list(final_decisions(store, policy, now, since, until))
    if not rows:
        raise not_enough_data(store, policy, now, since, until)
    data = bandit_data(policy, rows)
    ope = OffPolicyEvaluation(data, estimators if estimators is not None else default_estimators(),
                              RewardModel(), alpha=alpha, seed=seed)
    targets = []
    seen = set()
    for spec in [candidate, *baselines]:
        if spec in seen:
            continue
        seen.add(spec)
        targets.append(resolve_target(policy, store, spec, rows, data, progress))
    cand_label, cand_pi, cand_version = targets[0]
    ref_label, ref_pi, _ = targets[1] if len(targets) > 1 else targets[0]
    result = Evaluation(policy.name, data.n, to_rfc3339(since), to_rfc3339(until),
                        cand_label, cand_version, ref_label, logged_mean_reward=float(np.mean(data.reward)))
    for label, pi, _ in targets:
        for e in ope.run(pi):
            result.rows.append({"target": label, **e.as_dict()})
    if len(targets) > 1:
        q = ope.q_cross()
        v, lo, hi = estimate_differences(data, cand_pi, ref_pi, q, alpha)
        result.lift = {"estimator": "DR", "value": v, "lo": lo, "hi": hi}
        for name, types in (("unsubscribe", UNSUBSCRIBE_TYPES), ("complaint", COMPLAINT_TYPES)):
            if not set(types) & set(policy.outcome_types):
                continue
            ind = bandit_data(policy, rows, outcome_indicator(types))
            setattr(result, name, _rate_rise(ind, cand_pi, ref_pi, alpha, n_boot, seed))
    return result
