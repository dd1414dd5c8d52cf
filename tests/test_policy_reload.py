"""Policy files reloaded without a restart: `POST /v1/policies/{policy}/reload` validates the file
and every worker (here: two apps on one store, as two gunicorn workers) serves it from its next
request; an invalid file is refused with its error and the running policy is kept; the learner
learns with the reloaded arms. On a real server, and SIGHUP: tests/test_campaign_e2e.py."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import POLICIES_DIR
from service.api.app import create_app
from service.clock import ManualClock
from service.decision.engine import DecideInput
from service.policy import load_policies
from service.policy.reload import PolicyReloads
from service.policy.stored import mismatch
from service.runtime import build_engine, build_learner
from service.store import open_store

NEW_CONTENT = '''
[[content]]
id = "summer_sale"
topic = "promotion"
tags = ["seasonal", "new"]
features = { length = 0.3, discount = 0.3, urgency = 0.7 }
'''
ASK = {"user_id": "u1", "context": {"segment": "s"}}


@pytest.fixture
def workers(tmp_path):
    """Two apps on one store and one copy of the policy files: two workers of one server."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    config = {"DB": str(tmp_path / "w.db"), "POLICIES": str(policies), "ACCESS_LOG": False,
              "POLICY_REFRESH_SECONDS": 0.0}
    apps = [create_app(config), create_app(config)]
    yield [a.test_client() for a in apps], policies / "lifecycle.toml"
    for a in apps:
        a.extensions["tactful"].store.close()


def add_content(toml, text: str = NEW_CONTENT) -> None:
    body = toml.read_text()
    at = body.index("[[timing]]")  # contents come before the timings
    toml.write_text(body[:at] + text.lstrip() + "\n" + body[at:])


def test_a_reloaded_file_is_served_by_every_worker(workers):
    (a, b), toml = workers
    before = a.get("/v1/policies/lifecycle").json["arm_count"]
    add_content(toml)
    assert b.get("/v1/policies/lifecycle").json["arm_count"] == before  # an edit alone changes nothing
    r = a.post("/v1/policies/lifecycle/reload", json={"reason": "this week's message"})
    assert r.status_code == 200 and r.json["changed"] is True and r.json["arm_count"] == before + 12
    assert r.json["source"] == "http" and r.json["reason"] == "this week's message"
    for user, client in (("u-a", a), ("u-b", b)):  # in-app needs no opt-in
        policy = client.get("/v1/policies/lifecycle").json
        assert policy["arm_count"] == before + 12 and policy["reloaded"]["hash"] == r.json["hash"]
        answer = client.post("/v1/policies/lifecycle/decide",
                             json={"user_id": user, "context": {"segment": "s"}, "contents": ["summer_sale"]}).json
        event = client.get(f"/v1/events/{answer['event_id']}").json
        assert {x["arm"] for x in event["allowed"]} == {"hold"} | {
            f"summer_sale:in_app:{t}" for t in ("now", "evening", "next_morning")}
    again = a.post("/v1/policies/lifecycle/reload")
    assert again.status_code == 200 and again.json["changed"] is False
    # the offline commands now expect the reloaded file, not the one the service started with
    store = open_store(str(toml.parents[1] / "w.db"))
    try:
        assert mismatch(store, load_policies(toml.parent)["lifecycle"]) is None
    finally:
        store.close()


@pytest.mark.parametrize("broken,key", [
    ("[[guardrails.caps]]\nchannel = \"push\"\nmax = 1\nwindow = \"fortnight\"\n", "guardrails.caps[3].window"),
    ("this is not toml = = \n", ""),
])
def test_an_invalid_file_is_refused_and_the_running_policy_kept(workers, broken, key):
    (a, b), toml = workers
    before = a.get("/v1/policies/lifecycle").json
    toml.write_text(toml.read_text() + "\n" + broken)
    r = a.post("/v1/policies/lifecycle/reload")
    assert r.status_code == 409 and r.content_type == "application/problem+json"
    assert "the running policy is kept" in r.json["detail"] and r.json["field"] == (key or "file")
    for client in (a, b):
        assert client.get("/v1/policies/lifecycle").json["arm_count"] == before["arm_count"]
        assert client.get("/v1/policies/lifecycle").json["reloaded"] is None
        assert client.post("/v1/policies/lifecycle/decide", json=ASK).status_code == 200


def test_a_reload_cannot_rename_a_policy(workers):
    (a, _), toml = workers
    toml.write_text(toml.read_text().replace('name = "lifecycle"', 'name = "renamed"', 1))
    r = a.post("/v1/policies/lifecycle/reload")
    assert r.status_code == 409 and r.json["field"] == "name"


def test_unknown_policy_and_bad_body(workers):
    (a, _), _ = workers
    assert a.post("/v1/policies/nope/reload").status_code == 404
    r = a.post("/v1/policies/lifecycle/reload", json={"why": "x"})
    assert r.status_code == 400 and r.json["field"] == "why"


def test_the_learner_learns_with_the_reloaded_arms(tmp_path):
    """Decisions of the new content are learned (not skipped as arms the learner does not know)."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    store = open_store(str(tmp_path / "l.db"))
    clock = ManualClock(1_780_000_000.0)
    learner = build_learner(store, load_policies(policies), clock, follow_reloads=True)
    add_content(policies / "lifecycle.toml")
    served = load_policies(policies)  # the worker that reloaded it
    engine = build_engine(store, served, clock, refresh_seconds=0)
    engine.ensure_models()
    engine.people.set_consent("u1", {"email": True, "push": True}, "t", None)
    PolicyReloads(store, served, engine.use_policy).reload("lifecycle", clock.now(), "test")
    for _ in range(5):
        engine.decide("lifecycle", DecideInput("u1", {"segment": "s"}, contents=["summer_sale"]))
        clock.advance(3600)
    clock.advance(3 * 86400)
    assert learner.step("lifecycle") == 5
    note = json.loads(store.versions("lifecycle")[-1]["note"])
    assert note["decisions"] == 5 and note["skipped"] == 0
    store.close()
