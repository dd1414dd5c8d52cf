"""Batch decide: many decide requests of one policy, answered in order, written in one store
transaction (`Store.commit_decisions`), with the same decisions single decides would give.

    1 each request is prepared as a single decide's (a Problem in its place when it is invalid);
      a request id seen before, in the store or earlier in the batch, answers as a repeat does
    2 every person's state is read in one statement (with the widest look-back any request needs)
    3 the requests are decided in order; each sees the contacts, the suppression count, the
      budget spent and the consistency keys of the decisions before it in the batch, so caps, the
      minimum gap, the daily budget and consistency hold within the batch exactly as they do
      between single decides
    4 the decisions are committed in one transaction, which re-checks each person's state as it
      was read (the marker, once per person) and the daily budget
    5 if anything changed meanwhile (another worker decided for one of the people, a request id
      was claimed elsewhere), nothing was written: the requests are decided again one by one by
      the single decide, whose retries are exact under any concurrency

Every random draw derives from a decision's event id, so a batch gives the decisions the same
requests would get one by one with the same event ids (tests/test_batch.py holds the two
together)."""
from __future__ import annotations

from dataclasses import replace

from service.errors import Conflict, Problem
from service.policy import Policy
from service.store import Decision, DuplicateRequest, PersonState, RequestClaim

# DecisionEngine, DecideInput and Ask (service/decision/engine.py) are named in annotations only:
# the engine imports this module, which must not import it back.

MAX_BATCH = 1000  # requests in one batch (POST /v1/policies/<policy>/decide/batch)


class _Overlay:
    """What the batch's earlier decisions changed, as later requests must see it."""

    def __init__(self) -> None:
        self.contacts: dict[str, list[tuple[str, float]]] = {}  # person key -> (channel, at)
        self.spent: dict[str, int] = {}                          # budget day -> sends
        self.consistent: dict[tuple[str, str], tuple[str, str, float]] = {}  # (key, ck) -> event, arm, at

    def view(self, person: PersonState, ask: Ask, lookback: float, signal_lookback: float) -> PersonState:
        """The person's state for one request: what was read, narrowed to the request's own
        look-back, plus the batch's earlier sends to them."""
        since, ssince = ask.now - lookback, ask.now - signal_lookback
        added = self.contacts.get(person.key, [])
        contacts = sorted([c for c in person.contacts if c[1] >= since] + [c for c in added if c[1] >= since],
                          key=lambda c: c[1])
        return replace(person, contacts=contacts, unengaged=person.unengaged + len(added),
                       signals=[s for s in person.signals if s[2] >= ssince],
                       budget_used=person.budget_used + self.spent.get(ask.day, 0))

    def add(self, d: Decision, ask: Ask) -> None:
        if d.channel is not None:
            self.contacts.setdefault(d.person_key, []).append((d.channel, d.send_at))
            if ask.day is not None:
                self.spent[ask.day] = self.spent.get(ask.day, 0) + 1
        if d.consistency_key is not None:
            self.consistent[(d.person_key, d.consistency_key)] = (d.event_id, d.arm, d.decided_at)


def decide_batch(engine: DecisionEngine, policy: Policy, reqs: list[DecideInput | Problem]) -> list[dict | Problem]:
    out: list[dict | Problem | None] = [None] * len(reqs)
    asks: dict[int, Ask] = {}
    for i, req in enumerate(reqs):
        if isinstance(req, Problem):
            out[i] = req
            continue
        try:
            asks[i] = engine.prepare(policy, req)
        except Problem as p:
            out[i] = p
    repeats = _repeats(engine, asks, out)
    try:
        written = _commit_together(engine, policy, asks, out)
    except DuplicateRequest:
        written = False
    if not written:  # something changed meanwhile: one by one, as single decides
        for i, ask in asks.items():
            try:
                out[i] = engine.decide(policy.name, ask.req)
            except Problem as p:
                out[i] = p
    for i, j in repeats.items():  # a request id repeated within the batch: the earlier answer
        out[i] = out[j]
    return out


def _repeats(engine: DecisionEngine, asks: dict[int, Ask], out: list) -> dict[int, int]:
    """Answer the requests whose id was used before (in the store: its answer; a Conflict when
    it was another request) and take them out of `asks`; a request id used earlier in the batch
    is answered with that request's answer (returned: index -> earlier index)."""
    seen: dict[str, int] = {}
    within: dict[int, int] = {}
    for i in list(asks):
        ask = asks[i]
        if ask.digest is None:
            continue
        rid = ask.req.request_id
        if rid in seen:
            j = seen[rid]
            if asks[j].digest != ask.digest:
                out[i] = Conflict(f"request id {rid!r} was used for a different request earlier in this batch "
                                  f"(request {j}); a retry must repeat its request exactly", "request_id")
            else:
                within[i] = j
            del asks[i]
            continue
        try:
            earlier = engine.repeat(rid, ask.digest, ask.now)
        except Problem as p:
            out[i] = p
            del asks[i]
            continue
        if earlier is not None:
            out[i] = earlier
            del asks[i]
        else:
            seen[rid] = i
    return within


def _commit_together(engine: DecisionEngine, policy: Policy, asks: dict[int, Ask], out: list) -> bool:
    """Decide every prepared request in order and commit them all in one transaction; False
    (nothing written, `out` untouched) when a person's state or the budget changed meanwhile."""
    if not asks:
        return True
    lookback, signal_lookback = engine.lookbacks(policy)
    first = min(ask.now for ask in asks.values())
    states = engine.store.people_states([ask.key for ask in asks.values()], first - lookback, policy.name,
                                        first - signal_lookback, [ask.day for ask in asks.values()])
    overlay = _Overlay()
    checked: set[str] = set()
    batch: list[tuple[Decision, tuple | None, tuple[str, int] | None, RequestClaim | None]] = []
    answers: dict[int, dict] = {}
    for i, ask in asks.items():
        read = states[(ask.key, ask.day)]
        consistent = _consistent(engine, policy, ask, overlay)
        decision, answer, claim = engine.decision(policy, ask, overlay.view(read, ask, lookback, signal_lookback),
                                                  consistent)
        # a person's state is re-checked once, before the batch's first write for them
        batch.append((decision, read.marker if ask.key not in checked else None, ask.budget, claim))
        checked.add(ask.key)
        overlay.add(decision, ask)
        answers[i] = answer
    if not engine.store.commit_decisions(batch):
        return False
    for decision, *_ in batch:
        engine.observe(policy, decision)
    for i, answer in answers.items():
        out[i] = answer
    return True


def _consistent(engine: DecisionEngine, policy: Policy, ask: Ask, overlay: _Overlay) -> tuple[str, str] | None:
    ck = ask.req.consistency_key
    if ck is None:
        return None
    mine = overlay.consistent.get((ask.key, ck))
    if mine is not None and mine[2] >= ask.now - policy.spec.consistency.ttl:
        return mine[0], mine[1]
    return engine.consistent(policy, ask)
