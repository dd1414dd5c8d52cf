"""The console's figures from the decision log (service/store/console.py), on both backends: the
buckets, the arms, the removals and the shadow's agreement agree with the decisions written."""
from __future__ import annotations

import pytest

from service.store import Decision, open_store

T = 1_700_000_000.0
HOUR = 3600.0


def decision(i: int, at: float, arm: str, mode: str = "exploit", removed: dict | None = None) -> Decision:
    return Decision(event_id=f"e{i}", policy="lifecycle", person_key=None, decided_at=at, closes_at=at + 60,
                    model_version=1, mode=mode, arm=arm, probability=0.5, send_at=None,
                    channel=None if arm == "hold" else "email", allowed=[arm], probabilities=[1.0], context={},
                    history={}, removed=removed or {})


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def logged(store):
    """Hour 0: two sends (one explored) and a hold; hour 2: a holdout send and a hold; one decision
    before the window. Rewards: e1 = 1.0, e2 = 3.0 (arm a), e4 = -1.0 (holdout)."""
    removed = {"b": [("no_consent", "sms"), ("min_gap", "1d")], "c": [("no_consent", "sms")]}
    rows = [decision(0, T - 10, "a"),
            decision(1, T + 10, "a", removed=removed), decision(2, T + 20, "a", "explore"),
            decision(3, T + 30, "hold", removed={"c": [("quiet_hours", "22-08")]}),
            decision(4, T + 2 * HOUR + 5, "b", "holdout"), decision(5, T + 2 * HOUR + 6, "hold")]
    store.import_logged(rows, [])
    with store.write() as conn:
        for event, reward in [("e1", 1.0), ("e2", 3.0), ("e4", -1.0)]:
            conn.execute("INSERT INTO decision_rewards(seq, reward) SELECT seq, ? FROM decisions WHERE event_id=?",
                         (reward, event))
    return store


def test_buckets_count_sends_holds_explorations_and_rewards_apart_for_the_holdout(logged):
    b = logged.decision_buckets("lifecycle", T, HOUR, 3)
    assert [x["start"] for x in b] == [T, T + HOUR, T + 2 * HOUR]
    assert [(x["decisions"], x["sends"], x["holds"], x["explores"], x["holdouts"]) for x in b] == \
        [(3, 2, 1, 1, 0), (0, 0, 0, 0, 0), (2, 1, 1, 0, 1)]
    assert (b[0]["reward_sum"], b[0]["rewarded"], b[0]["holdout_rewarded"]) == (4.0, 2, 0)
    assert (b[2]["reward_sum"], b[2]["rewarded"], b[2]["holdout_reward_sum"], b[2]["holdout_rewarded"]) == \
        (0.0, 0, -1.0, 1)


def test_a_bucket_starts_on_its_boundary_on_both_backends(logged):
    """A decision at T + 2h + 5s falls in the bucket from T + 2h, not in a rounded neighbour: 2.0
    hours wide buckets from T - 1.5 h put T + 10 s in bucket 0 (floor of 0.75), not 1."""
    b = logged.decision_buckets("lifecycle", T - 1.5 * HOUR, 2 * HOUR, 2)
    assert [x["decisions"] for x in b] == [4, 2]


def test_arm_figures_give_counts_and_reward_sums_per_arm(logged):
    arms = logged.arm_figures("lifecycle", T, T + 3 * HOUR)
    assert arms["a"] == {"chosen": 2, "reward_sum": 4.0, "reward_squares": 10.0, "rewarded": 2}
    assert arms["hold"]["chosen"] == 2 and arms["hold"]["rewarded"] == 0
    assert arms["b"]["reward_sum"] == -1.0 and set(arms) == {"a", "b", "hold"}


def test_removals_are_counted_once_per_arm_and_reason_and_bounded(logged):
    r = logged.removal_reasons("lifecycle", T, T + 3 * HOUR)
    assert r == {"decisions_read": 5, "reasons": {"no_consent": 2, "min_gap": 1, "quiet_hours": 1}}
    newest = logged.removal_reasons("lifecycle", T, T + 3 * HOUR, limit=3)  # e5, e4, e3 only
    assert newest == {"decisions_read": 3, "reasons": {"quiet_hours": 1}}


def test_the_latest_decision_and_the_shadow_agreement(logged):
    assert logged.latest_decision_at("lifecycle") == T + 2 * HOUR + 6
    assert logged.latest_decision_at("nothing") is None
    logged.add_shadow_decision("e1", "lifecycle", 2, "a", 0.9, [0.9, 0.1], T + 10)
    logged.add_shadow_decision("e2", "lifecycle", 2, "b", 0.6, [0.4, 0.6], T + 20)
    logged.add_shadow_decision("e3", "lifecycle", 3, "hold", 0.6, [0.4, 0.6], T + 30)
    assert logged.shadow_agreement("lifecycle", 2, T) == {"scored": 2, "agreed": 1}
    assert logged.shadow_agreement("lifecycle", 2, T + 15) == {"scored": 1, "agreed": 0}
    assert logged.shadow_agreement("lifecycle", 2, T, limit=1) == {"scored": 1, "agreed": 0}  # the newest: e2


def test_the_session_secret_is_the_same_for_every_opening_of_a_store(store_url):
    a, b, other = open_store(store_url), open_store(store_url), open_store(store_url, secret="other")
    try:
        assert a.console_secret() == b.console_secret() and len(a.console_secret()) == 32
        assert a.console_secret() != other.console_secret()
    finally:
        for s in (a, b, other):
            s.close()
