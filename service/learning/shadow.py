"""Shadow mode: a candidate version scores every live decision beside the active one, and nothing
it computes is served (`shadow_report.py` then says how often it agreed and what it is worth).

The scorer observes the decision engine (service/decision/engine.py); the runtime wires it in
(service/runtime.py), so every engine, served or simulated, scores its shadow the same way."""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from models.featurize import action_line, shared_line
from service.decision.modelcache import VersionCache
from service.decision.sampling import sample, uniform_draw
from service.learning.registry import VersionRegistry
from service.policy import Policy
from service.policy.personalizer import served_pmf
from service.store import Decision

log = logging.getLogger("tactful.models")


class ShadowScorer:
    """Scores every live decision with the policy's shadow candidate beside the active version and
    logs the candidate's choice and probabilities; nothing it computes is served. An observer of
    the decision engine. The candidate draws with the same audited random number as the served
    decision, so agreement is measured on coupled draws."""

    def __init__(self, registry: VersionRegistry, policies: Mapping[str, Policy], refresh_seconds: float,
                 monotonic: Callable[[], float]):
        self.registry = registry
        self.models = VersionCache(registry.store, policies, registry.shadow_version, refresh_seconds, monotonic,
                                   "shadow")

    def __call__(self, policy: Policy, d: Decision) -> None:
        if not d.allowed:
            return
        try:
            version, model = self.models.get(policy.name)
            if model is None:
                return
            if policy.spec.kind == "personalizer":  # a Rank event: its own actions, served as Rank serves
                ranked = d.history["personalizer"]
                pmf = served_pmf(model.predict_lines(shared_line(d.context, {}), [
                    action_line(a["id"], a["features"]) for a in ranked["actions"]]), ranked.get("exploration", 0.0))
            else:
                pmf = model.predict(shared_line(d.context, d.history), [policy.arm_index[a] for a in d.allowed])
            pos = sample(pmf, uniform_draw(d.event_id))
            self.registry.store.add_shadow_decision(d.event_id, d.policy, version, d.allowed[pos], float(pmf[pos]),
                                                    [float(p) for p in pmf], d.decided_at)
        except Exception:  # a shadow must never fail a live decision; it says so loudly
            log.exception("policy %s: shadow scoring failed for %s", policy.name, d.event_id)
