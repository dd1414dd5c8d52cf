"""The store's contract, on both backends (a real SQLite file and a real PostgreSQL schema):
check-and-reserve (a decision is logged only if the person's state it was decided on is still the
state in the store, and logging it reserves its contact), and what every backend must do alike."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from backends import store_address
from conftest import POLICIES_DIR
from service.decision.modelcache import VersionCache
from service.policy import load_policy
from service.policy.bandit import new_model
from service.store import (AlreadyActive, Decision, NoSuchVersion, Outcome, OutcomeConflict, RequestClaim,
                           SchemaTooNew, Store, open_store)
from service.store.decisions import LEARNING_COLUMNS, decision_values
from service.store.records import loads
from service.store.postgres import _COMMIT, translate
from service.store.schema import SCHEMA_VERSION

T = 1_780_000_000.0
WEEK = 7 * 86400.0


def decision(key: str | None, event_id: str, channel: str | None = "email", at: float = T) -> Decision:
    return Decision(event_id=event_id, policy="lifecycle", person_key=key, decided_at=at, closes_at=at + 86400,
                    model_version=1, mode="exploit", arm="a" if channel else "hold", probability=0.5,
                    send_at=at + 60 if channel else None, channel=channel, allowed=["a", "hold"],
                    probabilities=[0.5, 0.5], context={"segment": "s"}, history={},
                    removed={"b": [("no_consent", "sms: needs an opt-in"), ("min_gap", "x")],
                             "c": [("no_consent", "sms: needs an opt-in")]})


def read(store: Store, key: str, at: float = T):
    return store.person_state(key, at - WEEK, "lifecycle", at - 90 * 86400)


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def count(store: Store, table: str) -> int:
    return store.query(f"SELECT count(*) FROM {table}")[0][0]


def test_a_send_reserves_its_contact_and_counts_towards_suppression(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker)
    state = read(store, key)
    assert state.contacts == [("email", T + 60)] and state.unengaged == 1
    assert store.query("SELECT event_id, policy FROM contacts")[0][:] == ("e1", "lifecycle")
    # a hold reserves nothing
    assert store.commit_decision(decision(key, "e2", channel=None), state.marker)
    assert count(store, "contacts") == 1 and read(store, key).unengaged == 1
    # removed arms and their reasons come back as they were logged
    assert store.decision("e1").removed == {a: [list(r) for r in rs] for a, rs in decision(key, "e1").removed.items()}


@pytest.mark.parametrize("change", ["contact", "consent", "signal", "preferences"])
def test_a_decision_made_on_a_stale_state_writes_nothing(store, change):
    key = store.person_key("u1")
    before = read(store, key)
    if change == "contact":  # another worker reserved a contact for the same person meanwhile
        assert store.commit_decision(decision(key, "other"), before.marker)
    elif change == "consent":
        store.set_consent(key, {"email": False}, "form", T)
    elif change == "signal":
        with store.write() as conn:
            conn.execute("INSERT INTO signals(person_key, kind, channel, at, event_id) VALUES (?,?,?,?,?)",
                         (key, "complaint", None, T, "x"))
    else:
        store.set_preferences(key, {"blocked_channels": ["email"]}, T)
    decisions, contacts = count(store, "decisions"), count(store, "contacts")
    assert not store.commit_decision(decision(key, "mine"), before.marker)
    assert (count(store, "decisions"), count(store, "contacts")) == (decisions, contacts)
    assert store.decision("mine") is None
    # decided again on the fresh state, it is logged
    assert store.commit_decision(decision(key, "mine"), read(store, key).marker)
    assert store.decision("mine") is not None


def test_another_persons_change_does_not_make_a_state_stale(store):
    key, other = store.person_key("u1"), store.person_key("u2")
    before = read(store, key)
    assert store.commit_decision(decision(other, "o1"), read(store, other).marker)
    store.set_consent(other, {"email": True}, "form", T)
    assert store.commit_decision(decision(key, "mine"), before.marker)


def test_contacts_that_left_the_look_back_do_not_make_a_state_stale(store):
    key = store.person_key("u1")
    old = decision(key, "old", at=T - 30 * 86400)
    assert store.commit_decision(old, read(store, key, T - 30 * 86400).marker)
    state = read(store, key)
    assert state.contacts == []  # a month ago: outside the week looked back on
    assert store.commit_decision(decision(key, "now"), state.marker)


def test_budget_is_checked_in_the_same_transaction(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker, ("2026-06-01", 1))
    # the day's one send is spent: the next send is refused, a hold still goes through
    assert not store.commit_decision(decision(store.person_key("u2"), "e2"), None, ("2026-06-01", 1))
    assert store.commit_decision(decision(store.person_key("u3"), "e3", channel=None), None, ("2026-06-01", 1))
    assert store.query("SELECT used FROM budget")[0][0] == 1


def test_many_peoples_states_read_at_once_are_each_persons_own(store):
    """A batch decide reads everyone's state in one statement: per person and budget day, the
    same state and marker as reading them one by one; people with nothing stored included, and
    for any number of people (the statement is padded to a power of two)."""
    keys = [store.person_key(f"u{i}") for i in range(7)]
    assert store.commit_decision(decision(keys[0], "e0", at=T - 3600), read(store, keys[0], T - 3600).marker,
                                 ("2026-06-01", 9))
    assert store.commit_decision(decision(keys[0], "e1", channel="sms"), read(store, keys[0]).marker)
    store.set_consent(keys[1], {"email": True, "sms": False}, "form", T - 60)
    store.set_consent(keys[1], {"email": False}, "form", T - 30)
    store.set_preferences(keys[2], {"blocked_channels": ["push"]}, T)
    with store.write() as conn:
        conn.execute("INSERT INTO signals(person_key, kind, channel, at, event_id) VALUES (?,?,?,?,?)",
                     (keys[3], "unsubscribe", "email", T - 100, "x"))
    store.set_arm_state("lifecycle", "win_back", "retired", None, None, "ended", T)
    days = ["2026-06-01", "2026-06-02", None]
    for n in (1, 2, 3, 7):
        many = store.people_states(keys[:n] + keys[:1], T - WEEK, "lifecycle", T - 90 * 86400, days)
        assert set(many) == {(k, d) for k in keys[:n] for d in days}
        for k in keys[:n]:
            for d in days:
                one = store.person_state(k, T - WEEK, "lifecycle", T - 90 * 86400, d)
                assert many[(k, d)] == one, (k, d)
    assert many[(keys[0], "2026-06-01")].budget_used == 1 and many[(keys[0], "2026-06-02")].budget_used == 0
    assert many[(keys[1], None)].consent == {"email": False, "sms": False}
    assert many[(keys[3], None)].signals and many[(keys[4], None)].arm_state["win_back"]["status"] == "retired"
    assert store.people_states([], T - WEEK, "lifecycle", T - 90 * 86400, days) == {}


# -- the rest of the contract: every backend answers alike ---------------------------------------

def outcome(event_id: str, type_: str = "click", value: float = 1.0, outcome_id: str | None = "o1") -> Outcome:
    return Outcome(event_id=event_id, type=type_, value=value, at=T + 10, outcome_id=outcome_id, received_at=T + 11)


def test_an_outcome_is_stored_once_and_a_different_repeat_is_refused(store):
    key = store.person_key("u1")
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker)
    assert store.add_outcome(outcome("e1"), key, engaged=True)
    assert not store.add_outcome(outcome("e1"), key, engaged=True)  # the retry is acknowledged, not counted
    with pytest.raises(OutcomeConflict):
        store.add_outcome(outcome("e1", value=2.0), key)
    assert [o.type for o in store.outcomes("e1")] == ["click"] and read(store, key).unengaged == 0
    # an unsubscribe records the signal and withdraws that channel's consent, in one transaction
    before = read(store, key).marker
    assert store.add_outcome(outcome("e1", "unsubscribe", 0.0, "o2"), key, signal=("unsubscribe", "email"))
    state = read(store, key)
    assert state.consent == {"email": False} and state.signals == [("unsubscribe", "email", T + 10)]
    assert state.marker != before
    assert store.outcomes_for(["e1", "none"]) == {"e1": store.outcomes("e1"), "none": []}


def test_model_versions_publish_activate_and_refuse(store):
    assert store.ensure_initial_version("p", b"m1", "--x", T) == 1
    assert store.ensure_initial_version("p", b"other", "--x", T) == 1  # once only
    assert store.model("p", 1)["model"] == b"m1" and store.active_version("p") == 1
    for i in range(3):
        d = decision(None, f"e{i}")
        d.policy = "p"
        assert store.commit_decision(d, None)
    seqs = [store.decision(f"e{i}").seq for i in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert store.publish_learned("p", 1, b"m2", "--x", T + 1, [(seqs[0], 0.5), (seqs[1], 1.0)], seqs[1], {}) == 2
    assert store.learner_cursor("p") == seqs[1] and store.decision("e0").learned_version == 2
    # a learner whose parent is no longer active publishes nothing
    assert store.publish_learned("p", 1, b"m3", "--x", T + 2, [(seqs[2], 0.0)], seqs[2], {}) is None
    # a decision learned twice is refused and the whole publish rolled back
    with pytest.raises(RuntimeError):
        store.publish_learned("p", 2, b"m3", "--x", T + 2, [(seqs[1], 0.0), (seqs[2], 0.0)], seqs[2], {})
    assert store.active_version("p") == 2 and store.decision("e2").learned_version is None
    assert store.add_version("p", b"m4", "--x", "import", T + 3, {"n_learned": 7}) == 3
    with pytest.raises(NoSuchVersion):
        store.activate("p", 9, "why", T + 4, watch=False)
    assert store.activate("p", 3, "candidate", T + 4, watch=True) == 2
    with pytest.raises(AlreadyActive):
        store.activate("p", 3, "again", T + 5, watch=False)
    assert store.open_guard_watch("p")["version"] == 3
    assert [a["version"] for a in store.activations("p")] == [3, 2, 1]
    store.add_evaluation("p", 3, {"value": 0.25}, T + 6)
    assert store.latest_evaluation("p", 3)["value"] == 0.25 and store.evaluation_counts("p") == {3: 1}
    store.set_shadow("p", 2, T + 7)
    store.add_shadow_decision("e0", "p", 2, "a", 0.5, [0.5, 0.5], T + 7)
    store.add_shadow_decision("e0", "p", 2, "a", 0.5, [0.5, 0.5], T + 7)  # a repeat is ignored
    assert store.shadow_version("p") == 2 and list(store.shadow_decisions("p")) == ["e0"]
    assert [v["version"] for v in store.versions("p")] == [1, 2, 3]


def test_the_learner_reads_closed_decisions_in_order(store):
    for i, closes in enumerate([T - 5, T - 4, T + 100, T - 3]):
        d = decision(None, f"e{i}")
        d.closes_at = closes
        assert store.commit_decision(d, None)
    closed = store.decisions_after("lifecycle", 0, 10, closed_by=T)
    assert [d.event_id for d in closed] == ["e0", "e1"]  # stops before the first still open
    # the learner's lean read of the same decisions: the columns it uses, JSON as the text stored
    rows = [dict(zip(LEARNING_COLUMNS, r)) for r in store.learning_rows("lifecycle", 0, 10, closed_by=T)]
    assert [r["event_id"] for r in rows] == ["e0", "e1"]
    assert [r["seq"] for r in rows] == [d.seq for d in closed]
    assert [(loads(r["allowed"]), loads(r["context"]), loads(r["history"])) for r in rows] == \
        [(d.allowed, d.context, d.history) for d in closed]
    assert [r[1] for r in store.learning_rows("lifecycle", rows[0]["seq"], 1, closed_by=T)] == ["e1"]
    assert [r[1] for r in store.learning_rows("lifecycle", 0, 10)] == ["e0", "e1", "e2", "e3"]
    assert [d.event_id for d in store.final_decisions("lifecycle", 0, T, None, None, 10)] == ["e0", "e1", "e3"]
    counts = store.policy_counts("lifecycle", T)
    assert (counts["decisions"], counts["pending"], counts["learned"]) == (4, 1, 0)


def test_imported_decisions_are_stored_once(store):
    ds = [decision(None, f"i{i}") for i in range(3)]
    store.import_logged(ds, [outcome("i0")])
    store.import_logged(ds, [outcome("i0")])
    assert store.decision_count() == 3 and len(store.outcomes("i0")) == 1


def test_the_lease_is_measured_by_the_stores_own_clock(store):
    """What the learner does: no `now` given, the backend's clock (PostgreSQL's server clock)."""
    assert store.acquire_lease("learner", "a", 10)
    assert not store.acquire_lease("learner", "b", 10)
    expires = store.query("SELECT expires_at FROM leases WHERE name='learner'")[0][0]
    assert abs(expires - (time.time() + 10)) < 5


def test_shared_sql_keeps_postgresql_casts():
    assert translate("SELECT now()::float8, x FROM t WHERE a=? AND b=:b AND c LIKE 'x%'") == \
        "SELECT now()::float8, x FROM t WHERE a=%s AND b=%(b)s AND c LIKE 'x%%'"


def test_the_lease_elects_one_holder_until_it_expires(store):
    assert store.acquire_lease("learner", "a", 10, T)
    assert not store.acquire_lease("learner", "b", 10, T + 5)
    assert store.acquire_lease("learner", "a", 10, T + 5)   # renewed
    assert store.acquire_lease("learner", "b", 10, T + 16)  # a stopped renewing
    store.release_lease("learner", "a")                      # not a's to release any more
    assert not store.acquire_lease("learner", "a", 10, T + 17)
    store.release_lease("learner", "b")
    assert store.acquire_lease("learner", "a", 10, T + 17)


def test_the_request_clock_only_moves_forward(store):
    assert store.clock_now() is None
    assert store.clock_advance(T) == T and store.clock_advance(T - 5) == T and store.clock_now() == T


def test_erasure_deletes_the_person_and_unlinks_their_decisions(store):
    key = store.person_key("u1")
    store.set_consent(key, {"email": True}, "form", T)
    store.set_preferences(key, {"blocked_channels": ["sms"]}, T)
    assert store.commit_decision(decision(key, "e1"), read(store, key).marker,
                                 claim=RequestClaim("r1", "hash", "{}", T - 86400))
    counts = store.erase_person(key)
    assert counts == {"consent": 1, "contacts": 1, "signals": 0, "people": 1, "requests": 1, "decisions_unlinked": 1}
    assert store.request("r1", T - 86400) is None
    assert store.decision("e1").person_key is None and read(store, key).consent == {}
    assert store.person_row(key) is None and store.consent_history(key) == []


def test_a_store_refuses_a_schema_newer_than_the_code(store_url):
    store = open_store(store_url)
    with store.write() as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    store.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store(store_url)


def test_opening_again_keeps_the_secret_and_the_data(store_url):
    first = open_store(store_url)
    key = first.person_key("u1")
    first.set_consent(key, {"email": True}, "form", T)
    first.close()
    again = open_store(store_url)
    assert again.person_key("u1") == key and again.schema_version() == SCHEMA_VERSION
    assert again.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert read(again, key).consent == {"email": True}
    again.close()


def test_concurrent_decisions_for_one_person_reserve_one_contact(store_url):
    """Ten stores (connections) deciding at once for one person, each allowed to send only while
    the person has no contact this week: exactly one sends, as the frequency cap wants."""
    stores = [open_store(store_url) for _ in range(10)]
    key = stores[0].person_key("u1")
    barrier = threading.Barrier(len(stores))

    def decide(i: int) -> bool:
        s = stores[i]
        barrier.wait()
        for attempt in range(50):
            state = read(s, key)
            if state.contacts:  # the cap is reached: a hold
                return False
            if s.commit_decision(decision(key, f"e{i}-{attempt}"), state.marker):
                return True
        raise AssertionError("never settled")

    with ThreadPoolExecutor(len(stores)) as pool:
        sent = list(pool.map(decide, range(len(stores))))
    assert sum(sent) == 1 and len(read(stores[0], key).contacts) == 1
    for s in stores:
        s.close()


def test_the_learner_waits_for_a_decision_still_being_written(tmp_path):
    """PostgreSQL hands out seq before commit: a decision committed late must not fall behind the
    learner's cursor. The learner's read waits for it instead of skipping it."""
    with store_address("postgresql", tmp_path) as url:
        store = open_store(url)
        slow = psycopg.connect(url)  # a transaction left open in the middle of logging a decision
        late = decision(None, "late", at=T - 100)
        slow.execute(_COMMIT, decision_values(late) + (False,) + (None,) * 6 + (None,) * 6)
        assert store.commit_decision(decision(None, "early", at=T - 100), None)
        got: list = []
        reader = threading.Thread(target=lambda: got.extend(store.decisions_after("lifecycle", 0, 10, T + WEEK)))
        reader.start()
        reader.join(0.5)
        assert reader.is_alive()  # waiting, not reading past the open transaction
        slow.commit()
        reader.join(10)
        assert [d.event_id for d in got] == ["late", "early"]
        slow.close()
        store.close()


def test_a_new_active_version_is_pushed_to_every_process(tmp_path):
    """PostgreSQL announces a change of active (or shadow) version: a worker's model cache that
    would look only once an hour serves the new version within moments of another replica
    activating it."""
    policy = load_policy(POLICIES_DIR / "lifecycle.toml")
    with store_address("postgresql", tmp_path) as url:
        elsewhere, here = open_store(url), open_store(url)
        model = new_model(policy)
        elsewhere.ensure_initial_version("lifecycle", model.to_bytes(), "", T)
        cache = VersionCache(here, {"lifecycle": policy}, here.active_version, 3600.0, time.monotonic)
        deadline = time.monotonic() + 10
        while here.model_generation("lifecycle") is None:  # the listening connection is up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert cache.get("lifecycle")[0] == 1
        two = elsewhere.add_version("lifecycle", model.to_bytes(), "", "import", T, {})
        elsewhere.activate("lifecycle", two, "test", T, watch=False)
        activated = time.monotonic()
        while cache.get("lifecycle")[0] != two:
            assert time.monotonic() - activated < 2.0, "the activation was not pushed"
            time.sleep(0.01)
        model.close()
        elsewhere.close()
        here.close()


def test_concurrent_sends_never_overspend_the_daily_budget(store_url):
    """Ten stores (connections) sending at once for different people, under a budget of three
    sends a day: exactly three are logged, whichever wins."""
    stores = [open_store(store_url) for _ in range(10)]
    barrier = threading.Barrier(len(stores))

    def send(i: int) -> bool:
        s = stores[i]
        key = s.person_key(f"p{i}")
        state = read(s, key)
        barrier.wait()
        return s.commit_decision(decision(key, f"b{i}"), state.marker, ("2026-06-01", 3))

    with ThreadPoolExecutor(len(stores)) as pool:
        sent = list(pool.map(send, range(len(stores))))
    assert sum(sent) == 3 and stores[0].query("SELECT used FROM budget")[0][0] == 3
    assert stores[0].decision_count() == 3 and count(stores[0], "contacts") == 3
    for s in stores:
        s.close()


def test_the_lease_by_the_stores_own_clock(store_url):
    """What the learner does: no `now` given, the store's clock decides (the database server's on
    PostgreSQL, so that replicas on several machines agree)."""
    a, b = open_store(store_url), open_store(store_url)
    assert a.acquire_lease("learner", "a", 30)
    assert not b.acquire_lease("learner", "b", 30)
    assert a.acquire_lease("learner", "a", 30)
    a.release_lease("learner", "a")
    assert b.acquire_lease("learner", "b", 0.001)
    time.sleep(0.01)
    assert a.acquire_lease("learner", "a", 30)  # b's expired
    a.close()
    b.close()
