"""The store's check-and-reserve on a real SQLite file: a decision is logged only if the person's
state it was decided on is still the state in the store, and logging it reserves its contact."""
from __future__ import annotations

import pytest

from service.store import Decision, Store

T = 1_780_000_000.0
WEEK = 7 * 86400.0


def decision(key: str, event_id: str, channel: str | None = "email", at: float = T) -> Decision:
    return Decision(event_id=event_id, policy="lifecycle", person_key=key, decided_at=at, closes_at=at + 86400,
                    model_version=1, mode="exploit", arm="a" if channel else "hold", probability=0.5,
                    send_at=at + 60 if channel else None, channel=channel, allowed=["a", "hold"],
                    probabilities=[0.5, 0.5], context={"segment": "s"}, history={},
                    removed={"b": [("no_consent", "sms: needs an opt-in"), ("min_gap", "x")],
                             "c": [("no_consent", "sms: needs an opt-in")]})


def read(store: Store, key: str, at: float = T):
    return store.person_state(key, at - WEEK, "lifecycle", at - 90 * 86400)


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "s.db"))
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
        store.wconn.execute("INSERT INTO signals(person_key, kind, channel, at, event_id) VALUES (?,?,?,?,?)",
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
