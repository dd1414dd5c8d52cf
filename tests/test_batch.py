"""Batch decide (issue 16): many decides in one request and one store transaction, with the same
decisions single decides give for the same people at the same moments -- guardrails within the
batch, the probabilities logged, the contacts reserved, request ids -- on both backends; an
invalid request gets its own problem in its place; a batch over the limit is a 413."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backends import BACKENDS, store_address
from service.clock import ManualClock
from service.decision.batch import MAX_BATCH
from service.decision.engine import DecideInput
from service.errors import Conflict
from service.policy import load_policies
from service.runtime import build_engine, numbered_ids
from service.store import open_store

POLICIES = Path(__file__).resolve().parent.parent / "examples" / "policies"
START = 1_780_000_000.0  # 2026-05-28
CHANNELS = {"email": True, "push": True, "sms": True}
PEOPLE = [f"u{i}" for i in range(5)]
# every person asked about several times in one batch, at the same moment
ASKS = [DecideInput(PEOPLE[i % 5], {"segment": f"s{i % 3}", "tenure_days": i}) for i in range(40)]
URL = "/v1/policies/lifecycle/decide/batch"


def make_engine(url: str):
    clock = ManualClock(START)
    store = open_store(url, secret="batch-test")  # one secret: the same person keys, the same holdout
    engine = build_engine(store, load_policies(POLICIES), clock, new_id=numbered_ids("ev", 6), refresh_seconds=0)
    engine.ensure_models()
    for user in PEOPLE:
        engine.people.set_consent(user, CHANNELS, "test", None)
    return engine


def logged(engine, event_id: str) -> dict:
    d = engine.store.decision(event_id)
    return {k: v for k, v in vars(d).items() if k != "seq"}


@pytest.mark.parametrize("backend", [pytest.param(b, marks=pytest.mark.slow) if b == "postgresql" else b
                                     for b in BACKENDS])  # on PostgreSQL about 2 s
def test_a_batch_gives_the_decisions_single_decides_give(backend, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "batch").mkdir()
    with store_address(backend, tmp_path / "one") as one_url, store_address(backend, tmp_path / "batch") as batch_url:
        one, batch = make_engine(one_url), make_engine(batch_url)
        try:
            singles = [one.decide("lifecycle", ask) for ask in ASKS]
            together = batch.decide_batch("lifecycle", list(ASKS))
            assert together == singles  # the same event ids, arms, probabilities, send times, reasons
            for answer in singles:  # every probability logged, every removal, the history
                assert logged(batch, answer["event_id"]) == logged(one, answer["event_id"])
            for user in PEOPLE:  # the same contacts reserved
                assert batch.people.person(user)["contacts"] == one.people.person(user)["contacts"]
            # the guardrails held within the batch: after a send, a person's later asks lose more arms
            for k, user in enumerate(PEOPLE):
                mine = together[k::5]
                if not mine[0]["action"]["hold"]:
                    assert mine[1]["removed"]["count"] > mine[0]["removed"]["count"], (user, mine[:2])
            assert any(not a["action"]["hold"] for a in together[:5])
        finally:
            one.store.close()
            batch.store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_request_ids_in_a_batch_are_idempotent_one_by_one(backend, tmp_path):
    with store_address(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            asks = [DecideInput(u, {"segment": "s"}, request_id=f"campaign-7:{u}") for u in PEOPLE]
            first = engine.decide_batch("lifecycle", asks)
            count = engine.store.decision_count()
            again = engine.decide_batch("lifecycle", asks[::-1] + [asks[0]])
            assert again == first[::-1] + [first[0]]  # each the answer it got, whatever its place
            assert engine.store.decision_count() == count
            # a single decide with the same id is the same decision too
            assert engine.decide("lifecycle", asks[2]) == first[2]
            # the same id for another request: a 409 in its place, the others decided
            other = DecideInput("u0", {"segment": "t"}, request_id="campaign-7:u0")
            fresh = DecideInput("u1", {"segment": "s"}, request_id="campaign-8:u1")
            out = engine.decide_batch("lifecycle", [other, fresh, fresh])
            assert isinstance(out[0], Conflict) and out[0].field == "request_id"
            assert out[1] == out[2] and "event_id" in out[1]  # repeated within the batch: one decision
            assert engine.store.decision_count() == count + 1
        finally:
            engine.store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_is_written_whole_or_not_at_all(backend, tmp_path):
    """The store's side: a marker that no longer holds writes none of the batch."""
    with store_address(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            policy = engine.policy("lifecycle")
            asks = [engine.prepare(policy, DecideInput(u, {"segment": "s"})) for u in PEOPLE[:3]]
            lookback, signals = engine.lookbacks(policy)
            reads = [engine.store.person_state(a.key, a.now - lookback, "lifecycle", a.now - signals) for a in asks]
            made = [engine.decision(policy, a, p, None)[0] for a, p in zip(asks, reads)]
            engine.people.set_consent("u2", {"email": False}, "test", None)  # u2's state changes meanwhile
            count = engine.store.decision_count()
            assert not engine.store.commit_decisions([(d, p.marker, None, None) for d, p in zip(made, reads)])
            assert engine.store.decision_count() == count
            assert engine.store.commit_decisions([(d, p.marker, None, None) for d, p in zip(made[:2], reads)])
            assert engine.store.decision_count() == count + 2
        finally:
            engine.store.close()


def test_an_invalid_request_gets_its_problem_in_its_place(client):
    assert client.put("/v1/users/u1/consent", json={"channels": CHANNELS}).status_code == 200
    ok = {"user_id": "u1", "context": {"segment": "s"}}
    r = client.post(URL, json={"requests": [ok, {"user_id": ""}, ok | {"context": {"age": 3, "segment": "s"}},
                                            "not an object", ok | {"user_id": "u2"}]})
    assert r.status_code == 200, r.json
    out = r.json["decisions"]
    assert r.json["policy"] == "lifecycle" and len(out) == 5
    assert "event_id" in out[0] and "event_id" in out[4]
    assert [(p["index"], p["status"], p["field"]) for p in out[1:4]] == [
        (1, 400, "user_id"), (2, 400, "context.age"), (3, 400, "body")]
    # the same problem document a single decide answers, with the index
    single = client.post("/v1/policies/lifecycle/decide", json={"user_id": ""})
    assert single.status_code == 400 and {k: v for k, v in out[1].items() if k != "index"} == single.json
    event = client.get(f"/v1/events/{out[0]['event_id']}").json
    assert event["action"] == out[0]["action"] and event["probability"] == out[0]["probability"]


def test_a_batch_over_the_limit_is_refused_naming_it(client):
    ask = {"user_id": "u1", "context": {"segment": "s"}}
    r = client.post(URL, json={"requests": [ask] * (MAX_BATCH + 1)})
    assert r.status_code == 413 and r.mimetype == "application/problem+json"
    assert r.json["field"] == "requests" and str(MAX_BATCH) in r.json["detail"]
    assert r.json["errors"][0]["limit"] == MAX_BATCH
    assert client.get("/v1/users/u1/decisions").json["decisions"] == []  # nothing decided


@pytest.mark.parametrize("body,field", [
    ({}, "requests"), ({"requests": []}, "requests"), ({"requests": {"user_id": "u1"}}, "requests"),
    ({"requests": [], "policy": "x"}, "policy"), ([{"user_id": "u1"}], "body")])
def test_a_batch_that_is_not_a_list_of_requests_is_a_400(client, body, field):
    r = client.post(URL, json=body)
    assert r.status_code == 400 and r.json["field"] == field, r.json


def test_a_batch_takes_request_ids_not_the_idempotency_header(client):
    r = client.post(URL, json={"requests": [{"user_id": "u1", "context": {"segment": "s"}}]},
                    headers={"Idempotency-Key": "k1"})
    assert r.status_code == 400 and r.json["field"] == "Idempotency-Key"


def test_an_unknown_policy_is_a_404_for_the_whole_batch(client):
    r = client.post("/v1/policies/nope/decide/batch", json={"requests": [{"user_id": "u1"}]})
    assert r.status_code == 404 and r.json["field"] == "policy"


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_and_single_decides_racing_for_one_person_send_once(backend, tmp_path):
    """Check-and-reserve stays atomic with batches: batches and single decides for the same
    person, at once from several threads, pass a cap that allows one send exactly once."""
    with store_address(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            engine.people.set_consent("carol", {"push": True, "email": False, "sms": False, "in_app": False},
                                      "test", None)
            carol = DecideInput("carol", {"segment": "s"})
            others = [DecideInput(f"o{i}", {"segment": "s"}) for i in range(5)]

            def batch(i: int) -> list:
                return engine.decide_batch("lifecycle", [carol, *others, carol, carol])

            def single(i: int) -> list:
                return [engine.decide("lifecycle", carol) for _ in range(4)]

            with ThreadPoolExecutor(max_workers=6) as pool:
                answers = [a for out in pool.map(lambda i: (batch if i % 2 else single)(i), range(12)) for a in out]
            mine = [a for a in answers if "event_id" in a]
            assert len(mine) == len(answers) == 6 * 8 + 6 * 4
            contacts = engine.people.person("carol")["contacts"]
            assert len(contacts) == 1 and contacts[0]["channel"] == "push", contacts
        finally:
            engine.store.close()
