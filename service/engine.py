"""The decision path, top to bottom, and what happens when an outcome arrives.

    decide: validate -> person state -> guardrails -> holdout / fallback -> featurize -> score
            -> sample -> log the decision and reserve the contact (one transaction)

Each step is a call into the module named for it. Nothing here knows about HTTP: the Flask app
turns requests into calls and `Problem`s into problem+json.
"""
from __future__ import annotations

import hashlib
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

def validate_context(policy: Policy, context: Mapping[str, object]) -> dict:
    features = policy.spec.features
    errors = []
    clean: dict[str, object] = {}
    for name, value in context.items():
        spec = features.get(name)
        if spec is None:
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
    if spec.min is not None and value < spec.min:
        return f"must be at least {spec.min:g}"
    if spec.max is not None and value > spec.max:
        return f"must be at most {spec.max:g}"
    return None


def _group_removed(removed: dict[str, list]) -> list[dict]:
    """Removed arms grouped by rule: [{reason, detail, arms}], the largest group first."""
    groups: dict[tuple[str, str], int] = {}
    for reasons in removed.values():
        for code, detail in reasons:
            groups[(code, detail)] = groups.get((code, detail), 0) + 1
    return [{"reason": c, "detail": d, "arms": n}
            for (c, d), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))]


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


def _sample(pmf: np.ndarray, u: float) -> int:
    cdf = np.cumsum(pmf)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(pmf) - 1))


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
        context = validate_context(policy, req.context)
        now = self._now(req.timestamp)
        key = self.store.person_key(req.user_id)
        for _ in range(self.max_attempts):
            person = self.store.person_state(key, now - self._lookback[policy.name])
            verdict = guardrails.evaluate(policy, person, now)
            decision = self._choose(policy, key, context, person, verdict, now, req.consistency_key)
            if self.store.commit_decision(decision, person.marker):
                for observe in self.observers:
                    observe(policy, decision)
                return self.render(policy, decision, verdict)
        raise Conflict("the person's state kept changing while deciding; retry the request", "user_id")

    def _choose(self, policy: Policy, key: str, context: dict, person, verdict: guardrails.Verdict,
                now: float, consistency_key: str | None) -> Decision:
        event_id = self.new_id()
        allowed = verdict.allowed
        spec = policy.spec
        past = [at for _, at in person.contacts if at <= now]
        hist = history_features(sum(1 for at in past if at > now - 7 * 86400),
                                (now - max(past)) / 3600.0 if past else None)
        fatigue_contacts = sum(1 for _, at in person.contacts if at > now - spec.reward.fatigue.window)
        version, model = self.models.get(policy.name)

        if not allowed:  # every arm removed (a policy without a hold arm): hold, with the reasons
            return Decision(
                event_id=event_id, policy=policy.name, person_key=key, decided_at=now,
                closes_at=now + spec.reward.window, model_version=version, mode="fallback", arm=HOLD_ARM,
                probability=1.0, send_at=None, channel=None, allowed=[], probabilities=[], context=context,
                history=hist | {"fatigue_contacts": fatigue_contacts},
                removed={a: [list(r) for r in rs] for a, rs in verdict.removed.items()},
                consistency_key=consistency_key)
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
        pos = _sample(pmf, _uniform_draw(event_id))
        if mode is None:
            mode = "exploit" if pmf[pos] >= pmf.max() * (1 - 1e-4) else "explore"
        arm = policy.arms[allowed[pos]]
        return Decision(
            event_id=event_id, policy=policy.name, person_key=key, decided_at=now,
            closes_at=now + spec.reward.window, model_version=version, mode=mode, arm=arm.id,
            probability=float(pmf[pos]), send_at=None if arm.hold else verdict.send_at[arm.timing.name],
            channel=arm.channel, allowed=[policy.arms[i].id for i in allowed],
            probabilities=[float(p) for p in pmf], context=context,
            history=hist | {"fatigue_contacts": fatigue_contacts},
            removed={a: [list(r) for r in rs] for a, rs in verdict.removed.items()},
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
        reasons: dict[str, int] = {}
        for rs in d.removed.values():
            for code in {r[0] for r in rs}:
                reasons[code] = reasons.get(code, 0) + 1
        favourite = ({"arm": d.allowed[int(np.argmax(d.probabilities))], "probability": max(d.probabilities)}
                     if d.allowed else None)
        why = {
            "explore": "sampled an arm other than the model's favourite, to keep learning",
            "exploit": "the model's favourite among the allowed arms",
            "holdout": "this person is in the policy's holdout group and gets the baseline",
            "fallback": ("no usable model, or no arm allowed: the policy's fallback was served" if d.allowed
                         else "every arm was removed by a guardrail: nothing is sent"),
            "consistent": "kept the content of an earlier decision with the same consistency key",
        }[d.mode]
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
            "explanation": {
                "summary": why,
                "decided_at": guardrails.to_rfc3339(d.decided_at),
                "allowed_count": len(d.allowed),
                "model_favourite": favourite,
                "removed": _group_removed(d.removed),
                "history": d.history,
            },
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
        try:
            fresh = self.store.add_outcome(outcome)
        except OutcomeConflict as exc:
            raise Conflict(str(exc), "outcome_id") from None
        if fresh and req.type == "unsubscribe" and d.channel is not None and d.person_key is not None:
            # explicit signals act at once: consent for that channel is gone before we answer
            self.store.set_consent(d.person_key, {d.channel: False}, f"unsubscribe:{event_id}", at)
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
        key = self.store.person_key(user_id)
        history = self.store.consent_history(key)
        current: dict[str, bool] = {}
        for h in history:
            current[h["channel"]] = bool(h["granted"])
        return {"user_id": user_id, "consent": current,
                "consent_history": [{"channel": h["channel"], "granted": bool(h["granted"]), "source": h["source"],
                                     "at": guardrails.to_rfc3339(h["at"])} for h in history]}

    def ensure_models(self) -> None:
        """Give every policy an initial (untrained) model version if it has none."""
        for policy in self.policies.values():
            if self.store.active_version(policy.name) is None:
                model = new_model(policy)
                self.store.ensure_initial_version(policy.name, model.to_bytes(), policy.spec.learner.vw_args,
                                                  self.clock.now())
                model.close()
