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
from typing import Callable, Iterable

import numpy as np

from models.featurize import action_line, flatten_features, shared_line
from service.clock import Clock, request_time
from service.decision import guardrails
from service.decision.explain import scored_mode
from service.decision.modelcache import VersionCache
from service.decision.sampling import sample, uniform_draw
from service.errors import BadRequest, Conflict, NotFound
from service.metrics import DECISIONS, REMOVED
from service.policy import HOLD_ARM, Policy
from service.policy.personalizer import ACTIVATE, REWARD, ServiceSettings, served_pmf
from service.store import Decision, Outcome, OutcomeConflict, PersonState, Store
from service.store.records import dumps

SLOT = "#slot:"
ATTEMPTS = 20  # tries when the person's state keeps changing under a Rank (as decide does)
PERSON = "user_id"  # the context feature that names a person
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
                 new_id: Callable[[], str], observers: Iterable[Callable[[Policy, Decision], None]] = ()):
        self.store, self._policy, self.clock, self.models, self.new_id = store, policy, clock, models, new_id
        self.observers = tuple(observers)  # told of every logged event (the shadow candidate scores it)

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
        for _ in range(ATTEMPTS):
            d, marker = self._decide(event_id, req, req.context, allowed, baseline=allowed[0].id)
            d.history["personalizer"]["excluded"] = [a.id for a in req.actions if a.id in set(req.excluded)]
            if self._commit(d, marker):
                return self._ranking(d)
        raise Conflict("the person's state kept changing while ranking; retry the request", "contextFeatures")

    def rank_slots(self, req: RankInput) -> dict:
        """A multi-slot Rank: {eventId, slots: [{id, rewardActionId}]}, each slot choosing among
        the actions the slots before it left. Each slot is logged on its own (a slot whose
        person's state changed meanwhile is ranked again)."""
        event_id = req.event_id or self.new_id()
        slots = req.slots or []
        first = self._repeat(f"{event_id}{SLOT}{slots[0].id}", req) if slots else None
        if first is not None:
            return {"eventId": event_id, "slots": [
                {"id": s.id, "rewardActionId": _shown(self._slot_decision(event_id, s.id))} for s in slots]}
        taken: set[str] = set()
        chosen = []
        for i, slot in enumerate(slots):
            allowed = [a for a in req.actions if a.id not in taken and a.id not in set(slot.excluded)]
            if not allowed:
                raise BadRequest(f"slot {slot.id!r} has no action left to rank: the slots before it took "
                                 "or excluded every one", f"slots[{i}]")
            context = req.context + [{"slot": {"id": slot.id}}] + slot.features
            baseline = slot.baseline if slot.baseline in {a.id for a in allowed} else allowed[0].id
            for _ in range(ATTEMPTS):
                d, marker = self._decide(f"{event_id}{SLOT}{slot.id}", req, context, allowed, baseline)
                d.history["personalizer"]["slot"] = slot.id
                if self._commit(d, marker):
                    break
            else:
                raise Conflict("the person's state kept changing while ranking; retry the request", "contextFeatures")
            taken.add(d.arm)
            chosen.append({"id": slot.id, "rewardActionId": _shown(d)})
        return {"eventId": event_id, "slots": chosen}

    def _guard(self, person_id: str | None, features: dict[str, dict], now: float
               ) -> tuple[PersonState | None, dict[str, list], dict[str, str | None]]:
        """Tactful's guardrails, where the context names a person and an action declares a
        channel or a topic: the person's state, the removed actions with their reasons, and each
        action's channel."""
        declared = [(aid, _text(f.get("channel")), _text(f.get("topic"))) for aid, f in features.items()]
        channels = {aid: ch for aid, ch, _ in declared}
        if person_id is None or not any(ch or topic for _, ch, topic in declared):
            return None, {}, channels
        policy = self.policy
        person = self.store.person_state(self.store.person_key(person_id), now - guardrails.lookback(policy),
                                         policy.name, now - guardrails.signal_lookback(policy))
        reasons = guardrails.rank_reasons(policy, person, now, declared)
        return person, {aid: rs for aid, rs in reasons.items() if rs}, channels

    def _decide(self, event_id: str, req: RankInput, context_groups: list[dict], allowed: list[Action],
                baseline: str) -> tuple[Decision, tuple | None]:
        policy, settings = self.policy, self.settings()
        now = request_time(self.clock, None)
        person_id, context_groups = _named_person(context_groups)
        context = flatten_features(context_groups)
        features = {a.id: flatten_features(a.features) for a in allowed}
        person, removed, channels = self._guard(person_id, features, now)
        allowed = [a for a in allowed if a.id not in removed]
        history = {"personalizer": {
            "actions": [{"id": a.id, "features": features[a.id]} for a in allowed],
            "deferred": req.deferred, "digest": req.digest(), "learning_mode": settings.learning_mode,
            "baseline": baseline if baseline not in removed else (allowed[0].id if allowed else None),
            "default_reward": settings.default_reward, "aggregation": settings.reward_aggregation,
            "event": req.event_id}}
        logged = dict(event_id=event_id, policy=policy.name, person_key=person.key if person else None,
                      decided_at=now, closes_at=now + settings.reward_wait, context=context, history=history,
                      removed=removed)
        if not allowed:  # every action removed by a guardrail: nothing is shown
            return Decision(**logged, model_version=None, mode="fallback", arm=HOLD_ARM, probability=1.0,
                            send_at=None, channel=None, allowed=[], probabilities=[]), person.marker
        version, pmf, mode = self._score(policy, context, [action_line(a.id, features[a.id]) for a in allowed])
        ids = [a.id for a in allowed]
        if pmf is not None:  # Personalizer's exploration: the model's favourite, but explorationPercentage of the time any
            history["personalizer"]["model_choice"] = ids[int(np.argmax(pmf))]
            history["personalizer"]["exploration"] = settings.exploration
            pmf = served_pmf(pmf, settings.exploration)
        else:
            pmf = np.full(len(allowed), 1.0 / len(allowed))
        probs = [float(p) for p in pmf]
        if settings.learning_mode != "Online":  # Apprentice, LoggingOnly: the baseline is served
            pos, mode = ids.index(history["personalizer"]["baseline"]), "fallback"
            probs = [1.0 if i == pos else 0.0 for i in range(len(ids))]
        else:
            pos = sample(probs, uniform_draw(event_id))
            mode = mode or scored_mode(probs, pos)
        channel = channels[ids[pos]] if person else None  # a contact, shown now, where a guardrail applied
        return Decision(**logged, model_version=version, mode=mode, arm=ids[pos], probability=probs[pos],
                        send_at=now if channel else None, channel=channel, allowed=ids,
                        probabilities=probs), person.marker if person else None

    def _score(self, policy: Policy, context: dict, lines: list[str]) -> tuple[int | None, np.ndarray | None, str | None]:
        """The active version, its probabilities of the actions (None without a usable model)
        and the mode when the model could not score."""
        version, model = self.models.get(policy.name)
        if model is not None:
            try:
                return version, model.predict_lines(shared_line(context, {}), lines), None
            except (RuntimeError, ValueError):
                pass
        return version, None, "fallback"

    def _commit(self, d: Decision, marker: tuple | None) -> bool:
        """Log the event (and reserve its contact when a guardrail applied): False when the
        person's state changed since it was read."""
        try:
            committed = self.store.commit_decision(d, marker)
        except Exception as exc:  # noqa: BLE001 -- each backend's own unique-key error
            if self.store.decision(d.event_id) is not None:
                raise Conflict(f"event {d.event_id!r} was ranked meanwhile by another request", "eventId") from exc
            raise
        if committed:
            for observe in self.observers:
                observe(self.policy, d)
            DECISIONS.labels(d.policy, d.mode, "true" if d.arm not in d.allowed else "false").inc()
            for reasons in d.removed.values():
                for code, _ in reasons:
                    REMOVED.labels(d.policy, code).inc()
        return committed

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
        left_out = list(d.removed) + d.history["personalizer"].get("excluded", [])
        order = ([d.arm] if d.arm in logged else []) + sorted((a for a in d.allowed if a != d.arm),
                                                              key=lambda a: -logged[a])
        return {"eventId": d.history["personalizer"].get("event") or d.event_id,
                "ranking": [{"id": a, "probability": logged[a]} for a in order]
                + [{"id": a, "probability": 0.0} for a in left_out],
                "rewardActionId": _shown(d)}

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


def _shown(d: Decision) -> str | None:
    """The action an event shows: None when guardrails removed every one."""
    return d.arm if d.arm in d.allowed else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _named_person(groups: list[dict]) -> tuple[str | None, list[dict]]:
    """The person a context names (a `user_id` in one of its feature objects), and the context
    without it: a person's id is never a model feature, nor logged in clear (the store keys it)."""
    person = None
    out = []
    for g in groups:
        if PERSON in g:
            person = person or _text(g[PERSON])
            g = {k: v for k, v in g.items() if k != PERSON}
        out.append(g)
    return person, out
