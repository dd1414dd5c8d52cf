"""Shadow mode: a candidate version scores every live decision beside the active one, and nothing
it computes is served (`shadow_report.py` then says how often it agreed and what it is worth).

The scorer observes the decision engine (service/decision/engine.py); the runtime wires it in
(service/runtime.py), so every engine, served or simulated, scores its shadow the same way."""
from __future__ import annotations

import json
import logging
from typing import Callable, Mapping


from models.featurize import shared_line
from service.decision.modelcache import VersionCache
from service.decision.sampling import sample, uniform_draw
from service.learning.registry import ModelOps
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
