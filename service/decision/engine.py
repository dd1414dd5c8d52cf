"""The decision path, top to bottom, and what happens when an outcome arrives.

    decide: validate the context (context.py) -> the person's state (the store) -> guardrails
            (guardrails.py) -> holdout / consistency / fallback -> featurize (models/featurize.py)
            -> score (the model cache, modelcache.py) -> sample (sampling.py) -> log the decision
            and reserve the contact in one transaction (the store) -> explain (explain.py)

Each step is a call into the module named for it. Nothing here knows about HTTP: the Flask app
turns requests into calls and `Problem`s into problem+json. Build an engine with
`service.runtime.build_engine`, the one way every caller (the app, the simulator, the scripts,
the tests) gets the same engine.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from models.featurize import history_features, shared_line
from service.clock import Clock, request_time
from service.decision import guardrails
from service.decision.arms import ArmSwitches, PolicyPause
from service.decision.context import eligible_sets, validate_context
from service.decision.explain import render, scored_mode
from service.decision.localtime import budget_day
from service.decision.modelcache import VersionCache
from service.decision.people import People
from service.decision.sampling import in_holdout, sample, uniform_draw
from service.errors import BadRequest, Conflict, NotFound
from service.policy import HOLD_ARM, Policy
from service.policy.bandit import decision_reward, ensure_active_version
from service.policy.stored import remember
from service.store import (REQUEST_TTL, UNDELIVERED, Decision, DeliveryConflict, DuplicateRequest, Outcome,
                           OutcomeConflict, PersonState, RequestClaim, Store)
from service.store.records import dumps, loads
from service.times import to_rfc3339

log = logging.getLogger("tactful.engine")


@dataclass
class DecideInput:
    user_id: str
    context: dict
    consistency_key: str | None = None
    timestamp: float | None = None
    request_id: str | None = None       # idempotency key: a repeat within a day is the same decision
    contents: list[str] | None = None   # the eligible set: only these contents ...
    channels: list[str] | None = None   # ... and channels (None: every one)

    def digest(self, policy: str) -> str:
        """What a repeat of this request must match (the request id aside)."""
        return hashlib.sha256(dumps([policy, self.user_id, self.context, self.consistency_key, self.timestamp,
                                     self.contents, self.channels]).encode()).hexdigest()


@dataclass
class DeliveryInput:
    status: str                          # sent, not_sent, bounced or failed
    reason: str | None = None
    timestamp: float | None = None


@dataclass
class OutcomeInput:
    type: str
    value: float = 1.0
    outcome_id: str | None = None
    timestamp: float | None = None


Observer = Callable[[Policy, Decision], None]  # told of every logged decision (shadow scoring)


class DecisionEngine:
    """Decides and records outcomes for a set of policies. Everything it depends on is passed in:
    the store, the policies, the clock, the models it scores with, the source of event ids (every
    random draw derives from the event id) and the observers told of each logged decision."""

    def __init__(self, store: Store, policies: Mapping[str, Policy], clock: Clock, models: VersionCache,
                 new_id: Callable[[], str], observers: Iterable[Observer] = (), max_attempts: int = 20):
        self.store = store
        self.policies = policies
        self.clock = clock
        self.models = models
        self.new_id = new_id
        self.observers = tuple(observers)
        self.max_attempts = max_attempts
        self._lookback = {name: guardrails.lookback(p) for name, p in policies.items()}
        self._signal_lookback = {name: guardrails.signal_lookback(p) for name, p in policies.items()}
        self._rules = {name: guardrails.RuleTables.of(p) for name, p in policies.items()}
        self.people = People(store, policies, clock, max(self._lookback.values(), default=7 * 86400.0))
        self.arms = ArmSwitches(store, self.policy, clock)
        self.pause = PolicyPause(store, self.policy, clock)

    def use_policy(self, policy: Policy) -> None:
        """Serve a reloaded version of one of the engine's policies from the next decision on
        (service/policy/reload.py): its rule tables and look-backs are computed again, and the
        model caches, which share the engine's policy mapping, rebuild its arms on their next use."""
        if policy.name not in self.policies:
            raise NotFound(f"no policy named {policy.name!r} is served here", "policy")
        self.policies[policy.name] = policy
        self._lookback[policy.name] = guardrails.lookback(policy)
        self._signal_lookback[policy.name] = guardrails.signal_lookback(policy)
        self._rules[policy.name] = guardrails.RuleTables.of(policy)
        self.people.lookback = max(self._lookback.values())

    def policy(self, name: str) -> Policy:
        try:
            return self.policies[name]
        except KeyError:
            raise NotFound(f"no policy named {name!r} (known: {', '.join(sorted(self.policies))})",
                           "policy") from None

    # decide ---------------------------------------------------------------------------------

    def decide(self, policy_name: str, req: DecideInput) -> dict:
        policy = self.policy(policy_name)
        if policy.spec.kind == "personalizer":
            raise Conflict(f"policy {policy.name!r} ranks the actions each request brings: call POST "
                           "/personalizer/rank (docs/personalizer.md)", "policy")
        dropped: list[str] = []
        context = validate_context(policy, req.context, dropped)
        eligible = eligible_sets(policy, req.contents, req.channels)
        now = request_time(self.clock, req.timestamp)
        digest = req.digest(policy.name) if req.request_id is not None else None
        if digest is not None and (earlier := self._repeat(req.request_id, digest, now)) is not None:
            return earlier
        key = self.store.person_key(req.user_id)
        budget = policy.spec.guardrails.daily_budget
        day = budget_day(policy, now) if budget is not None else None
        consistent = None
        if req.consistency_key is not None:
            consistent = self.store.consistent_arm(key, policy.name, req.consistency_key,
                                                   now - policy.spec.consistency.ttl)
        for _ in range(self.max_attempts):
            person = self.store.person_state(key, now - self._lookback[policy.name], policy.name,
                                             now - self._signal_lookback[policy.name], day)
            verdict = guardrails.evaluate(policy, person, now, rules=self._rules[policy.name], eligible=eligible)
            decision = self._choose(policy, key, context, person, verdict, now, req.consistency_key, consistent)
            if dropped:
                decision.history["dropped_features"] = dropped
            if day is not None and decision.channel is not None:
                decision.history["budget_day"] = day  # what a delivery report that it never went out releases
            answer = render(policy, decision, verdict)
            claim = None if digest is None else RequestClaim(req.request_id, digest, dumps(answer), now - REQUEST_TTL)
            try:
                committed = self.store.commit_decision(decision, person.marker,
                                                       (day, budget) if day is not None else None, claim)
            except DuplicateRequest:  # the same request, decided meanwhile by another worker or replica
                if (earlier := self._repeat(req.request_id, digest, now)) is not None:
                    return earlier
                continue
            if committed:
                for observe in self.observers:
                    observe(policy, decision)
                return answer
        raise Conflict("the person's state kept changing while deciding; retry the request", "user_id")

    def _repeat(self, request_id: str, digest: str, now: float) -> dict | None:
        """The answer a request id got within the idempotency window; a Conflict when it was
        another request."""
        earlier = self.store.request(request_id, now - REQUEST_TTL)
        if earlier is None:
            return None
        if earlier["request_hash"] != digest:
            raise Conflict(f"request id {request_id!r} was used for a different request (decision "
                           f"{earlier['event_id']}); a retry must repeat its request exactly", "request_id")
        return loads(earlier["response"])

    def _choose(self, policy: Policy, key: str, context: dict, person: PersonState, verdict: guardrails.Verdict,
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
        keep, hist = _kept_content(policy, allowed, consistent, hist)
        logged = dict(event_id=event_id, policy=policy.name, person_key=key, decided_at=now,
                      closes_at=now + spec.reward.window, model_version=version, context=context,
                      history=hist | {"fatigue_contacts": fatigue_contacts},
                      removed=verdict.removed,  # (code, detail) pairs, shared between arms: read only
                      consistency_key=consistency_key)
        if not allowed:  # every arm removed (a policy without a hold arm): hold, with the reasons
            return Decision(**logged, mode="fallback", arm=HOLD_ARM, probability=1.0, send_at=None, channel=None,
                            allowed=[], probabilities=[])
        pmf, mode = self._score(policy, key, context, hist, allowed, version, model)
        if keep is not None and mode != "holdout":
            # the same content, on the channel and timing the model prefers among its allowed arms
            mask = np.array([1.0 if i in keep else 0.0 for i in allowed])
            kept = pmf * mask
            pmf = kept / kept.sum() if kept.sum() > 0 else mask / mask.sum()
            mode = "consistent"
        probs = pmf.tolist()
        pos = sample(probs, uniform_draw(event_id))
        if mode is None:
            mode = scored_mode(probs, pos)
        arm = policy.arms[allowed[pos]]
        ids = policy.arm_ids
        return Decision(**logged, mode=mode, arm=arm.id, probability=probs[pos],
                        send_at=None if arm.hold else verdict.send_at[arm.id], channel=arm.channel,
                        allowed=[ids[i] for i in allowed], probabilities=probs)

    def _score(self, policy: Policy, key: str, context: dict, hist: dict, allowed: list[int],
               version: int | None, model) -> tuple[np.ndarray, str | None]:
        """The probabilities of the allowed arms, and the mode when it is already known: the
        holdout group's baseline, the model's distribution, or the fallback when no model scores."""
        learner = policy.spec.learner
        if in_holdout(policy.name, key, learner.holdout_share):
            fb = policy.arm_index[learner.fallback_arm]
            if learner.holdout_policy == "fallback" and fb in allowed:
                return np.array([1.0 if i == fb else 0.0 for i in allowed]), "holdout"
            return np.full(len(allowed), 1.0 / len(allowed)), "holdout"
        if model is not None:
            try:
                return model.predict(shared_line(context, hist), allowed), None
            except (RuntimeError, ValueError) as exc:  # a broken model must not stop decisions
                log.error("policy %s: model version %s failed to score: %s", policy.name, version, exc)
        fb = policy.arm_index[learner.fallback_arm]
        pmf = (np.array([1.0 if i == fb else 0.0 for i in allowed]) if fb in allowed
               else np.full(len(allowed), 1.0 / len(allowed)))
        return pmf, "fallback"

    # outcomes -------------------------------------------------------------------------------

    def record_outcome(self, event_id: str, req: OutcomeInput) -> dict:
        d = self.store.decision(event_id)
        if d is None:
            raise NotFound(f"no decision with event id {event_id!r}", "event_id")
        policy = self.policy(d.policy)
        if req.type not in policy.outcome_types:
            raise BadRequest(f"{req.type!r} is not an outcome type of policy {policy.name!r} "
                             f"(it knows: {', '.join(policy.outcome_types)})", "type")
        now = request_time(self.clock, req.timestamp)
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

    def record_delivery(self, event_id: str, req: DeliveryInput) -> dict:
        """What became of a decision's message. not_sent, bounced and failed release what the
        decision reserved (its contact, its share of the daily budget) and keep it from being
        learned as a contact; the decision stays, for audit and evaluation."""
        d = self.store.decision(event_id)
        if d is None:
            raise NotFound(f"no decision with event id {event_id!r}", "event_id")
        self.policy(d.policy)
        if d.channel is None:
            raise Conflict(f"decision {event_id} was a hold: it sent nothing, so there is no delivery to report",
                           "event_id")
        now = request_time(self.clock, req.timestamp)
        at = req.timestamp if req.timestamp is not None else now
        if at < d.decided_at:
            raise BadRequest("the delivery's timestamp is before its decision was made", "timestamp")
        try:
            fresh = self.store.record_delivery(event_id, d.person_key, req.status, req.reason, at, d.decided_at,
                                               d.history.get("budget_day"), d.policy)
        except DeliveryConflict as exc:
            raise Conflict(str(exc), "status") from None
        released = fresh and req.status in UNDELIVERED
        note = None
        if released and d.learned_version is not None:
            note = (f"released, but it was learned (in version {d.learned_version}) before this report: "
                    "report deliveries before the reward window closes")
        return {"event_id": event_id, "status": req.status, "reason": req.reason, "accepted": True,
                "duplicate": not fresh, "released": released, "note": note}

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
        body = render(policy, d)
        body.update({
            "status": status,
            "reward": reward,
            "context": d.context,
            "reward_window_closes_at": to_rfc3339(d.closes_at),
            "learned_in_version": d.learned_version,
            "outcomes": [{"type": o.type, "value": o.value, "outcome_id": o.outcome_id,
                          "at": to_rfc3339(o.at), "counted": o.counted} for o in outcomes],
            "allowed": [{"arm": a, "probability": p} for a, p in zip(d.allowed, d.probabilities)],
            "removed_arms": {a: [{"reason": r[0], "detail": r[1]} for r in rs] for a, rs in d.removed.items()},
            "delivery": {"status": d.delivery, "reports": [
                {"status": r["status"], "reason": r["reason"], "at": to_rfc3339(r["at"]), "released": bool(r["released"])}
                for r in self.store.deliveries(event_id)]} if d.channel is not None else None,
        })
        return body

    def ensure_models(self) -> None:
        """Record the policies in the store (service/policy/stored.py) and give every policy an
        initial (untrained) model version if it has none."""
        at = self.clock.known()
        remember(self.store, self.policies, at)
        for policy in self.policies.values():
            ensure_active_version(self.store, policy, at)


def _kept_content(policy: Policy, allowed: list[int], consistent: tuple[str, str] | None,
                  hist: dict) -> tuple[list[int] | None, dict]:
    """A consistency key names an earlier decision whose content must be kept, if still allowed:
    the allowed arms of that content (None when there is none to keep), and the history noting
    it."""
    if consistent is None:
        return None, hist
    prev = policy.arms[policy.arm_index[consistent[1]]] if consistent[1] in policy.arm_index else None
    if prev is None or prev.content is None:
        return None, hist
    keep = [i for i in allowed if policy.arms[i].content is not None and policy.arms[i].content.id == prev.content.id]
    hist = hist | {"consistent_with": consistent[0]}
    if not keep:
        return None, hist | {"consistency_broken": f"content {prev.content.id!r} is not allowed now"}
    return keep, hist
