"""The online learner learns a bandit policy's decisions from the store's learning rows, each
distinct JSON text parsed and featurized once (service/learning/rows.py). What it publishes must be
what learning each decision as a Decision gives, byte for byte: the model, and every decision's
reward. Checked on both backends with a log that has every case the learner tells apart: outcomes
inside and after the window, uncounted ones, sends reported undelivered, holds, preferred
channels, arms and allowed lists the policy no longer has, and contexts that repeat and do not."""
from __future__ import annotations

import numpy as np

from models.featurize import history_features, shared_line
from models.reward import to_cost
from models.vw_policy import VWPolicy
from service.clock import ManualClock
from service.learning import rows as learning_rows
from service.policy import load_policies
from service.policy.bandit import arm_lines, decision_reward, ensure_active_version, reward_spec
from service.runtime import build_learner
from service.store import UNDELIVERED, Decision, Outcome, open_store
from service.store.decisions import DECISION_ROWS

from conftest import POLICIES_DIR

START = 1_780_000_000.0
DAY = 86400.0


def _log(policy, n: int, seed: int = 7) -> tuple[list[Decision], list[Outcome], dict[str, str]]:
    """n decisions of `policy`, their outcomes, and the delivery reports to record (event -> status)."""
    rng = np.random.default_rng(seed)
    arms = [a.id for a in policy.arms]
    decisions, outcomes, reports = [], [], {}
    for i in range(n):
        allowed = sorted(rng.choice(len(arms), size=int(rng.integers(2, 8)), replace=False).tolist())
        allowed = [arms[j] for j in allowed]
        if i % 97 == 5:
            allowed[-1] = "retired_content:email:now"  # an arm the policy no longer has
        arm = allowed[int(rng.integers(len(allowed)))]
        if i % 89 == 3:
            arm = "gone:push:now"  # a chosen arm the policy no longer has
            allowed.append(arm)
        channel = None if arm == "hold" else arm.split(":")[1]
        context = {"segment": f"s{rng.integers(4)}", "country": ["FR", "DE"][i % 2],
                   "tenure_days": float(rng.integers(3)) if i % 3 else float(i), "fresh": bool(i % 5)}
        history = history_features(int(rng.integers(4)), None if i % 4 == 0 else float(rng.integers(200)),
                                   ["email", "sms"] if i % 7 == 0 else None)
        history["fatigue_contacts"] = int(rng.integers(5))
        event = f"ev{i:05d}"
        at = START + i * 60.0
        decisions.append(Decision(event_id=event, policy=policy.name, person_key=None, decided_at=at,
                                  closes_at=at + DAY, model_version=1, mode="explore", arm=arm,
                                  probability=float(rng.uniform(0.05, 1.0)), send_at=at, channel=channel,
                                  allowed=allowed, probabilities=[], context=context, history=history,
                                  removed={}))
        if rng.random() < 0.4:
            outcomes.append(Outcome(event, "click", 1.0, at + 600.0, outcome_id="c"))
        if rng.random() < 0.1:
            outcomes.append(Outcome(event, "unsubscribe", 1.0, at + 2 * DAY, outcome_id="late"))  # after the window
        if rng.random() < 0.1:
            outcomes.append(Outcome(event, "click", 1.0, at + 60.0, outcome_id="x", counted=False))
        if channel is not None and i % 11 == 0:
            reports[event] = ["bounced", "sent", "failed", "not_sent"][i % 4]
    return decisions, outcomes, reports


def _reference(store, policy, initial: bytes, vw_args: str) -> tuple[bytes, list[tuple[int, float]]]:
    """The model and the rewards of learning every decision of the log as a Decision, one by one."""
    model = VWPolicy(arm_lines(policy), vw_args, model_bytes=initial)
    spec = reward_spec(policy)
    decisions = store.decisions_after(policy.name, 0, 100_000)
    outcomes = store.outcomes_for([d.event_id for d in decisions])
    rewards = []
    for d in decisions:
        reward = decision_reward(policy, d, outcomes[d.event_id], spec)
        rewards.append((d.seq, reward))
        allowed = [policy.arm_index.get(a) for a in d.allowed]
        if d.delivery in UNDELIVERED or d.arm not in policy.arm_index or None in allowed:
            continue
        model.learn(shared_line(d.context, d.history), allowed, d.allowed.index(d.arm), to_cost(spec, reward),
                    d.probability)
    try:
        return model.to_bytes(), rewards
    finally:
        model.close()


def test_learning_rows_gives_the_model_learning_decisions_gives(store_url, monkeypatch):
    monkeypatch.setattr(learning_rows, "CACHE_SIZE", 50)  # the caches also empty themselves on the way
    policy = load_policies(POLICIES_DIR)["lifecycle"].known()
    decisions, outcomes, reports = _log(policy, 900)
    store = open_store(store_url)
    try:
        store.import_logged(decisions, outcomes)
        for event, status in reports.items():
            d = next(x for x in decisions if x.event_id == event)
            store.record_delivery(event, None, status, None, d.decided_at + 1, d.decided_at, None, policy.name)
        initial_version = ensure_active_version(store, policy, START)
        initial = store.model(policy.name, initial_version)
        clock = ManualClock(START + 900 * 60.0 + 2 * DAY)
        learner = build_learner(store, {policy.name: policy}, clock)
        # in three steps: the caches carry over from one to the next
        assert [learner.step(policy.name, limit=300) for _ in range(4)] == [300, 300, 300, 0]
        expected_model, expected_rewards = _reference(store, policy, initial["model"], initial["vw_args"] or "")
        stored = store.query(f"SELECT seq, reward FROM {DECISION_ROWS} ORDER BY seq")
        assert [(r[0], r[1]) for r in stored] == expected_rewards
        assert len({r for _, r in expected_rewards}) > 3
        assert store.model(policy.name, store.active_version(policy.name))["model"] == expected_model
        learned = store.versions(policy.name)[-1]["note"]
        assert '"skipped":0' not in learned.replace(" ", "")  # undelivered and unmappable ones were skipped
    finally:
        store.close()
