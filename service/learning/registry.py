"""Model versions as a data scientist manages them: list, show, add (a retrained or imported
candidate, never active on arrival), activate with a recorded reason, roll back, promote against
the policy's declared criteria; evaluations stored beside a version; which version shadows the
active one. The automatic revert guard (`guard.py`) and shadow scoring (`shadow.py`) build on it.

Versions are immutable: rows of `model_versions` are never updated. The registry's own tables
(created with the rest of the schema, service/store/schema.py):

  model_evaluations  (policy, version, at, evaluation JSON)   append-only
  shadow_config      (policy, version, since)                 which candidate scores beside the active one
  shadow_decisions   (event_id, policy, version, arm, probability, probabilities, at)
  guard_watches      (policy, version, previous, started_seq, status, reason, at, closed_at)

Activations go to the store's `activations` table with their reason, like the online learner's.
"""
from __future__ import annotations

import json
import logging

from service.errors import Conflict, NotFound
from service.policy import Policy
from service.store import Store

log = logging.getLogger("tactful.models")


class PromotionRefused(Exception):
    """A candidate misses one or more of the policy's promotion criteria; `misses` says which."""

    def __init__(self, misses: list[str]):
        super().__init__("; ".join(misses))
        self.misses = misses


class ModelOps:
    def __init__(self, store: Store):
        self.store = store

    # -- reading ---------------------------------------------------------------------------------

    def versions(self, policy: str) -> list[dict]:
        active = self.store.active_version(policy)
        evaluated = {r[0]: r[1] for r in self.store.query(
            "SELECT version, count(*) FROM model_evaluations WHERE policy=? GROUP BY version", (policy,))}
        out = []
        for v in self.store.versions(policy):
            v = dict(v)
            v["note"] = json.loads(v["note"] or "{}")
            v["active"] = v["version"] == active
            v["evaluations"] = evaluated.get(v["version"], 0)
            out.append(v)
        return out

    def version(self, policy: str, version: int) -> dict:
        for v in self.versions(policy):
            if v["version"] == version:
                v["activations"] = [dict(r) for r in self.store.query(
                    "SELECT version, previous, reason, at FROM activations WHERE policy=? AND (version=? OR previous=?)"
                    " ORDER BY id", (policy, version, version))]
                v["evaluation"] = self.latest_evaluation(policy, version)
                return v
        raise NotFound(f"policy {policy!r} has no model version {version}", "version")

    def activations(self, policy: str, limit: int = 20) -> list[dict]:
        return [dict(r) for r in self.store.query(
            "SELECT id, version, previous, reason, at FROM activations WHERE policy=? ORDER BY id DESC LIMIT ?",
            (policy, limit))]

    # -- writing versions -------------------------------------------------------------------------

    def add_version(self, policy: str, model: bytes, vw_args: str, source: str, at: float, note: dict | None = None,
                    parent: int | None = None) -> int:
        """A new immutable version, not active. Its parent defaults to the version active now."""
        with self.store.write() as conn:
            if parent is None:
                row = conn.execute("SELECT active_version FROM policy_state WHERE policy=?", (policy,)).fetchone()
                parent = row[0] if row else None
            version = (conn.execute("SELECT max(version) FROM model_versions WHERE policy=?",
                                    (policy,)).fetchone()[0] or 0) + 1
            conn.execute("INSERT INTO model_versions(policy, version, parent, source, created_at, model, vw_args,"
                         " n_learned, learned_through_seq, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (policy, version, parent, source, at, model, vw_args, (note or {}).get("n_learned", 0),
                          None, json.dumps(note or {})))
        return version

    def activate(self, policy: str, version: int, reason: str, at: float, watch: bool = True) -> dict:
        """Make `version` the one every worker serves (within their refresh, about a second),
        recording why. With `watch`, the revert guard watches its first decisions."""
        with self.store.write() as conn:
            if conn.execute("SELECT 1 FROM model_versions WHERE policy=? AND version=?",
                            (policy, version)).fetchone() is None:
                raise NotFound(f"policy {policy!r} has no model version {version}", "version")
            row = conn.execute("SELECT active_version FROM policy_state WHERE policy=?", (policy,)).fetchone()
            previous = row[0] if row else None
            if previous == version:
                raise Conflict(f"version {version} of {policy!r} is already active", "version")
            if row is None:
                conn.execute("INSERT INTO policy_state(policy, active_version, learner_cursor) VALUES (?,?,0)",
                             (policy, version))
            else:
                conn.execute("UPDATE policy_state SET active_version=? WHERE policy=?", (version, policy))
            conn.execute("INSERT INTO activations(policy, version, previous, reason, at) VALUES (?,?,?,?,?)",
                         (policy, version, previous, reason, at))
            conn.execute("UPDATE guard_watches SET status='superseded', closed_at=? WHERE policy=? AND status='watching'",
                         (at, policy))
            if watch:
                seq = conn.execute("SELECT coalesce(max(seq), 0) FROM decisions").fetchone()[0]
                conn.execute("INSERT INTO guard_watches(policy, version, previous, started_seq, status, at)"
                             " VALUES (?,?,?,?,'watching',?)", (policy, version, previous, seq, at))
        log.info("policy %s: activated version %s (was %s): %s", policy, version, previous, reason)
        return {"policy": policy, "version": version, "previous": previous, "reason": reason, "at": at}

    def rollback(self, policy: str, at: float, to: int | None = None, reason: str | None = None) -> dict:
        """Activate the version that was active before the latest activation (or `to`)."""
        if to is None:
            last = self.activations(policy, 1)
            if not last or last[0]["previous"] is None:
                raise Conflict(f"policy {policy!r} has no earlier version to roll back to", "version")
            to = last[0]["previous"]
        current = self.store.active_version(policy)
        return self.activate(policy, to, reason or f"rollback from version {current}", at, watch=False)

    # -- evaluations and promotion ----------------------------------------------------------------

    def store_evaluation(self, policy: str, version: int, evaluation: dict, at: float) -> None:
        with self.store.write() as conn:
            conn.execute("INSERT INTO model_evaluations(policy, version, at, evaluation) VALUES (?,?,?,?)",
                         (policy, version, at, json.dumps(evaluation, default=float)))

    def latest_evaluation(self, policy: str, version: int) -> dict | None:
        rows = self.store.query("SELECT evaluation, at FROM model_evaluations WHERE policy=? AND version=? "
                                "ORDER BY id DESC LIMIT 1", (policy, version))
        return json.loads(rows[0][0]) | {"stored_at": rows[0][1]} if rows else None

    def promotion_misses(self, policy: Policy, version: int) -> list[str]:
        """Which of the policy's promotion criteria the version's latest evaluation misses."""
        crit = policy.spec.promotion
        ev = self.latest_evaluation(policy.name, version)
        if ev is None:
            return [f"no evaluation is stored for version {version}: run `tactful evaluate --policy {policy.name} "
                    f"--candidate {version}` (or retrain, which stores one)"]
        misses = []
        if ev["n"] < crit.min_decisions:
            misses.append(f"min_decisions: evaluated on {ev['n']} decisions, fewer than the {crit.min_decisions} required")
        lift = ev.get("lift") or {}
        if not lift:
            misses.append("min_lift_lower_bound: the evaluation has no lift against a reference")
        elif not lift["lo"] > crit.min_lift_lower_bound:
            misses.append(f"min_lift_lower_bound: the lift's lower bound {lift['lo']:+.4f} (DR, against "
                          f"{ev.get('reference')}) is not above {crit.min_lift_lower_bound:+.4f}")
        unsub = ev.get("unsubscribe") or {}
        if unsub and unsub["rise"] > crit.max_unsubscribe_rise:
            misses.append(f"max_unsubscribe_rise: the estimated unsubscribe rate rises by {unsub['rise']:+.4f}, "
                          f"more than the {crit.max_unsubscribe_rise:.4f} allowed")
        return misses

    def promote(self, policy: Policy, version: int, at: float, reason: str | None = None) -> dict:
        if version not in {v["version"] for v in self.store.versions(policy.name)}:
            raise NotFound(f"policy {policy.name!r} has no model version {version}", "version")
        misses = self.promotion_misses(policy, version)
        if misses:
            raise PromotionRefused(misses)
        ev = self.latest_evaluation(policy.name, version)
        why = reason or (f"promoted: lift {ev['lift']['value']:+.4f} [{ev['lift']['lo']:+.4f}, "
                         f"{ev['lift']['hi']:+.4f}] over {ev['reference']} on {ev['n']} decisions")
        return self.activate(policy.name, version, why, at)

    # -- shadow mode ----------------------------------------------------------------------------

    def set_shadow(self, policy: str, version: int | None, at: float) -> None:
        if version is not None and self.store.model(policy, version) is None:
            raise NotFound(f"policy {policy!r} has no model version {version}", "version")
        with self.store.write() as conn:
            conn.execute("INSERT INTO shadow_config(policy, version, since) VALUES (?,?,?) ON CONFLICT(policy) "
                         "DO UPDATE SET version=excluded.version, since=excluded.since", (policy, version, at))

    def shadow_version(self, policy: str) -> int | None:
        rows = self.store.query("SELECT version FROM shadow_config WHERE policy=?", (policy,))
        return rows[0][0] if rows else None
