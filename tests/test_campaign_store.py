"""What campaign tools need of the store, on both backends (a real SQLite file and a real
PostgreSQL schema): a request id claimed with its decision, once, also when two workers commit the
same request at the same moment; delivery reports that release exactly what a decision reserved
(its contact, its share of the daily budget, its count towards suppression), once."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.store import DeliveryConflict, DuplicateRequest, Outcome, RequestClaim, open_store
from service.store import pg_schema
from service.store.schema import SCHEMA_VERSION
from test_store import T, WEEK, count, decision, read

DAY = 86400.0


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def claim(request_id: str, at: float = T, body: str = "hash") -> RequestClaim:
    return RequestClaim(request_id, body, '{"event_id": "answer"}', at - DAY)


def test_a_request_id_is_claimed_with_its_decision_and_only_once(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker, claim=claim("r1"))
    assert store.request("r1", T - DAY) == {"policy": "lifecycle", "event_id": "e1", "request_hash": "hash",
                                            "response": '{"event_id": "answer"}', "at": T}
    with pytest.raises(DuplicateRequest):  # the same id again: nothing of the second decision is written
        store.commit_decision(decision(key, "e2"), read(store, key).marker, claim=claim("r1"))
    assert count(store, "decisions") == 1 and count(store, "contacts") == 1
    assert read(store, key).unengaged == 1


def test_a_request_id_older_than_a_day_is_a_new_request(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker, claim=claim("r1"))
    later = T + DAY + 1
    assert store.request("r1", later - DAY) is None
    assert store.commit_decision(decision(key, "e2", at=later), read(store, key, later).marker,
                                 claim=claim("r1", later, "other"))
    assert store.request("r1", later - DAY)["event_id"] == "e2"


def test_a_duplicate_request_undoes_its_budget_too(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker, ("2026-05-28", 5), claim("r1"))
    with pytest.raises(DuplicateRequest):
        store.commit_decision(decision(key, "e2"), read(store, key).marker, ("2026-05-28", 5), claim("r1"))
    assert store.query("SELECT used FROM budget")[0][0] == 1


def test_two_workers_committing_one_request_log_one_decision(store_url):
    """As two replicas retrying the same decide at the same moment: each decided on the same state,
    each commits with the same request id, on its own connection; exactly one decision is logged."""
    stores = [open_store(store_url) for _ in range(8)]
    try:
        key = stores[0].person_key("u1")
        marker = read(stores[0], key).marker
        barrier = threading.Barrier(len(stores))

        def attempt(i: int) -> str:
            barrier.wait()
            try:
                ok = stores[i].commit_decision(decision(key, f"e{i}"), marker, claim=claim("r1"))
                return "logged" if ok else "stale"
            except DuplicateRequest:
                return "duplicate"

        with ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(attempt, range(len(stores))))
        assert results.count("logged") == 1
        assert count(stores[0], "decisions") == 1 and count(stores[0], "contacts") == 1
        winner = stores[0].request("r1", T - DAY)["event_id"]
        assert stores[0].decision(winner) is not None
    finally:
        for s in stores:
            s.close()


def test_not_sent_releases_the_contact_budget_and_suppression_count(store):
    key = store.person_key("u1")
    d = decision(key, "e1")
    d.history["budget_day"] = "2026-05-28"
    assert store.commit_decision(d, read(store, key).marker, ("2026-05-28", 1))
    assert read(store, key).contacts and read(store, key).unengaged == 1
    assert store.query("SELECT used FROM budget")[0][0] == 1
    assert store.record_delivery("e1", key, "not_sent", "suppressed by the tool", T + 1, T, "2026-05-28", "lifecycle")
    state = read(store, key)
    assert state.contacts == [] and state.unengaged == 0
    assert store.query("SELECT used FROM budget")[0][0] == 0
    assert store.decision("e1").delivery == "not_sent" and not store.decision("e1").delivered
    # a repeat changes nothing (the budget is not released twice)
    assert not store.record_delivery("e1", key, "not_sent", None, T + 2, T, "2026-05-28", "lifecycle")
    assert store.query("SELECT used FROM budget")[0][0] == 0
    assert [r["status"] for r in store.deliveries("e1")] == ["not_sent"]


def test_a_release_keeps_other_contacts_and_a_run_an_engagement_ended(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker)
    store.add_outcome(Outcome("e1", "click", 1.0, T + 30), key, None, engaged=True)
    assert read(store, key).unengaged == 0
    assert store.commit_decision(decision(key, "e2", at=T + 3600), read(store, key).marker)
    assert read(store, key).unengaged == 1
    # e1 bounced: its contact goes; the run since the click (e2) stays counted
    assert store.record_delivery("e1", key, "bounced", None, T + 7200, T, None, "lifecycle")
    state = read(store, key, T + 7200)
    assert state.contacts == [("email", T + 3660)] and state.unengaged == 1


def test_sent_may_become_bounced_but_not_sent_is_final(store):
    key = store.person_key("u1")
    for e in ("e1", "e2"):
        assert store.commit_decision(decision(key, e), read(store, key).marker)
    assert store.record_delivery("e1", key, "sent", None, T + 1, T, None, "lifecycle")
    assert count(store, "contacts") == 2  # sent releases nothing
    assert store.record_delivery("e1", key, "bounced", "mailbox full", T + 2, T, None, "lifecycle")
    assert count(store, "contacts") == 1
    with pytest.raises(DeliveryConflict, match="'bounced' already"):
        store.record_delivery("e1", key, "sent", None, T + 3, T, None, "lifecycle")
    assert store.record_delivery("e2", key, "not_sent", None, T + 1, T, None, "lifecycle")
    with pytest.raises(DeliveryConflict):
        store.record_delivery("e2", key, "failed", None, T + 3, T, None, "lifecycle")
    assert count(store, "contacts") == 0
    assert [(r["status"], r["released"]) for r in store.deliveries("e1")] == [("sent", 0), ("bounced", 1)]


def test_a_release_and_a_decision_for_one_person_serialise(store_url):
    """Releases and decisions racing for one person with a cap of one contact a week: every
    decision commits on a state read before or after each release, so the person never holds
    more than one unreleased contact."""
    stores = [open_store(store_url) for _ in range(4)]
    try:
        key = stores[0].person_key("u1")
        assert stores[0].commit_decision(decision(key, "e0"), read(stores[0], key).marker)
        held: list[int] = []
        done = threading.Event()

        def decide(i: int) -> int:
            logged, n = 0, 0
            while not done.is_set() or n == 0:
                n += 1
                state = read(stores[i], key)
                if state.contacts:  # the cap: at most one contact a week
                    continue
                if stores[i].commit_decision(decision(key, f"e{i}-{n}"), state.marker):
                    logged += 1
                    # releases only remove contacts: from here on this one is the only one
                    held.append(count_live(stores[i], key))
            return logged

        def release() -> None:
            released, deadline = 0, time.monotonic() + 60
            while released < 10 and time.monotonic() < deadline:  # ten contacts the deciders made, released as they appear
                rows = stores[3].query("SELECT event_id FROM contacts WHERE person_key=?", (key,))
                for (event_id,) in rows:
                    released += stores[3].record_delivery(event_id, key, "not_sent", None, T + 1, T, None,
                                                          "lifecycle")
            done.set()

        with ThreadPoolExecutor(4) as pool:
            releasing = pool.submit(release)
            logged = list(pool.map(decide, range(3)))
            releasing.result()
        assert sum(logged) >= 9 and len(held) == sum(logged)  # each release freed the cap for one
        assert max(held) <= 1 and count_live(stores[0], key) <= 1
    finally:
        for s in stores:
            s.close()


def count_live(store, key: str) -> int:
    return store.query("SELECT count(*) FROM contacts WHERE person_key=? AND at>=?", (key, T - WEEK))[0][0]


def test_a_version_4_store_gains_request_ids_and_delivery_reports(store_url):
    store = open_store(store_url)
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker)
    with store.write() as conn:  # as a Tactful of schema version 4 left it
        conn.execute("DROP TABLE requests")
        conn.execute("DROP TABLE deliveries")
        conn.execute("ALTER TABLE decisions DROP COLUMN delivery")
        conn.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
        if store.kind == "postgresql":  # and version 4's decision function, which v5 replaces
            conn.execute("DROP FUNCTION tactful_commit_decision")
            conn.execute(pg_schema._COMMIT_DECISION)
    assert store.migrate() == (4, SCHEMA_VERSION)
    if store.kind == "postgresql":
        assert store.query("SELECT count(*) FROM pg_proc WHERE proname='tactful_commit_decision'"
                           " AND pronamespace = current_schema()::regnamespace")[0][0] == 1
    assert store.decision("e1").delivery is None
    assert store.record_delivery("e1", key, "failed", None, T + 1, T, None, "lifecycle")
    assert store.commit_decision(decision(key, "e2"), read(store, key).marker, claim=claim("r1"))
    assert store.request("r1", T - DAY)["event_id"] == "e2"
    store.close()
