"""End to end: the real `tactful serve --clock request` (gunicorn, 2 workers, one learner) on a
free port, driven over HTTP by a synthetic population of two segments that prefer different
(content, channel, timing) arms. Tactful must visibly learn them."""
from __future__ import annotations

import collections
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from serving import serve  # noqa: F401  (fixture)
from synthetic import BEST, CHANNELS, best_arm, click_probability

pytestmark = pytest.mark.e2e

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
USERS = 2000
DECISIONS = 12000
SPAN = timedelta(days=14)
CONVERT_GIVEN_CLICK = 0.5


def rfc3339(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_served_population_is_learned(serve):
    http, base = serve(clock="request")
    rng = np.random.default_rng(7)
    segments = list(BEST)
    users = [(f"user-{i}", segments[i % 2]) for i in range(USERS)]
    for user, _ in users:
        r = http.put(f"{base}/v1/users/{user}/consent",
                     json={"channels": {c: True for c in CHANNELS}, "source": "e2e",
                           "timestamp": rfc3339(START)})
        assert r.status_code == 200, r.text

    log = []
    for n in range(DECISIONS):
        now = START + SPAN * (n / DECISIONS)
        user, segment = users[rng.integers(USERS)]
        r = http.post(f"{base}/v1/policies/lifecycle/decide",
                      json={"user_id": user, "timestamp": rfc3339(now),
                            "context": {"segment": segment, "country": "FR", "tenure_days": 30}})
        assert r.status_code == 200, r.text
        d = r.json()
        assert set(d["action"]) == {"arm", "content", "channel", "timing", "send_at", "hold"}
        if rng.random() < click_probability(segment, d["action"]["arm"]):
            o = http.post(f"{base}/v1/events/{d['event_id']}/outcomes",
                          json={"type": "click", "outcome_id": "click-1",
                                "timestamp": rfc3339(now + timedelta(hours=2))})
            assert o.status_code == 202, o.text
            # half the clicks lead to a purchase (reported at the click's time: an outcome's
            # timestamp moves the request clock, and later decisions would be made after it)
            if rng.random() < CONVERT_GIVEN_CLICK:
                o = http.post(f"{base}/v1/events/{d['event_id']}/outcomes",
                              json={"type": "convert", "outcome_id": "convert-1",
                                    "timestamp": rfc3339(now + timedelta(hours=2))})
                assert o.status_code == 202, o.text
        log.append(d)

    # move time past the last reward window, then wait for the learner to catch up
    end = START + SPAN + timedelta(days=3)  # the example's window: 2 days
    probe = http.post(f"{base}/v1/policies/lifecycle/decide",
                      json={"user_id": "clock-mover", "timestamp": rfc3339(end), "context": {"segment": "x"}})
    assert probe.status_code == 200
    policy = wait_for(lambda: http.get(f"{base}/v1/policies/lifecycle").json(),
                      lambda p: p["counts"]["learned"] >= DECISIONS, timeout=120)
    assert policy["active_model_version"] > 1
    assert log[0]["model_version"] == 1 and log[-1]["model_version"] > 1, "workers must load new versions"

    # each segment's greedy choice is now its best arm: asked for new people of the segment, who
    # have consented and have no contacts yet, so that every arm is allowed and the favourite is
    # the model's own (the population's caps and gaps would otherwise remove arms person by person)
    for segment in segments:
        favourites = collections.Counter()
        for i in range(60):
            user = f"probe-{segment}-{i}"
            r = http.put(f"{base}/v1/users/{user}/consent",
                         json={"channels": {c: True for c in CHANNELS}, "source": "e2e", "timestamp": rfc3339(end)})
            assert r.status_code == 200, r.text
            d = http.post(f"{base}/v1/policies/lifecycle/decide",
                          json={"user_id": user, "context": {"segment": segment, "country": "FR", "tenure_days": 30}}).json()
            if d["mode"] != "holdout" and sum(favourites.values()) < 40:
                favourites[d["explanation"]["model_favourite"]["arm"]] += 1
        assert favourites.most_common(1)[0][0] == best_arm(segment), favourites.most_common(5)

    # shaped reward over the last third: at least twice what uniform random choice would earn.
    # (Clicks and conversions are what a campaign tool reports; the reward window is two days.)
    # Uniform random is judged on the same people at the same moments, behind the same
    # guardrails: its expected shaped reward is the mean, over each decision's allowed arms, of
    # the true click probability less the same fatigue term the service charged.
    last = log[2 * DECISIONS // 3:]
    events = [http.get(f"{base}/v1/events/{d['event_id']}").json() for d in last]
    assert all(e["status"] == "learned" for e in events)
    rewards = np.array([e["reward"] for e in events])
    fatigue = policy["reward"]["fatigue_per_contact"]
    weights = policy["reward"]["weights"]
    per_click = weights["click"] + CONVERT_GIVEN_CLICK * weights["convert"]
    uniform = np.array([
        np.mean([per_click * click_probability(seg, a["arm"]) - (0.0 if a["arm"] == "hold" else
                 fatigue * e["explanation"]["history"]["fatigue_contacts"]) for a in e["allowed"]])
        for e, seg in ((e, d_segment(e)) for e in events)])
    assert rewards.mean() >= 2 * uniform.mean(), (rewards.mean(), uniform.mean())


def d_segment(event: dict) -> str:
    return event["context"]["segment"]


def wait_for(fetch, done, timeout: float):
    import time

    deadline = time.time() + timeout
    while True:
        value = fetch()
        if done(value) or time.time() > deadline:
            return value
        time.sleep(0.5)
