"""Person state over HTTP (preferences, decisions, erasure), runtime arm switches, explicit
signals, suppression, consistency keys, the daily budget and the privacy guard, on the real app
with the request clock and a real SQLite store."""
from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest

from service.api.app import create_app
from service.policy import parse_policy

ROOT = Path(__file__).resolve().parents[1]
ALL = {"email": True, "push": True, "sms": True, "in_app": True}
T0 = "2026-05-04T10:00:00Z"  # a Monday, 12:00 in Paris: outside quiet hours


def decide(client, user="ann", ts=T0, **extra):
    body = {"user_id": user, "context": {"segment": "s"}, "timestamp": ts} | extra
    r = client.post("/v1/policies/lifecycle/decide", json=body)
    assert r.status_code == 200, r.json
    return r.json


def removed_reasons(client, event_id) -> dict[str, set[str]]:
    e = client.get(f"/v1/events/{event_id}").json
    return {a: {x["reason"] for x in rs} for a, rs in e["removed_arms"].items()}


def make_client(tmp_path, change):
    data = tomllib.loads((ROOT / "examples/policies/lifecycle.toml").read_text())
    data["learner"]["holdout_share"] = 0.0
    change(data)
    app = create_app({"DB": str(tmp_path / "c.db"), "POLICIES": {"lifecycle": parse_policy(data)},
                      "CLOCK": "request"})
    return app, app.test_client()


# -- preferences ----------------------------------------------------------------------------------

def test_preferences_block_channels_and_topics_and_cap_the_week(request_client):
    c = request_client
    c.put("/v1/users/ann/consent", json={"channels": ALL, "source": "signup", "timestamp": T0})
    r = c.put("/v1/users/ann/preferences", json={
        "blocked_channels": ["sms"], "blocked_topics": ["promotion"], "max_contacts_per_week": 1,
        "preferred_channels": ["push"], "timezone": "America/New_York", "timestamp": T0})
    assert r.status_code == 200
    assert r.json["preferences"]["blocked_channels"] == ["sms"]
    d = decide(c)
    reasons = removed_reasons(c, d["event_id"])
    assert all("channel_blocked" in reasons[a] for a in reasons if ":sms:" in a)
    assert all("blocked_topic" in reasons[a] for a in reasons if a.startswith(("spring_sale", "bundle_offer")))
    assert d["explanation"]["timezone"] == "America/New_York"
    assert d["explanation"]["history"]["preferred_channels"] == ["push"]
    if not d["action"]["hold"]:
        d2 = decide(c, ts="2026-05-05T10:00:00Z")
        assert d2["action"]["hold"]
        assert d2["removed"]["reasons"]["personal_cap"] == d2["removed"]["count"]


@pytest.mark.parametrize("body, field", [
    ({"blocked_channels": ["fax"]}, "blocked_channels[0]"),
    ({"preferred_channels": ["email", "pigeon"]}, "preferred_channels[1]"),
    ({"timezone": "Europe/Atlantis"}, "timezone"),
    ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
    ({"quiet_hours": {"start": "21:00"}}, "quiet_hours.end"),
    ({"quiet_hours": {"start": "21:00", "end": "21:00"}}, "quiet_hours.end"),
    ({"max_contacts_per_week": -1}, "max_contacts_per_week"),
    ({"max_contacts_per_week": 2.5}, "max_contacts_per_week"),
    ({"max_contacts_per_week": "3"}, "max_contacts_per_week"),
    ({"blocked_topics": [""]}, "blocked_topics[0]"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_preferences_name_the_field(client, body, field):
    r = client.put("/v1/users/ann/preferences", json=body)
    assert r.status_code == 400 and r.mimetype == "application/problem+json"
    assert r.json["field"] == field or field in [e["field"] for e in r.json["errors"]]


def test_user_state_shows_consent_history_with_sources(request_client):
    c = request_client
    c.put("/v1/users/ann/consent", json={"channels": {"email": True}, "source": "signup-form", "timestamp": T0})
    c.put("/v1/users/ann/consent", json={"channels": {"email": False}, "source": "preference-centre",
                                         "timestamp": "2026-05-05T10:00:00Z"})
    u = c.get("/v1/users/ann").json
    assert u["consent"] == {"email": False}
    assert [(h["granted"], h["source"], h["at"]) for h in u["consent_history"]] == [
        (True, "signup-form", T0), (False, "preference-centre", "2026-05-05T10:00:00Z")]


# -- customer care: why did I get this? --------------------------------------------------------------

def test_user_decisions_answer_why_did_i_get_this(request_client):
    c = request_client
    c.put("/v1/users/ann/consent", json={"channels": {"email": True}, "timestamp": T0})
    ids = [decide(c, ts=f"2026-05-0{d}T10:00:00Z")["event_id"] for d in (4, 5, 6)]
    r = c.get("/v1/users/ann/decisions?limit=2")
    assert r.status_code == 200
    got = r.json["decisions"]
    assert [d["event_id"] for d in got] == ids[::-1][:2]
    for d in got:
        assert d["action"]["arm"] and d["explanation"]["summary"]
        assert all(x["reason"] == "no_consent" for x in d["removed_arms"][next(a for a in d["removed_arms"] if ":sms:" in a)])
    assert c.get("/v1/users/nobody/decisions").json["decisions"] == []
    for bad in ("0", "201", "ten"):
        r = c.get(f"/v1/users/ann/decisions?limit={bad}")
        assert r.status_code == 400 and r.json["field"] == "limit"


# -- explicit signals ------------------------------------------------------------------------------

def _send_on(c, channel, channels):
    """(user, decision): the first of several fresh people whose decision sends on `channel`."""
    for i in range(60):
        user = f"person-{i}"
        c.put(f"/v1/users/{user}/consent", json={"channels": channels, "timestamp": "2026-06-01T10:00:00Z"})
        d = decide(c, user=user, ts="2026-06-01T10:00:00Z")
        if d["action"]["channel"] == channel:
            return user, d
    pytest.fail(f"no decision chose {channel}")


def test_a_complaint_starts_the_every_channel_cooldown_at_once(request_client):
    c = request_client
    user, d = _send_on(c, "email", ALL)
    r = c.post(f"/v1/events/{d['event_id']}/outcomes", json={"type": "complaint", "timestamp": "2026-06-28T10:00:00Z"})
    assert r.status_code == 202
    after = decide(c, user=user, ts="2026-06-28T10:00:01Z")
    assert after["action"]["hold"]
    assert after["removed"]["reasons"]["cooldown_complaint"] == after["removed"]["count"]
    u = c.get(f"/v1/users/{user}").json
    assert u["cooldowns"][0]["kind"] == "complaint" and u["cooldowns"][0]["channel"] == "*"
    # 90 days later the cooldown is over
    later = decide(c, user=user, ts="2026-09-27T10:00:00Z")
    assert "cooldown_complaint" not in later["removed"]["reasons"]


def test_an_unsubscribe_starts_a_cooldown_that_outlives_a_new_opt_in(request_client):
    c = request_client
    user, d = _send_on(c, "email", {"email": True})
    c.post(f"/v1/events/{d['event_id']}/outcomes", json={"type": "unsubscribe", "timestamp": "2026-06-28T10:00:00Z"})
    c.put(f"/v1/users/{user}/consent", json={"channels": {"email": True}, "timestamp": "2026-06-29T10:00:00Z"})
    reasons = removed_reasons(c, decide(c, user=user, ts="2026-06-29T10:00:01Z")["event_id"])
    assert all(reasons[a] == {"cooldown_unsubscribe"} for a in reasons if ":email:" in a)
    reasons = removed_reasons(c, decide(c, user=user, ts="2026-07-29T10:00:00Z")["event_id"])
    assert not any("cooldown_unsubscribe" in r for r in reasons.values())


def test_suppression_after_contacts_without_engagement_until_the_person_engages(tmp_path):
    def two(data):
        data["guardrails"]["suppression"]["after"] = 2
    _, c = make_client(tmp_path, two)
    c.put("/v1/users/ann/consent", json={"channels": ALL, "timestamp": T0})
    sends = []
    for day in range(1, 28):
        d = decide(c, ts=f"2026-06-{day:02d}T10:00:00Z")
        if not d["action"]["hold"]:
            sends.append(d)
        if len(sends) == 2:
            break
    d = decide(c, ts="2026-06-28T10:00:00Z")
    reasons = removed_reasons(c, d["event_id"])
    suppressed = {a for a, r in reasons.items() if "suppressed" in r}
    assert suppressed and all(":in_app:" not in a for a in suppressed)
    assert all("suppressed" in reasons[a] for a in reasons if ":email:" in a or ":push:" in a)
    assert c.get("/v1/users/ann").json["contacts_without_engagement"] >= 2
    c.post(f"/v1/events/{sends[-1]['event_id']}/outcomes", json={"type": "open", "timestamp": "2026-06-28T11:00:00Z"})
    d = decide(c, ts="2026-06-28T12:00:00Z")
    assert not any("suppressed" in r for r in removed_reasons(c, d["event_id"]).values())


# -- runtime arm switches -------------------------------------------------------------------------

def test_patch_retires_arms_and_contents_on_the_next_decision(request_client):
    c = request_client
    c.put("/v1/users/ann/consent", json={"channels": ALL, "timestamp": T0})
    r = c.patch("/v1/policies/lifecycle/arms/spring_sale", json={"status": "out_of_stock", "reason": "sold out"})
    assert r.status_code == 200 and r.json["kind"] == "content" and len(r.json["arms"]) == 12
    r = c.patch("/v1/policies/lifecycle/arms/win_back:push:evening", json={"status": "retired"})
    assert r.status_code == 200 and r.json["arms"] == ["win_back:push:evening"]
    r = c.patch("/v1/policies/lifecycle/arms/loyalty_reward", json={"valid_until": "2026-05-04T10:00:00Z"})
    assert r.status_code == 200 and r.json["status"] == "active"
    reasons = removed_reasons(c, decide(c)["event_id"])
    assert all("out_of_stock" in reasons[a] for a in reasons if a.startswith("spring_sale:"))
    assert "retired" in reasons["win_back:push:evening"]
    assert all("expired" in reasons[a] for a in reasons if a.startswith("loyalty_reward:"))
    # back in stock: a partial PATCH keeps what it does not name
    r = c.patch("/v1/policies/lifecycle/arms/spring_sale", json={"status": "active"})
    assert r.json["reason"] == "sold out"
    reasons = removed_reasons(c, decide(c, user="bob")["event_id"])
    assert not any("out_of_stock" in r for r in reasons.values())


@pytest.mark.parametrize("arm, body, status, field", [
    ("nope", {"status": "retired"}, 404, "arm"),
    ("hold", {"status": "retired"}, 400, "arm"),
    ("spring_sale", {"status": "gone"}, 400, "status"),
    ("spring_sale", {"valid_from": "tomorrow"}, 400, "valid_from"),
    ("spring_sale", {"valid_from": "2026-06-01T00:00:00Z", "valid_until": "2026-05-01T00:00:00Z"}, 400, "valid_until"),
    ("spring_sale", {"stock": 3}, 400, "stock"),
])
def test_bad_arm_patches_name_the_field(client, arm, body, status, field):
    r = client.patch(f"/v1/policies/lifecycle/arms/{arm}", json=body)
    assert r.status_code == status and r.mimetype == "application/problem+json"
    assert r.json["field"] == field


# -- consistency keys -------------------------------------------------------------------------------

def test_a_consistency_key_keeps_the_content_across_channels(tmp_path):
    # no holdout: a person in the holdout group gets the plain baseline, consistency key or not
    _, c = make_client(tmp_path, lambda data: None)
    c.put("/v1/users/ann/consent", json={"channels": ALL, "timestamp": T0})
    first = None
    for day in range(1, 28):
        first = decide(c, ts=f"2026-06-{day:02d}T10:00:00Z", consistency_key=f"campaign-{day}")
        if not first["action"]["hold"]:
            break
    key = f"campaign-{day}"
    second = decide(c, ts=f"2026-06-{day:02d}T14:00:00Z", consistency_key=key)
    assert second["mode"] == "consistent"
    assert second["action"]["content"] == first["action"]["content"]
    assert second["explanation"]["history"]["consistent_with"] == first["event_id"]
    e = c.get(f"/v1/events/{second['event_id']}").json
    assert sum(a["probability"] for a in e["allowed"]) == pytest.approx(1.0)
    assert all(a["probability"] == 0 for a in e["allowed"]
               if a["arm"] == "hold" or not a["arm"].startswith(first["action"]["content"] + ":"))
    # the content switched off: the key cannot be kept, and the decision says so
    c.patch(f"/v1/policies/lifecycle/arms/{first['action']['content']}", json={"status": "retired"})
    third = decide(c, ts=f"2026-06-{day:02d}T18:00:00Z", consistency_key=key)
    assert third["mode"] != "consistent"
    assert "consistency_broken" in third["explanation"]["history"]
    # after the time-to-live the key is forgotten
    c.patch(f"/v1/policies/lifecycle/arms/{first['action']['content']}", json={"status": "active"})
    late = decide(c, ts="2026-07-30T10:00:00Z", consistency_key=key)
    assert late["mode"] != "consistent" and "consistent_with" not in late["explanation"]["history"]


# -- the daily budget ----------------------------------------------------------------------------

def test_the_daily_budget_stops_sends_for_the_rest_of_the_day(tmp_path):
    def budget(data):
        data["guardrails"]["daily_budget"] = 3
    _, c = make_client(tmp_path, budget)
    sends = 0
    for i in range(40):
        c.put(f"/v1/users/u{i}/consent", json={"channels": ALL, "timestamp": T0})
        sends += not decide(c, user=f"u{i}")["action"]["hold"]
    assert sends == 3
    d = decide(c, user="late")
    assert d["action"]["hold"] and d["removed"]["reasons"]["daily_budget"] == d["removed"]["count"]
    assert not decide(c, user="u0", ts="2026-05-05T10:00:00Z")["removed"]["reasons"].get("daily_budget")


# -- privacy ------------------------------------------------------------------------------------------

def test_sensitive_features_are_refused_and_undeclared_ones_refused_or_dropped(tmp_path, client):
    r = client.post("/v1/policies/lifecycle/decide", json={"user_id": "a", "context": {"segment": "s", "health": "x"}})
    assert r.status_code == 400 and r.json["field"] == "context.health" and "sensitive" in r.json["detail"]
    r = client.post("/v1/policies/lifecycle/decide", json={"user_id": "a", "context": {"segment": "s", "shoe": 42}})
    assert r.status_code == 400 and r.json["field"] == "context.shoe"

    def drop(data):
        data["privacy"]["undeclared"] = "drop"
    _, c = make_client(tmp_path, drop)
    d = decide(c, context={"segment": "s", "shoe": 42, "mood": "ok"})
    assert sorted(d["explanation"]["dropped_features"]) == ["mood", "shoe"]
    e = c.get(f"/v1/events/{d['event_id']}").json
    assert e["context"] == {"segment": "s"}
    r = c.post("/v1/policies/lifecycle/decide",
               json={"user_id": "a", "context": {"segment": "s", "religion": "x"}, "timestamp": T0})
    assert r.status_code == 400 and r.json["field"] == "context.religion"


def test_user_ids_are_never_stored_in_clear(request_client, request_app):
    c = request_client
    user = "jane.doe@example.com"
    c.put(f"/v1/users/{user}/consent", json={"channels": ALL, "timestamp": T0})
    c.put(f"/v1/users/{user}/preferences", json={"timezone": "Europe/Paris", "timestamp": T0})
    decide(c, user=user)
    db = request_app.config["DB"]
    assert not rows_holding(db, user)


# -- erasure ------------------------------------------------------------------------------------------

def rows_holding(db: str, needle: str) -> list[tuple[str, dict]]:
    """Every row of every table with a value that contains `needle`."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    hits = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        for row in conn.execute(f"SELECT * FROM [{table}]"):
            for value in tuple(row):
                text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                if needle in text:
                    hits.append((table, dict(row)))
                    break
    conn.close()
    return hits


def test_erasure_leaves_no_row_with_the_user_or_their_key_and_keeps_learning_data(request_client, request_app):
    c = request_client
    engine = request_app.extensions["tactful"]
    user = "erase-me-42"
    key = engine.store.person_key(user)
    c.put(f"/v1/users/{user}/consent", json={"channels": ALL, "source": "signup", "timestamp": T0})
    c.put(f"/v1/users/{user}/preferences", json={"blocked_topics": ["loyalty"], "timestamp": T0})
    events = [decide(c, user=user, ts=f"2026-06-{d:02d}T10:00:00Z", consistency_key=f"k-{d}")["event_id"]
              for d in range(1, 15)]
    sent = next(e for e in events if not c.get(f"/v1/events/{e}").json["action"]["hold"])
    c.post(f"/v1/events/{sent}/outcomes", json={"type": "click", "outcome_id": "c1", "timestamp": "2026-06-15T00:00:00Z"})
    c.post(f"/v1/events/{sent}/outcomes", json={"type": "complaint", "timestamp": "2026-06-15T00:00:01Z"})
    decide(c, user="someone-else")
    db = request_app.config["DB"]
    assert rows_holding(db, key)  # the key is there before

    r = c.delete(f"/v1/users/{user}")
    assert r.status_code == 200 and r.json["erased"] is True
    assert r.json["deleted"]["decisions_unlinked"] == len(events)
    assert rows_holding(db, key) == [] and rows_holding(db, key[:16]) == [] and rows_holding(db, user) == []
    # the anonymous learning data remains: every decision, with its context, probabilities and outcomes
    for e in events:
        body = c.get(f"/v1/events/{e}").json
        assert body["context"] == {"segment": "s"} and body["allowed"]
    assert len(c.get(f"/v1/events/{sent}").json["outcomes"]) == 2
    assert c.get("/v1/policies/lifecycle").json["counts"]["decisions"] == len(events) + 1
    # and the person starts afresh: no consent, no cooldown, no history
    u = c.get(f"/v1/users/{user}").json
    assert u["consent"] == {} and u["cooldowns"] == [] and u["contacts"] == [] and u["preferences"] == {}
    assert c.get(f"/v1/users/{user}/decisions").json["decisions"] == []
