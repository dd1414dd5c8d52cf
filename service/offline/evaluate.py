"""`tactful evaluate`: the estimated value of a candidate policy against the active version and
baselines, from a policy's decision log, with intervals and effective sample sizes.

Targets (what `--candidate` and `--baseline` accept):
  an integer or `vN`   a stored model version of the policy
  a file path          a VW model file (trained with --cb_explore_adf, e.g. from an exported vw file)
  active               the policy's active model version
  uniform              uniform random choice among each decision's allowed arms
  logged               the policy that logged the decisions (its value is the observed mean reward)
  fallback             always the policy's fallback arm when allowed, else uniform
  bts-zozotown         Bernoulli Thompson sampling with the ZOZOTOWN prior (OBD logs only; see service/obd.py)

Every target is scored on the same allowed arms the logged decision had: guardrails do not depend
on the policy, so a candidate could have chosen among exactly those arms.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import vowpalwabbit as vw

from models.ope import (BanditData, OffPolicyEvaluation, RewardModel, default_estimators, estimate_differences,
                        weights)
from models.featurize import HISTORY_FEATURES, shared_line
from models.vw_policy import VWPolicy
from service.policy.bandit import arm_lines
from service.offline.errors import EvaluationError
from service.offline.export import LoggedDecision, final_decisions
from service.offline.obd import bts_target
from service.times import to_rfc3339
from service.policy import Policy
from service.store import Store

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


# -- target policies -----------------------------------------------------------------------------

def uniform_target(data: BanditData) -> np.ndarray:
    return data.allowed / data.allowed.sum(axis=1, keepdims=True)


def logged_target(data: BanditData) -> np.ndarray:
    return data.logging_pmf / data.logging_pmf.sum(axis=1, keepdims=True)


def fallback_target(policy: Policy, data: BanditData) -> np.ndarray:
    fb = policy.arm_index[policy.spec.learner.fallback_arm]
    pi = uniform_target(data)
    has = data.allowed[:, fb]
    pi[has] = 0.0
    pi[has, fb] = 1.0
    return pi


def model_target(policy: Policy, rows: Sequence[LoggedDecision], model: VWPolicy, progress: bool = False,
                 label: str = "scoring") -> np.ndarray:
    from tqdm import tqdm

    pi = np.zeros((len(rows), len(policy.arms)))
    for i, row in enumerate(tqdm(rows, desc=label, unit="dec", disable=not progress, leave=False)):
        d = row.decision
        idx = [policy.arm_index[a] for a in d.allowed]
        pi[i, idx] = model.predict(shared_line(d.context, d.history), idx)
    return pi


def load_model(policy: Policy, store: Store, spec: str) -> tuple[str, VWPolicy, int | None]:
    """A stored version (`3`, `v3`, `active`) or a VW model file."""
    version = None
    if spec == "active":
        version = store.active_version(policy.name)
        if version is None:
            raise EvaluationError(f"policy {policy.name!r} has no active model version")
    elif re.fullmatch(r"v?\d+", spec):
        version = int(spec.lstrip("v"))
    if version is not None:
        row = store.model(policy.name, version)
        if row is None:
            raise EvaluationError(f"policy {policy.name!r} has no model version {version}")
        data, label = row["model"], f"v{version}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise EvaluationError(f"{spec!r} is neither a model version, a known baseline "
                                  f"(active, uniform, logged, fallback) nor a model file")
        data, label = path.read_bytes(), path.name
    try:
        model = VWPolicy(arm_lines(policy), model_bytes=data)
    except RuntimeError as exc:
        raise EvaluationError(f"{label}: VW cannot load this model: {exc}") from None
    if model.ws.get_prediction_type() != vw.PredictionType.ACTION_PROBS:
        model.close()
        raise EvaluationError(f"{label}: not a --cb_explore_adf model; train with `vw --cb_explore_adf -d FILE -f MODEL`")
    return label, model, version


def resolve_target(policy: Policy, store: Store, spec: str, rows: Sequence[LoggedDecision], data: BanditData,
                   progress: bool = False) -> tuple[str, np.ndarray, int | None]:
    """(label, pi (n, K), stored version or None) of a target named on the command line."""
    spec = spec.strip()
    if spec == "uniform":
        return "uniform", uniform_target(data), None
    if spec == "logged":
        return "logged", logged_target(data), None
    if spec == "fallback":
        return "fallback", fallback_target(policy, data), None
    if spec == "bts-zozotown":
        return "bts-zozotown", bts_target(policy, rows), None
    label, model, version = load_model(policy, store, spec)
    try:
        pi = model_target(policy, rows, model, progress, f"scoring {label}")
    finally:
        model.close()
    if spec == "active":
        label = f"active ({label})"
    return label, pi, version


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


def _snips(data: BanditData, pi: np.ndarray) -> float:
    w = weights(data, pi)
    return float(np.sum(w * data.reward) / np.sum(w)) if np.sum(w) > 0 else float("nan")


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
    c, r = _snips(data, pi_c), _snips(data, pi_r)
    return {"candidate": c, "reference": r, "rise": c - r, "rise_lo": float(lo), "rise_hi": float(hi),
            "events": int(y.sum())}


def evaluate(store: Store, policy: Policy, candidate: str, baselines: Sequence[str] = ("active", "uniform"),
             now: float | None = None, since: float | None = None, until: float | None = None,
             estimators: Sequence | None = None, alpha: float = 0.05, n_boot: int = 1000,
             seed: int = 0, progress: bool = False, rows: Sequence[LoggedDecision] | None = None) -> Evaluation:
    import time

    if rows is None:
        rows = list(final_decisions(store, policy, now if now is not None else time.time(), since, until))
    if not rows:
        raise EvaluationError(f"policy {policy.name!r} has no final decisions in that time range")
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


# -- the report --------------------------------------------------------------------------------

def write_report(result: Evaluation, out_dir: str | Path, command: str | None = None) -> Path:
    """`report.md`, `estimates.png` and `evaluation.json` in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result.as_dict(), indent=2, default=float))
    targets = list(dict.fromkeys(r["target"] for r in result.rows))
    ests = list(dict.fromkeys(r["estimator"] for r in result.rows))
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * len(targets) * len(ests)))
    y, labels = 0, []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ti, t in enumerate(targets):
        for r in (r for r in result.rows if r["target"] == t):
            ax.errorbar([r["value"]], [y], xerr=[[r["value"] - r["lo"]], [r["hi"] - r["value"]]], fmt="o",
                        color=colors[ti % len(colors)], capsize=3)
            labels.append(f"{t} · {r['estimator']}")
            y += 1
        y += 0.5
    ax.axvline(result.logged_mean_reward, color="grey", ls=":", label="logged mean reward")
    ax.set_yticks([i for i in _ticks(targets, ests, result.rows)], labels)
    ax.invert_yaxis()
    ax.set_xlabel("estimated value (mean shaped reward per decision), 95% interval")
    ax.set_title(f"{result.policy}: {result.n} decisions")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "estimates.png", dpi=110)
    plt.close(fig)
    md = [f"# Off-policy evaluation: {result.policy}", ""]
    if command:
        md += ["```", command, "```", ""]
    md += [f"- decisions: {result.n} final decisions"
           + (f" from {result.since}" if result.since else "") + (f" until {result.until}" if result.until else ""),
           f"- candidate: **{result.candidate}**; reference: {result.reference}",
           f"- logged mean shaped reward: {result.logged_mean_reward:.4f}", ""]
    md += ["| target | estimator | value | 95% interval | n | ESS |", "| --- | --- | ---: | --- | ---: | ---: |"]
    for r in result.rows:
        md.append(f"| {r['target']} | {r['estimator']} | {r['value']:.4f} | [{r['lo']:.4f}, {r['hi']:.4f}] "
                  f"| {r['n']} | {r['ess']:.1f} |")
    if result.lift:
        md += ["", f"Lift of {result.candidate} over {result.reference} (DR, paired): "
                   f"**{result.lift['value']:+.4f}** [{result.lift['lo']:+.4f}, {result.lift['hi']:+.4f}]"]
    for name in ("unsubscribe", "complaint"):
        u = getattr(result, name)
        if u:
            md.append(f"\n{name.capitalize()} rate (SNIPS): candidate {u['candidate']:.4f}, reference "
                      f"{u['reference']:.4f}; rise {u['rise']:+.4f}, upper bound {u['rise_hi']:+.4f} "
                      f"({u['events']} {name} events in the log)")
    md += ["", "ESS is Kish's effective sample size of the importance weights: how many on-policy decisions "
               "the log is worth for that target.", "", "![estimates](estimates.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    return out / "report.md"


def _ticks(targets, ests, rows):
    y = 0.0
    for t in targets:
        for _ in (r for r in rows if r["target"] == t):
            yield y
            y += 1
        y += 0.5
