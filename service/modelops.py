"""Model versions as a data scientist manages them: list, show, add (a retrained or imported
candidate, never active on arrival), activate with a recorded reason, roll back, promote against
the policy's declared criteria; evaluations stored beside a version; shadow scoring; and the
automatic revert guard.

Versions are immutable: rows of `model_versions` are never updated. Everything this module adds
lives in its own tables, created by an additive migration (`ModelOps.migrate`):

  model_evaluations  (policy, version, at, evaluation JSON)   append-only
  shadow_config      (policy, version, since)                 which candidate scores beside the active one
  shadow_decisions   (event_id, policy, version, arm, probability, probabilities, at)
  guard_watches      (policy, version, previous, started_seq, status, reason, at, closed_at)

Activations go to the store's `activations` table with their reason, like the online learner's.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Mapping

import numpy as np

from service.errors import Conflict, NotFound
from service.policy import Policy
from service.store import Decision, Store

log = logging.getLogger("tactful.models")


class PromotionRefused(Exception):
    """A candidate misses one or more of the policy's promotion criteria; `misses` says which."""

    def __init__(self, misses: list[str]):
        super().__init__("; ".join(misses))
        self.misses = misses


class ModelOps:
    def __init__(self, store: Store):
        self.store = store
        self.migrate()

    def migrate(self) -> None:
        with self.store.write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS model_evaluations (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
                         " version INTEGER NOT NULL, at REAL NOT NULL, evaluation TEXT NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS shadow_config (policy TEXT PRIMARY KEY, version INTEGER,"
                         " since REAL)")
            conn.execute("CREATE TABLE IF NOT EXISTS shadow_decisions (event_id TEXT PRIMARY KEY, policy TEXT NOT NULL,"
                         " version INTEGER NOT NULL, arm TEXT NOT NULL, probability REAL NOT NULL,"
                         " probabilities TEXT NOT NULL, at REAL NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS guard_watches (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
                         " version INTEGER NOT NULL, previous INTEGER, started_seq INTEGER NOT NULL,"
                         " status TEXT NOT NULL, reason TEXT, at REAL NOT NULL, closed_at REAL)")
            conn.execute("CREATE INDEX IF NOT EXISTS model_evaluations_version ON model_evaluations(policy, version)")

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

    def record_shadow(self, d: Decision, version: int, arm: str, probability: float, probabilities: list[float]) -> None:
        with self.store.write() as conn:
            conn.execute("INSERT OR IGNORE INTO shadow_decisions(event_id, policy, version, arm, probability,"
                         " probabilities, at) VALUES (?,?,?,?,?,?,?)",
                         (d.event_id, d.policy, version, arm, probability, json.dumps(probabilities), d.decided_at))

    # -- the revert guard ------------------------------------------------------------------------

    def guard_check(self, policy: Policy, now: float) -> dict | None:
        """Judge the open watch of a newly activated version: if the unsubscribe or complaint rate of
        its first `guard.decisions` decisions passes the policy's threshold (once at least
        `guard.min_decisions` were made), revert to the version that served before and record
        why. Returns what it did, or None."""
        g = policy.spec.promotion.guard
        rows = self.store.query("SELECT * FROM guard_watches WHERE policy=? AND status='watching' ORDER BY id DESC "
                                "LIMIT 1", (policy.name,))
        if not rows:
            return None
        w = dict(rows[0])
        decs = self.store.query("SELECT event_id, closes_at FROM decisions WHERE policy=? AND seq>? ORDER BY seq "
                                "LIMIT ?", (policy.name, w["started_seq"], g.decisions))
        n = len(decs)
        if n < g.min_decisions:
            return None
        ids = [r[0] for r in decs]
        outcomes = self.store.outcomes_for(ids)
        unsub = sum(1 for e in ids if any(o.type == "unsubscribe" and o.counted for o in outcomes[e])) / n
        compl = sum(1 for e in ids if any(o.type == "complaint" and o.counted for o in outcomes[e])) / n
        breach = None
        if unsub > g.max_unsubscribe_rate:
            breach = f"unsubscribe rate {unsub:.4f} > {g.max_unsubscribe_rate:.4f}"
        elif compl > g.max_complaint_rate:
            breach = f"complaint rate {compl:.4f} > {g.max_complaint_rate:.4f}"
        if breach:
            reason = f"guard: version {w['version']} reverted: {breach} in its first {n} decisions"
            with self.store.write() as conn:
                conn.execute("UPDATE guard_watches SET status='reverted', reason=?, closed_at=? WHERE id=?",
                             (reason, now, w["id"]))
            if w["previous"] is not None and self.store.active_version(policy.name) != w["previous"]:
                self.activate(policy.name, w["previous"], reason, now, watch=False)
            log.warning("policy %s: %s", policy.name, reason)
            return {"version": w["version"], "reverted_to": w["previous"], "reason": reason}
        if n >= g.decisions and decs[-1][1] <= now:
            with self.store.write() as conn:
                conn.execute("UPDATE guard_watches SET status='passed', reason=?, closed_at=? WHERE id=?",
                             (f"unsubscribe {unsub:.4f}, complaint {compl:.4f} in its first {n} decisions", now, w["id"]))
        return None


def attach_guard(learner) -> None:
    """Run the revert guard before each of the online learner's steps (service/learner.py hook)."""
    ops = ModelOps(learner.store)

    def guard(policy_name: str) -> None:
        try:
            ops.guard_check(learner.policies[policy_name], learner.clock.now())
        except Exception:  # the guard must never stop learning; it says so loudly
            log.exception("policy %s: the revert guard failed", policy_name)

    learner.hooks.append(guard)


class ShadowScorer:
    """Scores every live decision with the policy's shadow candidate beside the active version and
    logs the candidate's choice and probabilities; nothing it computes is served. Registered as an
    observer of the decision engine (service/engine.py hook). The candidate draws with the same
    audited random number as the served decision, so agreement is measured on coupled draws."""

    def __init__(self, store: Store, policies: Mapping[str, Policy], refresh_seconds: float = 1.0):
        self.ops = ModelOps(store)
        self.policies = policies
        self.refresh_seconds = refresh_seconds
        self._models: dict[str, tuple[int | None, object]] = {}
        self._checked: dict[str, float] = {}

    def _model(self, policy: Policy):
        from models.vw_policy import VWPolicy
        from service.engine import arm_lines

        now = time.monotonic()
        current = self._models.get(policy.name)
        if current is not None and now - self._checked.get(policy.name, 0.0) < self.refresh_seconds:
            return current
        self._checked[policy.name] = now
        version = self.ops.shadow_version(policy.name)
        if current is not None and current[0] == version:
            return current
        if current is not None and current[1] is not None:
            current[1].close()
        model = None
        if version is not None:
            model = VWPolicy(arm_lines(policy), model_bytes=self.ops.store.model(policy.name, version)["model"])
        self._models[policy.name] = (version, model)
        return self._models[policy.name]

    def __call__(self, policy: Policy, d: Decision) -> None:
        if not d.allowed:
            return
        try:
            version, model = self._model(policy)
            if model is None:
                return
            from models.featurize import shared_line
            from service.engine import _sample, _uniform_draw

            pmf = model.predict(shared_line(d.context, d.history), [policy.arm_index[a] for a in d.allowed])
            pos = _sample(pmf, _uniform_draw(d.event_id))
            self.ops.record_shadow(d, version, d.allowed[pos], float(pmf[pos]), [float(p) for p in pmf])
        except Exception:  # a shadow must never fail a live decision; it says so loudly
            log.exception("policy %s: shadow scoring failed for %s", policy.name, d.event_id)


def shadow_report(ops: ModelOps, policy: Policy, now: float, since: float | None = None, until: float | None = None,
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """Agreement of the shadow candidate with the served decisions and its estimated value."""
    from models.estimators import OffPolicyEvaluation, RewardModel, default_estimators
    from service.evaluate import EvaluationError, bandit_data, uniform_target
    from service.export import final_decisions

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
    ope = OffPolicyEvaluation(data, default_estimators(), RewardModel(), n_boot=n_boot, seed=seed)
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
