"""What a campaign tool needs of the HTTP API (docs/integration.md), on the real app, store, model
and guardrails: a retried decide is the same decision and reserves nothing more; a delivery report
that the message never went out frees what the decision reserved and keeps it from being learned
as a contact; eligible sets restrict a decision to a journey's contents and channels."""
from __future__ import annotations

import json

import pytest

from service.clock import ManualClock
from service.decision.engine import DecideInput, DeliveryInput
from service.runtime import build_learner
from test_learner import DAY, START, make_engine

PROBLEM = "application/problem+json"
CONSENT = {"channels": {"email": True, "push": True, "sms": True}, "source": "test"}
ASK = {"user_id": "u1", "context": {"segment": "s"}}
PUSH_ONLY = ASK | {"channels": ["push"], "contents": ["spring_sale"]}  # push: at most 1 a day


@pytest.fixture
def c(client):
    assert client.put("/v1/users/u1/consent", json=CONSENT).status_code == 200
    return client


def contacts(c) -> list:
    return c.get("/v1/users/u1").json["contacts"]


def send(c, body: dict, tries: int = 60) -> dict:
    """Decide until the answer is a send (the untrained model may well hold); holds reserve nothing."""
    for i in range(tries):
        r = c.post("/v1/policies/lifecycle/decide", json=body)
        assert r.status_code == 200, r.json
        if not r.json["action"]["hold"]:
            return r.json
    raise AssertionError("no send in %d decisions" % tries)


def journey_reasons(c, answer: dict) -> set[str]:
    """The reasons the journey's own arms (spring_sale by push) were removed for."""
    removed = c.get(f"/v1/events/{answer['event_id']}").json["removed_arms"]
    return {r["reason"] for arm, rs in removed.items() if arm.startswith("spring_sale:push:") for r in rs}


def test_a_retried_decide_is_one_decision_and_one_reservation(c):
    first = send(c, ASK | {"request_id": "campaign-42:u1"})
    for _ in range(3):
        again = c.post("/v1/policies/lifecycle/decide", json=ASK | {"request_id": "campaign-42:u1"})
        assert again.status_code == 200 and again.json == first
    # the header is the same key
    header = c.post("/v1/policies/lifecycle/decide", json=ASK, headers={"Idempotency-Key": "campaign-42:u1"})
    assert header.json == first
    assert len(contacts(c)) == 1
    assert c.get(f"/v1/events/{first['event_id']}").json["action"] == first["action"]


def test_a_request_id_reused_for_another_request_is_a_409(c):
    assert c.post("/v1/policies/lifecycle/decide", json=ASK | {"request_id": "r-1"}).status_code == 200
    other = c.post("/v1/policies/lifecycle/decide", json=ASK | {"request_id": "r-1", "context": {"segment": "t"}})
    assert other.status_code == 409 and other.content_type == PROBLEM
    assert other.json["field"] == "request_id" and "different request" in other.json["detail"]


@pytest.mark.parametrize("body,headers,field", [
    (ASK | {"request_id": "has space"}, {}, "request_id"),
    (ASK | {"request_id": "x" * 129}, {}, "request_id"),
    (ASK, {"Idempotency-Key": "bad/key"}, "Idempotency-Key"),
    (ASK | {"request_id": "a"}, {"Idempotency-Key": "b"}, "request_id"),
    (ASK | {"contents": ["nope"]}, {}, "contents[0]"),
    (ASK | {"channels": ["email", "fax"]}, {}, "channels[1]"),
    (ASK | {"channels": []}, {}, "channels"),
])
def test_bad_request_ids_and_eligible_sets_name_their_field(c, body, headers, field):
    r = c.post("/v1/policies/lifecycle/decide", json=body, headers=headers)
    assert r.status_code == 400 and r.content_type == PROBLEM
    assert r.json["field"] == field, r.json


def test_eligible_sets_remove_the_other_arms_with_their_reasons(c):
    body = ASK | {"contents": ["spring_sale", "win_back"], "channels": ["email", "in_app"]}
    answer = c.post("/v1/policies/lifecycle/decide", json=body).json
    event = c.get(f"/v1/events/{answer['event_id']}").json
    for a in event["allowed"]:
        if a["arm"] != "hold":
            content, channel, _ = a["arm"].split(":")
            assert content in body["contents"] and channel in body["channels"]
    for arm, reasons in event["removed_arms"].items():
        content, channel, _ = arm.split(":")
        codes = {r["reason"] for r in reasons}
        assert ("not_eligible_content" in codes) == (content not in body["contents"])
        assert ("not_eligible_channel" in codes) == (channel not in body["channels"])
    assert answer["removed"]["reasons"]["not_eligible_content"] == 4 * 4 * 3 - 3  # 4 contents x 4 channels x 3 timings, no welcome_tips sms
    assert answer["action"]["hold"] or answer["action"]["content"] in body["contents"]
    assert {a["arm"] for a in event["allowed"]} <= {"hold"} | {f"{ct}:{ch}:{t}" for ct in body["contents"]
                                                                for ch in body["channels"]
                                                                for t in ("now", "evening", "next_morning")}


def test_a_not_sent_report_frees_the_cap_for_the_next_decide(c):
    first = send(c, PUSH_ONLY)
    blocked = c.post("/v1/policies/lifecycle/decide", json=PUSH_ONLY).json
    assert blocked["action"]["hold"] and {"frequency_cap", "min_gap"} <= journey_reasons(c, blocked)
    r = c.post(f"/v1/events/{first['event_id']}/delivery", json={"status": "not_sent", "reason": "tool suppression"})
    assert r.status_code == 202
    assert r.json == {"event_id": first["event_id"], "status": "not_sent", "reason": "tool suppression",
                      "accepted": True, "duplicate": False, "released": True, "note": None}
    assert contacts(c) == []
    second = send(c, PUSH_ONLY)
    assert not journey_reasons(c, second) & {"frequency_cap", "min_gap"}
    event = c.get(f"/v1/events/{first['event_id']}").json
    assert event["delivery"]["status"] == "not_sent"
    assert [(d["status"], d["reason"], d["released"]) for d in event["delivery"]["reports"]] == [
        ("not_sent", "tool suppression", True)]


def test_delivery_reports_are_idempotent_and_refuse_contradictions(c):
    sent = send(c, ASK)
    url = f"/v1/events/{sent['event_id']}/delivery"
    assert c.post(url, json={"status": "sent"}).json["released"] is False
    again = c.post(url, json={"status": "sent"})
    assert again.status_code == 202 and again.json["duplicate"] is True
    assert len(contacts(c)) == 1
    bounced = c.post(url, json={"status": "bounced", "reason": "mailbox full"})
    assert bounced.status_code == 202 and bounced.json["released"] is True and contacts(c) == []
    back = c.post(url, json={"status": "sent"})
    assert back.status_code == 409 and back.content_type == PROBLEM and back.json["field"] == "status"
    assert c.get(f"/v1/events/{sent['event_id']}").json["delivery"]["status"] == "bounced"


@pytest.mark.parametrize("body,status,field", [
    ({"status": "delivered"}, 400, "status"),
    ({}, 400, "status"),
    ({"status": "sent", "extra": 1}, 400, "extra"),
    ({"status": "sent", "timestamp": "2026-01-01T00:00:00Z"}, 400, "timestamp"),  # system clock
])
def test_bad_delivery_reports_name_their_field(c, body, status, field):
    sent = send(c, ASK)
    r = c.post(f"/v1/events/{sent['event_id']}/delivery", json=body)
    assert r.status_code == status and r.content_type == PROBLEM and r.json["field"] == field, r.json


def test_a_hold_or_an_unknown_event_has_no_delivery(c):
    assert c.post("/v1/events/nope/delivery", json={"status": "sent"}).status_code == 404
    for _ in range(200):
        answer = c.post("/v1/policies/lifecycle/decide", json=ASK | {"channels": ["sms"]}).json
        if answer["action"]["hold"]:
            break
    r = c.post(f"/v1/events/{answer['event_id']}/delivery", json={"status": "not_sent"})
    assert r.status_code == 409 and r.json["field"] == "event_id" and "hold" in r.json["detail"]
    assert c.get(f"/v1/events/{answer['event_id']}").json["delivery"] is None


def test_the_openapi_document_declares_the_new_fields_and_route(c):
    doc = c.get("/openapi.json").json
    assert {"request_id", "contents", "channels"} <= set(doc["components"]["schemas"]["DecideRequest"]["properties"])
    op = doc["paths"]["/v1/events/{event_id}/delivery"]["post"]
    assert op["x-scopes"] == ["decide"] and {"202", "400", "401", "403", "404", "409", "413"} <= set(op["responses"])
    assert "409" in doc["paths"]["/v1/policies/{policy}/decide"]["post"]["responses"]


def test_undelivered_decisions_are_not_learned_as_contacts(tmp_path):
    """Sends reported not_sent, bounced or failed are passed over by the learner (the version's
    note counts them as skipped) and rewarded as no contact: no fatigue."""
    clock = ManualClock(START)
    engine = make_engine(tmp_path / "t.db", clock)
    engine.people.set_consent("u1", {"email": True, "push": True, "sms": True}, "test", None)
    undelivered, holds, sends = [], 0, 0
    for i in range(30):
        r = engine.decide("lifecycle", DecideInput(f"u{i % 3}", {"segment": "s"}))
        if r["action"]["hold"]:
            holds += 1
        elif i % 2:
            engine.record_delivery(r["event_id"], DeliveryInput(["not_sent", "bounced", "failed"][i % 3]))
            undelivered.append(r["event_id"])
        else:
            sends += 1
        clock.advance(3 * 3600)
    assert undelivered and sends
    clock.advance(2 * DAY)
    learner = build_learner(engine.store, engine.policies, clock)
    assert learner.step("lifecycle") == 30
    note = json.loads(engine.store.versions("lifecycle")[-1]["note"])
    assert note["decisions"] == 30 and note["skipped"] == len(undelivered)
    for event_id in undelivered:
        e = engine.event(event_id)
        assert e["status"] == "learned" and e["reward"] == 0.0  # no outcome, and no fatigue: not a contact
