"""The revert guard: the online learner's watch over a newly activated model version. If the
unsubscribe or complaint rate of the version's first decisions passes the policy's threshold, it
reverts to the version that served before and records why (docs/models.md).

The learner runs it before each step (service/learning/learner.py); the runtime wires it in
(service/runtime.py), so every learner, served or simulated, has the same guard."""
from __future__ import annotations

import logging

from service.learning.registry import VersionRegistry
from service.policy import Policy

log = logging.getLogger("tactful.models")


class RevertGuard:
    def __init__(self, registry: VersionRegistry):
        self.registry = registry

    def check(self, policy: Policy, now: float) -> dict | None:
        """Judge the open watch of a newly activated version: if the unsubscribe or complaint rate of
        its first `guard.decisions` decisions passes the policy's threshold (once at least
        `guard.min_decisions` were made), revert to the version that served before and record
        why. Returns what it did, or None."""
        g = policy.spec.promotion.guard
        store = self.registry.store
        w = store.open_guard_watch(policy.name)
        if w is None:
            return None
        decs = store.decisions_after_seq(policy.name, w["started_seq"], g.decisions)
        n = len(decs)
        if n < g.min_decisions:
            return None
        ids = [e for e, _ in decs]
        outcomes = store.outcomes_for(ids)
        unsub = sum(1 for e in ids if any(o.type == "unsubscribe" and o.counted for o in outcomes[e])) / n
        compl = sum(1 for e in ids if any(o.type == "complaint" and o.counted for o in outcomes[e])) / n
        breach = None
        if unsub > g.max_unsubscribe_rate:
            breach = f"unsubscribe rate {unsub:.4f} > {g.max_unsubscribe_rate:.4f}"
        elif compl > g.max_complaint_rate:
            breach = f"complaint rate {compl:.4f} > {g.max_complaint_rate:.4f}"
        if breach:
            reason = f"guard: version {w['version']} reverted: {breach} in its first {n} decisions"
            store.close_guard_watch(w["id"], "reverted", reason, now)
            if w["previous"] is not None and store.active_version(policy.name) != w["previous"]:
                self.registry.activate(policy.name, w["previous"], reason, now, watch=False)
            log.warning("policy %s: %s", policy.name, reason)
            return {"version": w["version"], "reverted_to": w["previous"], "reason": reason}
        if n >= g.decisions and decs[-1][1] <= now:
            store.close_guard_watch(w["id"], "passed",
                                    f"unsubscribe {unsub:.4f}, complaint {compl:.4f} in its first {n} decisions", now)
        return None

    def before_step(self, policy: Policy, now: float) -> None:
        """The learner's hook: check, and never stop learning because the guard failed (it says so
        loudly)."""
        try:
            self.check(policy, now)
        except Exception:
            log.exception("policy %s: the revert guard failed", policy.name)
