"""Shadow mode: a candidate version scores every live decision beside the active one, and nothing
it computes is served; `shadow_report` then says how often it agreed and what it is worth.

The scorer observes the decision engine (service/decision/engine.py); the runtime wires it in
(service/runtime.py), so every engine, served or simulated, scores its shadow the same way."""
from __future__ import annotations

import json
import logging
from typing import Callable, Mapping

import numpy as np

from models.featurize import shared_line
from models.ope import OffPolicyEvaluation, RewardModel, default_estimators
from service.decision.modelcache import VersionCache
from service.decision.sampling import sample, uniform_draw
from service.learning.registry import ModelOps
from service.offline.errors import EvaluationError
from service.offline.evaluate import bandit_data
from service.offline.targets import uniform_target
from service.offline.export import final_decisions
from service.policy import Policy
from service.store import Decision

log = logging.getLogger("tactful.models")


class ShadowScorer:
    """Scores every live decision with the policy's shadow candidate beside the active version and
    logs the candidate's choice and probabilities; nothing it computes is served. Registered as an
    observer of the decision engine. The candidate draws with the same
    audited random number as the served decision, so agreement is measured on coupled draws."""

    def __init__(self, ops: ModelOps, policies: Mapping[str, Policy], refresh_seconds: float,
                 monotonic: Callable[[], float]):
        self.ops = ops
        self.models = VersionCache(ops.store, policies, ops.shadow_version, refresh_seconds, monotonic, "shadow")

    def __call__(self, policy: Policy, d: Decision) -> None:
        if not d.allowed:
            return
        try:
            version, model = self.models.get(policy.name)
            if model is None:
                return
            pmf = model.predict(shared_line(d.context, d.history), [policy.arm_index[a] for a in d.allowed])
            pos = sample(pmf, uniform_draw(d.event_id))
            self._record(d, version, d.allowed[pos], float(pmf[pos]), [float(p) for p in pmf])
        except Exception:  # a shadow must never fail a live decision; it says so loudly
            log.exception("policy %s: shadow scoring failed for %s", policy.name, d.event_id)

    def _record(self, d: Decision, version: int, arm: str, probability: float, probabilities: list[float]) -> None:
        with self.ops.store.write() as conn:
            conn.execute("INSERT OR IGNORE INTO shadow_decisions(event_id, policy, version, arm, probability,"
                         " probabilities, at) VALUES (?,?,?,?,?,?,?)",
                         (d.event_id, d.policy, version, arm, probability, json.dumps(probabilities), d.decided_at))


def shadow_report(ops: ModelOps, policy: Policy, now: float, since: float | None = None, until: float | None = None,
                  seed: int = 0) -> dict:
    """Agreement of the shadow candidate with the served decisions and its estimated value."""

    shadows = {r["event_id"]: dict(r) for r in ops.store.query(
        "SELECT * FROM shadow_decisions WHERE policy=?", (policy.name,))}
    if not shadows:
        raise EvaluationError(f"policy {policy.name!r} has no shadow decisions: set a shadow candidate with "
                              f"`tactful models shadow --policy {policy.name} VERSION`")
    rows = [r for r in final_decisions(ops.store, policy, now, since, until) if r.decision.event_id in shadows]
    if not rows:
        raise EvaluationError("no shadow-scored decision is final yet")
    data = bandit_data(policy, rows)
    pi = np.zeros((len(rows), len(policy.arms)))
    agree = greedy = 0
    versions = set()
    for i, row in enumerate(rows):
        s = shadows[row.decision.event_id]
        versions.add(s["version"])
        probs = json.loads(s["probabilities"])
        pi[i, [policy.arm_index[a] for a in row.decision.allowed]] = probs
        agree += s["arm"] == row.decision.arm
        greedy += int(np.argmax(probs)) == int(np.argmax(row.decision.probabilities))
    ope = OffPolicyEvaluation(data, default_estimators(), RewardModel(), seed=seed)
    est = ope.run(pi)
    base = ope.run(uniform_target(data))
    lines = [f"shadow candidate version(s) {sorted(versions)} of {policy.name}: {len(rows)} final decisions",
             f"agreement with the served arm: {agree / len(rows):.1%} (same draw); same favourite arm: "
             f"{greedy / len(rows):.1%}",
             f"served (logged) mean reward: {float(data.reward.mean()):.4f}"]
    for e in est:
        lines.append(f"  candidate {e.estimator:<9} {e.value:.4f} [{e.lo:.4f}, {e.hi:.4f}]  ESS {e.ess:.0f}")
    for e in base:
        lines.append(f"  uniform   {e.estimator:<9} {e.value:.4f} [{e.lo:.4f}, {e.hi:.4f}]")
    return {"versions": sorted(versions), "n": len(rows), "agreement": agree / len(rows),
            "favourite_agreement": greedy / len(rows), "logged_mean_reward": float(data.reward.mean()),
            "estimates": [e.as_dict() for e in est], "uniform": [e.as_dict() for e in base], "text": "\n".join(lines)}
