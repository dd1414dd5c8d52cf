"""The decision path, top to bottom, and what happens when an outcome arrives.

    decide: validate -> person state -> guardrails -> holdout / fallback -> featurize -> score
            -> sample -> log the decision and reserve the contact (one transaction)

Each step is a call into the module named for it. Nothing here knows about HTTP: the Flask app
turns requests into calls and `Problem`s into problem+json.
"""
from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from itertools import accumulate
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from models.featurize import arm_line, history_features, shared_line
from models.reward import RewardSpec, shaped_reward
from models.vw_policy import VWPolicy
from service import guardrails
from service.clock import Clock
from service.errors import BadRequest, Conflict, NotFound
from service.policy import HOLD_ARM, FeatureSpec, Policy
from service.store import Decision, Outcome, OutcomeConflict, Store

log = logging.getLogger("tactful.engine")

MODES = ("explore", "exploit", "holdout", "fallback", "consistent")


# -- featurization of a policy's arms -------------------------------------------------------

def arm_lines(policy: Policy) -> list[str]:
    lines = []
    for arm in policy.arms:
        if arm.hold:
            lines.append(arm_line(None))
        else:
            c = arm.content
            lines.append(arm_line(c.id, c.topic, c.tags, arm.channel, arm.timing.name, c.features))
    return lines


def reward_spec(policy: Policy) -> RewardSpec:
    r = policy.spec.reward
    lo, hi = r.bounds
    return RewardSpec(weights=dict(r.weights), default=r.default,
                      fatigue_per_contact=r.fatigue.per_contact, lo=lo, hi=hi)


def new_model(policy: Policy) -> VWPolicy:
    return VWPolicy(arm_lines(policy), policy.spec.learner.vw_args, seed=policy.spec.learner.seed)


def decision_reward(policy: Policy, d: Decision, outcomes: list[Outcome]) -> float:
    """The final shaped reward of a decision: outcomes counted are those inside its window."""
    counted = [(o.type, o.value) for o in outcomes if o.counted and o.at <= d.closes_at]
    return shaped_reward(reward_spec(policy), counted, is_send=d.channel is not None,
                         recent_contacts=int(d.history.get("fatigue_contacts", 0)))


# -- the active model of each policy, as workers see it ----------------------------------------

class ModelCache:
    """Each worker's copy of every policy's active model version.

    Workers only predict. They look up the active version at most every `refresh_seconds` of
    wall time and load the new version's bytes when it changed, without a restart.
    """

    def __init__(self, store: Store, policies: Mapping[str, Policy], refresh_seconds: float = 1.0):
        self.store = store
        self.policies = policies
        self.refresh_seconds = refresh_seconds
        self._models: dict[str, tuple[int, VWPolicy]] = {}
        self._checked: dict[str, float] = {}

    def get(self, policy: str) -> tuple[int | None, VWPolicy | None]:
        now = time.monotonic()
        current = self._models.get(policy)
        if current is not None and now - self._checked.get(policy, 0.0) < self.refresh_seconds:
            return current
        self._checked[policy] = now
        active = self.store.active_version(policy)
        if active is None:
            return None, None
        if current is not None and current[0] == active:
            return current
        row = self.store.model(policy, active)
        try:
            model = VWPolicy(arm_lines(self.policies[policy]), model_bytes=row["model"])
        except RuntimeError as exc:  # VW refuses the bytes: serve the fallback, say so loudly
            log.error("policy %s: model version %s cannot be loaded: %s", policy, active, exc)
            return active, None
        if current is not None:
            current[1].close()
        self._models[policy] = (active, model)
        log.info("policy %s: now serving model version %s", policy, active)
        return active, model


# -- request validation against a policy --------------------------------------------------------

def validate_context(policy: Policy, context: Mapping[str, object], dropped: list | None = None) -> dict:
    """The context's features, checked against the policy's declaration.

    A sensitive feature is always refused. An undeclared one is refused, or, when the policy's
    privacy says "drop", left out and its name appended to `dropped` so the answer reports it.
    """
    features = policy.spec.features
    privacy = policy.spec.privacy
    errors = []
    clean: dict[str, object] = {}
    for name, value in context.items():
        spec = features.get(name)
        if name in privacy.sensitive:
            errors.append({"field": f"context.{name}",
                           "reason": f"is declared sensitive by policy {policy.name!r} and is never accepted"})
            continue
        if spec is None:
            if privacy.undeclared == "drop" and dropped is not None:
                dropped.append(name)
                continue
            errors.append({"field": f"context.{name}",
                           "reason": f"not a feature of policy {policy.name!r} "
                                     f"(it accepts: {', '.join(sorted(features)) or 'none'})"})
            continue
        reason = _feature_error(spec, value)
        if reason:
            errors.append({"field": f"context.{name}", "reason": reason})
        elif value is not None:
            clean[name] = value
    for name, spec in features.items():
        if spec.required and context.get(name) is None:
            errors.append({"field": f"context.{name}", "reason": "is required by the policy"})
    if errors:
        raise BadRequest(f"{errors[0]['field']}: {errors[0]['reason']}", errors[0]["field"], errors)
    return clean


def _feature_error(spec: FeatureSpec, value: object) -> str | None:
    if value is None:
        return None
    if spec.type == "string":
        if not isinstance(value, str):
            return f"must be a string, not {type(value).__name__}"
        if len(value) > 200:
            return "must be at most 200 characters"
        return None
    if spec.type == "boolean":
        return None if isinstance(value, bool) else f"must be true or false, not {type(value).__name__}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, not {type(value).__name__}"
    if not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        return "must fit in a signed 64-bit integer"
    if spec.min is not None and value < spec.min:
        return f"must be at least {spec.min:g}"
    if spec.max is not None and value > spec.max:
        return f"must be at most {spec.max:g}"
    return None


def _removed_summary(removed: dict[str, list]) -> tuple[dict[str, int], list[dict]]:
    """How many removed arms each reason code removed, and the removed arms grouped by rule
    ([{reason, detail, arms}], the largest group first). Arms removed by the same rules share
    one reason list (guardrails.evaluate), so each distinct list is read once."""
    per_list: dict[int, list] = {}  # id(list) -> [the list, how many arms share it]
    for rs in removed.values():
        entry = per_list.get(id(rs))
        if entry is None:
            per_list[id(rs)] = [rs, 1]
        else:
            entry[1] += 1
    counts: dict[str, int] = {}
    groups: dict[tuple[str, str], int] = {}
    for rs, n in per_list.values():
        for code in {r[0] for r in rs}:
            counts[code] = counts.get(code, 0) + n
        for code, detail in rs:
            groups[(code, detail)] = groups.get((code, detail), 0) + n
    return counts, [{"reason": c, "detail": d, "arms": n}
                    for (c, d), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))]


_WHY = {
    "explore": "sampled an arm other than the model's favourite, to keep learning",
    "exploit": "the model's favourite among the allowed arms",
    "holdout": "this person is in the policy's holdout group and gets the baseline",
    "consistent": "kept the content of an earlier decision with the same consistency key",
}


# -- the engine ----------------------------------------------------------------------------

@dataclass
class DecideInput:
    user_id: str
    context: dict
    consistency_key: str | None = None
    timestamp: float | None = None


@dataclass
class OutcomeInput:
    type: str
    value: float = 1.0
    outcome_id: str | None = None
    timestamp: float | None = None


def _uniform_draw(event_id: str) -> float:
    """A number in [0, 1) derived from the event id, so every draw can be audited and replayed."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _sample(pmf, u: float) -> int:
    """The position drawn by `u` in [0, 1) from the probabilities `pmf` (a list or an array)."""
    cdf = list(accumulate(pmf))
    return min(bisect_right(cdf, u * cdf[-1]), len(cdf) - 1)


class DecisionEngine:
    def __init__(self, store: Store, policies: Mapping[str, Policy], clock: Clock,
                 models: ModelCache | None = None, new_id: Callable[[], str] | None = None,
                 max_attempts: int = 20):
        self.store = store
        self.policies = policies
        self.clock = clock
        self.models = models or ModelCache(store, policies)
        self.new_id = new_id or (lambda: uuid.uuid4().hex)
        self.max_attempts = max_attempts
        self._lookback = {name: guardrails.lookback(p) for name, p in policies.items()}
        self._signal_lookback = {name: guardrails.signal_lookback(p) for name, p in policies.items()}
        self.observers: list[Callable[[Policy, Decision], None]] = []  # e.g. shadow scoring (service/modelops.py)

    def policy(self, name: str) -> Policy:
        try:
            return self.policies[name]
        except KeyError:
            raise NotFound(f"no policy named {name!r} (known: {', '.join(sorted(self.policies))})",
                           "policy") from None

    def _now(self, timestamp: float | None) -> float:
        if timestamp is not None and not self.clock.accepts_timestamps:
            raise BadRequest("timestamps are accepted only when the service runs with --clock request; "
                             "leave it out and the service uses its own clock", "timestamp")
        return self.clock.observe(timestamp)

    # decide ---------------------------------------------------------------------------------

    def decide(self, policy_name: str, req: DecideInput) -> dict:
        policy = self.policy(policy_name)
        dropped: list[str] = []
        context = validate_context(policy, req.context, dropped)
        now = self._now(req.timestamp)
        key = self.store.person_key(req.user_id)
        budget = policy.spec.guardrails.daily_budget
        day = guardrails.budget_day(policy, now) if budget is not None else None
        consistent = None
        if req.consistency_key is not None:
            consistent = self.store.consistent_arm(key, policy.name, req.consistency_key,
                                                   now - policy.spec.consistency.ttl)
        for _ in range(self.max_attempts):
            person = self.store.person_state(key, now - self._lookback[policy.name], policy.name,
                                             now - self._signal_lookback[policy.name], day)
            verdict = guardrails.evaluate(policy, person, now)
            decision = self._choose(policy, key, context, person, verdict, now, req.consistency_key, consistent)
            if dropped:
                decision.history["dropped_features"] = dropped
            if self.store.commit_decision(decision, person.marker, (day, budget) if day is not None else None):
                for observe in self.observers:
                    observe(policy, decision)
                return self.render(policy, decision, verdict)
        raise Conflict("the person's state kept changing while deciding; retry the request", "user_id")

    def _choose(self, policy: Policy, key: str, context: dict, person, verdict: guardrails.Verdict,
                now: float, consistency_key: str | None, consistent: tuple[str, str] | None = None) -> Decision:
        event_id = self.new_id()
        allowed = verdict.allowed
        spec = policy.spec
        past = [at for _, at in person.contacts if at <= now]
        hist = history_features(sum(1 for at in past if at > now - 7 * 86400),
                                (now - max(past)) / 3600.0 if past else None,
                                person.preferences.get("preferred_channels"))
        fatigue_contacts = sum(1 for _, at in person.contacts if at > now - spec.reward.fatigue.window)
        version, model = self.models.get(policy.name)
        # a consistency key names an earlier decision whose content must be kept, if still allowed
        keep = None
        if consistent is not None:
            prev = policy.arms[policy.arm_index[consistent[1]]] if consistent[1] in policy.arm_index else None
            if prev is not None and prev.content is not None:
                keep = [i for i in allowed if policy.arms[i].content is not None
                        and policy.arms[i].content.id == prev.content.id]
                hist = hist | {"consistent_with": consistent[0]}
                if not keep:
                    hist = hist | {"consistency_broken": f"content {prev.content.id!r} is not allowed now"}
                    keep = None

        if not allowed:  # every arm removed (a policy without a hold arm): hold, with the reasons
            return Decision(
                event_id=event_id, policy=policy.name, person_key=key, decided_at=now,
                closes_at=now + spec.reward.window, model_version=version, mode="fallback", arm=HOLD_ARM,
                probability=1.0, send_at=None, channel=None, allowed=[], probabilities=[], context=context,
                history=hist | {"fatigue_contacts": fatigue_contacts},
                removed=verdict.removed, consistency_key=consistency_key)
        if self._in_holdout(policy, key):
            mode = "holdout"
            if spec.learner.holdout_policy == "fallback" and policy.arm_index[spec.learner.fallback_arm] in allowed:
                pmf = np.array([1.0 if i == policy.arm_index[spec.learner.fallback_arm] else 0.0 for i in allowed])
            else:
                pmf = np.full(len(allowed), 1.0 / len(allowed))
        else:
            pmf = None
            if model is not None:
                try:
                    pmf = model.predict(shared_line(context, hist), allowed)
                except (RuntimeError, ValueError) as exc:  # a broken model must not stop decisions
                    log.error("policy %s: model version %s failed to score: %s", policy.name, version, exc)
            if pmf is None:
                mode = "fallback"
                fb = policy.arm_index[spec.learner.fallback_arm]
                pmf = (np.array([1.0 if i == fb else 0.0 for i in allowed]) if fb in allowed
                       else np.full(len(allowed), 1.0 / len(allowed)))
            else:
                mode = None
        if keep is not None and mode != "holdout":
            # the same content, on the channel and timing the model prefers among its allowed arms
            mask = np.array([1.0 if i in keep else 0.0 for i in allowed])
            kept = pmf * mask
            pmf = kept / kept.sum() if kept.sum() > 0 else mask / mask.sum()
            mode = "consistent"
        probs = pmf.tolist()
        pos = _sample(probs, _uniform_draw(event_id))
        if mode is None:
            mode = "exploit" if probs[pos] >= max(probs) * (1 - 1e-4) else "explore"
        arm = policy.arms[allowed[pos]]
        ids = policy.arm_ids
        return Decision(
            event_id=event_id, policy=policy.name, person_key=key, decided_at=now,
            closes_at=now + spec.reward.window, model_version=version, mode=mode, arm=arm.id,
            probability=probs[pos], send_at=None if arm.hold else verdict.send_at[arm.id],
            channel=arm.channel, allowed=[ids[i] for i in allowed],
            probabilities=probs, context=context,
            history=hist | {"fatigue_contacts": fatigue_contacts},
            removed=verdict.removed,  # (code, detail) pairs, shared between arms: read only
            consistency_key=consistency_key,
        )

    @staticmethod
    def _in_holdout(policy: Policy, key: str) -> bool:
        share = policy.spec.learner.holdout_share
        if share <= 0:
            return False
        digest = hashlib.blake2b(f"{policy.name}:{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < share

    def render(self, policy: Policy, d: Decision, verdict: guardrails.Verdict | None = None) -> dict:
        arm = policy.arms[policy.arm_index[d.arm]] if d.arm in policy.arm_index else None
        reasons, groups = _removed_summary(d.removed)
        favourite = None
        if d.allowed:
            top = max(range(len(d.probabilities)), key=d.probabilities.__getitem__)
            favourite = {"arm": d.allowed[top], "probability": d.probabilities[top]}
        if d.mode == "fallback":
            why = ("no usable model, or no arm allowed: the policy's fallback was served" if d.allowed
                   else "every arm was removed by a guardrail: nothing is sent")
        else:
            why = _WHY[d.mode]
        explanation = {
            "summary": why,
            "decided_at": guardrails.to_rfc3339(d.decided_at),
            "allowed_count": len(d.allowed),
            "model_favourite": favourite,
            "removed": groups,
            "history": d.history,
        }
        if verdict is not None:
            explanation["timezone"] = verdict.timezone
            if verdict.moved:
                explanation["moved_out_of_quiet_hours"] = verdict.moved_text()
        if d.history.get("dropped_features"):
            explanation["dropped_features"] = d.history["dropped_features"]
        return {
            "event_id": d.event_id,
            "policy": d.policy,
            "model_version": d.model_version,
            "mode": d.mode,
            "action": {
                "arm": d.arm,
                "content": arm.content.id if arm and arm.content else None,
                "channel": d.channel,
                "timing": arm.timing.name if arm and arm.timing else None,
                "send_at": guardrails.to_rfc3339(d.send_at),
                "hold": d.channel is None,
            },
            "probability": d.probability,
            "removed": {"count": len(d.removed), "reasons": reasons},
            "explanation": explanation,
        }

    # outcomes -------------------------------------------------------------------------------

    def record_outcome(self, event_id: str, req: OutcomeInput) -> dict:
        d = self.store.decision(event_id)
        if d is None:
            raise NotFound(f"no decision with event id {event_id!r}", "event_id")
        policy = self.policy(d.policy)
        if req.type not in policy.outcome_types:
            raise BadRequest(f"{req.type!r} is not an outcome type of policy {policy.name!r} "
                             f"(it knows: {', '.join(policy.outcome_types)})", "type")
        now = self._now(req.timestamp)
        at = req.timestamp if req.timestamp is not None else now
        if at < d.decided_at:
            raise BadRequest("the outcome's timestamp is before its decision was made", "timestamp")
        counted = at <= d.closes_at and d.learned_version is None
        outcome = Outcome(event_id=event_id, type=req.type, value=req.value, at=at,
                          outcome_id=req.outcome_id, received_at=now, counted=counted)
        # explicit signals act at once, in the outcome's own transaction: an unsubscribe withdraws
        # consent for the decision's channel and starts its cooldown; a complaint starts the
        # every-channel cooldown; an engagement ends a run of contacts without engagement
        signal = None
        if req.type == "unsubscribe" and d.channel is not None:
            signal = ("unsubscribe", d.channel)
        elif req.type == "complaint":
            signal = ("complaint", None)
        try:
            fresh = self.store.add_outcome(outcome, d.person_key, signal, req.type in policy.engagement_types)
        except OutcomeConflict as exc:
            raise Conflict(str(exc), "outcome_id") from None
        return {"event_id": event_id, "outcome_id": req.outcome_id, "type": req.type, "value": req.value,
                "accepted": True, "duplicate": not fresh, "counted": counted if fresh else None,
                "note": None if counted or not fresh else
                "stored, but it arrived after the decision's reward window closed and does not change its reward"}

    # reads ----------------------------------------------------------------------------------

    def event(self, event_id: str) -> dict:
        d = self.store.decision(event_id)
        if d is None:
            raise NotFound(f"no decision with event id {event_id!r}", "event_id")
        policy = self.policy(d.policy)
        outcomes = self.store.outcomes(event_id)
        now = self.clock.now()
        if d.learned_version is not None:
            status, reward = "learned", d.reward
        elif now >= d.closes_at:
            status, reward = "final", decision_reward(policy, d, outcomes)
        else:
            status, reward = "pending", None
        body = self.render(policy, d)
        body.update({
            "status": status,
            "reward": reward,
            "context": d.context,
            "reward_window_closes_at": guardrails.to_rfc3339(d.closes_at),
            "learned_in_version": d.learned_version,
            "outcomes": [{"type": o.type, "value": o.value, "outcome_id": o.outcome_id,
                          "at": guardrails.to_rfc3339(o.at), "counted": o.counted} for o in outcomes],
            "allowed": [{"arm": a, "probability": p} for a, p in zip(d.allowed, d.probabilities)],
            "removed_arms": {a: [{"reason": r[0], "detail": r[1]} for r in rs] for a, rs in d.removed.items()},
        })
        return body

    def set_consent(self, user_id: str, channels: dict[str, bool], source: str | None,
                    timestamp: float | None) -> dict:
        now = self._now(timestamp)
        key = self.store.person_key(user_id)
        self.store.set_consent(key, channels, source, now)
        return self.person(user_id)

    def person(self, user_id: str) -> dict:
        """A person's state: consent (with the history and source of every change), preferences,
        recent contacts, active cooldowns and suppression, as the guardrails see them now."""
        key = self.store.person_key(user_id)
        now = self.clock.now()
        history = self.store.consent_history(key)
        current: dict[str, bool] = {}
        for h in history:
            current[h["channel"]] = bool(h["granted"])
        row = self.store.person_row(key) or {}
        since = now - max(self._lookback.values(), default=7 * 86400.0)
        cooldowns = []
        for s in self.store.signals(key):
            for p in self.policies.values():
                c = p.spec.guardrails.cooldown
                length = c.unsubscribe if s["kind"] == "unsubscribe" else c.complaint
                if length and s["at"] + length > now:
                    cooldowns.append({"policy": p.name, "kind": s["kind"], "channel": s["channel"] or "*",
                                      "since": guardrails.to_rfc3339(s["at"]),
                                      "until": guardrails.to_rfc3339(s["at"] + length)})
        return {
            "user_id": user_id,
            "consent": current,
            "consent_history": [{"channel": h["channel"], "granted": bool(h["granted"]), "source": h["source"],
                                 "at": guardrails.to_rfc3339(h["at"])} for h in history],
            "preferences": json.loads(row["preferences"]) if row.get("preferences") else {},
            "preferences_updated_at": guardrails.to_rfc3339(row.get("preferences_at")),
            "contacts": [{"channel": c["channel"], "at": guardrails.to_rfc3339(c["at"]), "policy": c["policy"],
                          "event_id": c["event_id"]} for c in self.store.contacts(key, since)],
            "cooldowns": cooldowns,
            "contacts_without_engagement": row.get("unengaged", 0),
            "last_engaged_at": guardrails.to_rfc3339(row.get("last_engaged_at")),
        }

    def set_preferences(self, user_id: str, preferences: dict, timestamp: float | None) -> dict:
        now = self._now(timestamp)
        key = self.store.person_key(user_id)
        self.store.set_preferences(key, preferences, now)
        return self.person(user_id)

    def person_decisions(self, user_id: str, limit: int = 20) -> dict:
        """Recent decisions for a person: what was chosen, what was removed and why."""
        key = self.store.person_key(user_id)
        out = []
        for d in self.store.person_decisions(key, limit):
            policy = self.policies.get(d.policy)
            body = self.render(policy, d) if policy else {"event_id": d.event_id, "policy": d.policy, "arm": d.arm}
            body["removed_arms"] = {a: [{"reason": r[0], "detail": r[1]} for r in rs] for a, rs in d.removed.items()}
            out.append(body)
        return {"user_id": user_id, "decisions": out}

    def erase(self, user_id: str) -> dict:
        key = self.store.person_key(user_id)
        counts = self.store.erase_person(key)
        return {"user_id": user_id, "erased": True, "deleted": counts}

    def set_arm_state(self, policy_name: str, target: str, status: str, valid_from: float | None,
                      valid_until: float | None, reason: str | None) -> dict:
        policy = self.policy(policy_name)
        if target not in policy.arm_index and target not in policy.content_index:
            raise NotFound(f"{target!r} is neither an arm nor a content of policy {policy.name!r}", "arm")
        if target == HOLD_ARM:
            raise BadRequest("the hold arm (send nothing) is always available and cannot be switched off", "arm")
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            raise BadRequest("valid_until must be after valid_from", "valid_until")
        self.store.set_arm_state(policy.name, target, status, valid_from, valid_until, reason, self.clock.now())
        return self.arm_state(policy_name, target)

    def arm_state(self, policy_name: str, target: str) -> dict:
        policy = self.policy(policy_name)
        st = self.store.arm_states(policy.name).get(target) or {"status": "active"}
        arms = [target] if target in policy.arm_index else [
            a.id for a in policy.arms if a.content is not None and a.content.id == target]
        return {"policy": policy.name, "target": target, "kind": "arm" if target in policy.arm_index else "content",
                "arms": arms, "status": st["status"], "valid_from": guardrails.to_rfc3339(st.get("valid_from")),
                "valid_until": guardrails.to_rfc3339(st.get("valid_until")), "reason": st.get("reason"),
                "updated_at": guardrails.to_rfc3339(st.get("updated_at"))}

    def ensure_models(self) -> None:
        """Give every policy an initial (untrained) model version if it has none."""
        for policy in self.policies.values():
            if self.store.active_version(policy.name) is None:
                model = new_model(policy)
                self.store.ensure_initial_version(policy.name, model.to_bytes(), policy.spec.learner.vw_args,
                                                  self.clock.now())
                model.close()
