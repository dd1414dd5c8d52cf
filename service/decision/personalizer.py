"""Rank, Reward and Activate: Azure Personalizer's decision calls on a Tactful policy of
`kind = "personalizer"`, whose actions arrive with each request (docs/personalizer.md).

    rank: the context's and each action's features (flattened, models/featurize.py) -> the
          active model scores the non-excluded actions (VW text, since they are the request's,
          not a catalogue's) -> exploration and the learning mode -> the draw, from the event id
          -> the event logged with its actions and features and the reward settings in force, so
          the learner rebuilds its VW examples from the log alone (service/learning/learner.py)

An event is a Tactful decision: `GET /v1/events/{eventId}` explains it, export and evaluation
read it, the online learner learns it. A multi-slot event is one decision per slot, with event id
`{eventId}#slot:{slotId}`: each slot ranks the actions the slots before it did not take.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.featurize import action_line, flatten_features, shared_line
from service.clock import Clock, request_time
from service.decision.explain import scored_mode
from service.decision.modelcache import VersionCache
from service.decision.sampling import sample, uniform_draw
from service.errors import BadRequest, Conflict, NotFound
from service.policy import Policy
from service.policy.personalizer import ACTIVATE, REWARD, ServiceSettings
from service.store import Decision, Outcome, OutcomeConflict, Store
from service.store.records import dumps

SLOT = "#slot:"
SETTINGS = ("personalizer", "service", "settings")  # where a loop's service configuration is kept


@dataclass
class Action:
    id: str
    features: list[dict] = field(default_factory=list)


@dataclass
class Slot:
    id: str
    baseline: str | None = None
    features: list[dict] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


@dataclass
class RankInput:
    context: list[dict]
    actions: list[Action]
    excluded: list[str] = field(default_factory=list)
    event_id: str | None = None
    deferred: bool = False
    slots: list[Slot] | None = None  # multi-slot

    def digest(self) -> str:
        return hashlib.sha256(dumps([self.context, [[a.id, a.features] for a in self.actions], self.excluded,
                                     self.deferred, [[s.id, s.baseline, s.features, s.excluded]
                                                     for s in self.slots or ()]]).encode()).hexdigest()


class RankLoop:
    """Ranks per-request actions for one personalizer policy, and records rewards and
    activations. Built from the engine's parts (service/api/personalizer.py)."""

    def __init__(self, store: Store, policy: Callable[[], Policy], clock: Clock, models: VersionCache,
                 new_id: Callable[[], str]):
        self.store, self._policy, self.clock, self.models, self.new_id = store, policy, clock, models, new_id

    @property
    def policy(self) -> Policy:
        return self._policy()

    def settings(self) -> ServiceSettings:
        return ServiceSettings.from_stored(self.store.personalizer_document(self.policy.name, *SETTINGS[1:]))

    # rank -----------------------------------------------------------------------------------

    def rank(self, req: RankInput) -> dict:
        """A single-slot Rank: {eventId, ranking, rewardActionId}."""
        event_id = req.event_id or self.new_id()
        earlier = self._repeat(event_id, req)
        if earlier is not None:
            return self._ranking(earlier)
        allowed = [a for a in req.actions if a.id not in set(req.excluded)]
        if not allowed:
            raise BadRequest("every action is excluded: nothing is left to rank", "excludedActions")
        d = self._decide(event_id, req, req.context, allowed, baseline=allowed[0].id)
        d.history["personalizer"]["excluded"] = [a.id for a in req.actions if a.id in set(req.excluded)]
        self._commit(d)
        return self._ranking(d)

    def rank_slots(self, req: RankInput) -> dict:
        """A multi-slot Rank: {eventId, slots: [{id, rewardActionId}]}, each slot choosing among
        the actions the slots before it left."""
        event_id = req.event_id or self.new_id()
        slots = req.slots or []
        first = self._repeat(f"{event_id}{SLOT}{slots[0].id}", req) if slots else None
        if first is not None:
            return {"eventId": event_id, "slots": [
                {"id": s.id, "rewardActionId": self._slot_decision(event_id, s.id).arm} for s in slots]}
        taken: set[str] = set()
        chosen = []
        decisions = []
        for i, slot in enumerate(slots):
            allowed = [a for a in req.actions if a.id not in taken and a.id not in set(slot.excluded)]
            if not allowed:
                raise BadRequest(f"slot {slot.id!r} has no action left to rank: the slots before it took "
                                 "or excluded every one", f"slots[{i}]")
            context = req.context + [{"slot": {"id": slot.id}}] + slot.features
            baseline = slot.baseline if slot.baseline in {a.id for a in allowed} else allowed[0].id
            d = self._decide(f"{event_id}{SLOT}{slot.id}", req, context, allowed, baseline)
            d.history["personalizer"]["slot"] = slot.id
            taken.add(d.arm)
            decisions.append(d)
            chosen.append({"id": slot.id, "rewardActionId": d.arm})
        for d in decisions:
            self._commit(d)
        return {"eventId": event_id, "slots": chosen}

    def _decide(self, event_id: str, req: RankInput, context_groups: list[dict], allowed: list[Action],
                baseline: str) -> Decision:
        policy, settings = self.policy, self.settings()
        now = request_time(self.clock, None)
        context = flatten_features(context_groups)
        features = {a.id: flatten_features(a.features) for a in allowed}
        lines = [action_line(a.id, features[a.id]) for a in allowed]
        version, model = self.models.get(policy.name)
        pmf, mode = None, None
        if model is not None:
            try:
                pmf = model.predict_lines(shared_line(context, {}), lines)
            except (RuntimeError, ValueError):
                pmf = None
        ids = [a.id for a in allowed]
        if pmf is None:
            pmf, mode = np.full(len(allowed), 1.0 / len(allowed)), "fallback"
        else:  # Personalizer's exploration: the model's favourite, but explorationPercentage of the time any
            top = np.zeros(len(allowed))
            top[int(np.argmax(pmf))] = 1.0
            pmf = (1 - settings.exploration) * top + settings.exploration / len(allowed)
        probs = [float(p) for p in pmf]
        favourite = ids[int(np.argmax(pmf))]
        if settings.learning_mode != "Online":  # Apprentice, LoggingOnly: the baseline is served
            pos, mode = ids.index(baseline), "fallback"
            probs = [1.0 if i == pos else 0.0 for i in range(len(ids))]
        else:
            pos = sample(probs, uniform_draw(event_id))
            mode = mode or scored_mode(probs, pos)
        history = {"personalizer": {
            "actions": [{"id": a.id, "features": features[a.id]} for a in allowed],
            "deferred": req.deferred, "digest": req.digest(), "learning_mode": settings.learning_mode,
            "baseline": baseline, "model_choice": favourite, "default_reward": settings.default_reward,
            "aggregation": settings.reward_aggregation, "event": req.event_id}}
        return Decision(event_id=event_id, policy=policy.name, person_key=None, decided_at=now,
                        closes_at=now + settings.reward_wait, model_version=version, mode=mode, arm=ids[pos],
                        probability=probs[pos], send_at=None, channel=None, allowed=ids, probabilities=probs,
                        context=context, history=history, removed={})

    def _commit(self, d: Decision) -> None:
        try:
            self.store.commit_decision(d, None)
        except Exception as exc:  # the same event id logged meanwhile by another worker
            if self.store.decision(d.event_id) is not None:
                raise Conflict(f"event {d.event_id!r} was ranked meanwhile by another request", "eventId") from exc
            raise

    def _repeat(self, event_id: str, req: RankInput) -> Decision | None:
        """The event already ranked under this id (a client's retry), or None; a Conflict when the
        id is another policy's or another request's."""
        d = self.store.decision(event_id)
        if d is None:
            return None
        if d.policy != self.policy.name or d.history.get("personalizer", {}).get("digest") != req.digest():
            raise Conflict(f"event id {event_id!r} was used for a different request; a retry must repeat its "
                           "request exactly", "eventId")
        return d

    @staticmethod
    def _ranking(d: Decision) -> dict:
        logged = dict(zip(d.allowed, d.probabilities))
        excluded = d.history["personalizer"].get("excluded", [])
        order = [d.arm] + sorted((a for a in d.allowed if a != d.arm), key=lambda a: -logged[a])
        return {"eventId": d.history["personalizer"].get("event") or d.event_id,
                "ranking": [{"id": a, "probability": logged[a]} for a in order]
                + [{"id": a, "probability": 0.0} for a in excluded],
                "rewardActionId": d.arm}

    # reward, activate -----------------------------------------------------------------------

    def _event(self, event_id: str) -> Decision:
        d = self.store.decision(event_id)
        if d is None or d.policy != self.policy.name:
            raise NotFound(f"no event with id {event_id!r}", "eventId")
        return d

    def _slot_decision(self, event_id: str, slot_id: str) -> Decision:
        d = self.store.decision(f"{event_id}{SLOT}{slot_id}")
        if d is None or d.policy != self.policy.name:
            raise NotFound(f"no slot {slot_id!r} of event {event_id!r}", "slotId")
        return d

    def _record(self, d: Decision, kind: str, value: float) -> None:
        now = request_time(self.clock, None)
        counted = now <= d.closes_at and d.learned_version is None
        outcome = Outcome(event_id=d.event_id, type=kind, value=value, at=now, outcome_id=None,
                          received_at=now, counted=counted)
        try:
            self.store.add_outcome(outcome, None, None, False)
        except OutcomeConflict as exc:
            raise Conflict(str(exc), "eventId") from None

    def reward(self, event_id: str, value: float) -> None:
        self._record(self._event(event_id), REWARD, value)

    def activate(self, event_id: str) -> None:
        self._record(self._event(event_id), ACTIVATE, 1.0)

    def reward_slots(self, event_id: str, rewards: list[tuple[str, float]]) -> None:
        decisions = [self._slot_decision(event_id, slot) for slot, _ in rewards]
        for d, (_, value) in zip(decisions, rewards):
            self._record(d, REWARD, value)

    def activate_slots(self, event_id: str) -> None:
        decisions = self.store.decisions_with_prefix(self.policy.name, f"{event_id}{SLOT}")
        if not decisions:
            raise NotFound(f"no multi-slot event with id {event_id!r}", "eventId")
        for d in decisions:
            self._record(d, ACTIVATE, 1.0)
