"""Model versions as a data scientist manages them: list, show, add (a retrained or imported
candidate, never active on arrival), activate with a recorded reason, roll back, promote against
the policy's declared criteria; evaluations stored beside a version; which version shadows the
active one. The automatic revert guard (`guard.py`) and shadow scoring (`shadow.py`) build on it.

Versions are immutable: rows of `model_versions` are never updated. The registry's own tables
(created with the rest of the schema, service/store/schema.py; read and written by
service/store/versions.py):

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
from service.store import AlreadyActive, NoSuchVersion, Store
from service.times import parse_time

log = logging.getLogger("tactful.models")


class PromotionRefused(Exception):
    """A candidate misses one or more of the policy's promotion criteria; `misses` says which."""

    def __init__(self, misses: list[str]):
        super().__init__("; ".join(misses))
        self.misses = misses


class VersionRegistry:
    """The model versions of every policy as a data scientist manages them; the store keeps them
    (service/store/versions.py), this says what is allowed and why."""

    def __init__(self, store: Store):
        self.store = store

    # -- reading ---------------------------------------------------------------------------------

    def versions(self, policy: str) -> list[dict]:
        active = self.store.active_version(policy)
        evaluated = self.store.evaluation_counts(policy)
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
                v["activations"] = self.store.version_activations(policy, version)
                v["evaluation"] = self.latest_evaluation(policy, version)
                return v
        raise NotFound(f"policy {policy!r} has no model version {version}", "version")

    def activations(self, policy: str, limit: int = 20) -> list[dict]:
        return self.store.activations(policy, limit)

    def trained_until(self, policy: str, version: int) -> float | None:
        """When the newest decision a retrained version learned was made (`retrain` notes it), or
        None for other versions. An evaluation that includes decisions up to then is in-sample:
        it overstates the version, so it must not be what `promote` reads."""
        row = self.store.model(policy, version)
        note = json.loads(row["note"] or "{}") if row else {}
        end = (note.get("trained_on") or {}).get("to") if isinstance(note.get("trained_on"), dict) else None
        end = end or note.get("trained_to")
        return parse_time(end) if isinstance(end, str) else None

    # -- writing versions -------------------------------------------------------------------------

    def add_version(self, policy: str, model: bytes, vw_args: str, source: str, at: float, note: dict | None = None,
                    parent: int | None = None) -> int:
        """A new immutable version, not active. Its parent defaults to the version active now."""
        return self.store.add_version(policy, model, vw_args, source, at, note or {}, parent)

    def add_retrained(self, policy: str, model: bytes, vw_args: str, at: float, note: dict) -> tuple[int, bool]:
        """A retrained candidate as a new version, or, when an earlier retrain wrote exactly this
        model with these arguments (as retraining on an unchanged log does), that version:
        (version, whether it is new). Retraining twice does not make two identical candidates."""
        same = self.store.same_version(policy, model, vw_args, "retrain")
        if same is not None:
            return same, False
        return self.add_version(policy, model, vw_args, "retrain", at, note), True

    def activate(self, policy: str, version: int, reason: str, at: float, watch: bool = True) -> dict:
        """Make `version` the one every worker serves (within their refresh, about a second),
        recording why. With `watch`, the revert guard watches its first decisions."""
        try:
            previous = self.store.activate(policy, version, reason, at, watch)
        except NoSuchVersion as exc:
            raise NotFound(str(exc), "version") from None
        except AlreadyActive as exc:
            raise Conflict(str(exc), "version") from None
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
        self.store.add_evaluation(policy, version, evaluation, at)

    def latest_evaluation(self, policy: str, version: int) -> dict | None:
        return self.store.latest_evaluation(policy, version)

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
        self.store.set_shadow(policy, version, at)

    def shadow_version(self, policy: str) -> int | None:
        return self.store.shadow_version(policy)
