"""A policy's live content catalog (real app, store, model and learner): a content added over HTTP
is offered by every worker (two apps on one store) from their next request and survives a restart,
scored from what the model knows of its features; a retired one leaves every decision while its
history is still learned, exported and evaluated; every change is kept with who, when and why.
On a real server: tests/test_campaign_e2e.py."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import POLICIES_DIR
from service.api.app import create_app
from service.clock import ManualClock
from service.decision.engine import DecideInput
from service.offline.evaluate import evaluate
from service.offline.export import export, final_decisions
from service.policy import load_policies
from service.policy.catalog import with_catalog
from service.policy.reload import PolicyReloads
from service.runtime import build_engine, build_learner
from service.store import open_store

SUMMER = {"topic": "promotion", "tags": ["seasonal"], "features": {"discount": 0.3, "urgency": 0.7},
          "reason": "summer campaign, week 23"}
TIMINGS = ("now", "evening", "next_morning")


@pytest.fixture
def config(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    return {"DB": str(tmp_path / "c.db"), "POLICIES": str(policies), "ACCESS_LOG": False,
            "POLICY_REFRESH_SECONDS": 0.0}


@pytest.fixture
def workers(config):
    apps = [create_app(config), create_app(config)]
    yield [a.test_client() for a in apps]
    for a in apps:
        a.extensions["tactful"].store.close()


def in_app_arms(client, user: str, contents: list[str]) -> set[str]:
    answer = client.post("/v1/policies/lifecycle/decide",
                         json={"user_id": user, "context": {"segment": "s"}, "contents": contents})
    assert answer.status_code == 200, answer.json
    return {a["arm"] for a in client.get(f"/v1/events/{answer.json['event_id']}").json["allowed"]}


def test_a_content_added_over_http_is_offered_by_every_worker_and_survives_a_restart(workers, config):
    a, b = workers
    r = a.put("/v1/policies/lifecycle/contents/summer_sale", json=SUMMER)
    assert r.status_code == 201 and r.json["created"] and r.json["arm_count"] == 82
    assert r.json["source"] == "catalog" and r.json["reason"] == SUMMER["reason"]
    summer = {"hold"} | {f"summer_sale:in_app:{t}" for t in TIMINGS}  # in-app needs no opt-in
    assert in_app_arms(a, "ua", ["summer_sale"]) == summer
    assert in_app_arms(b, "ub", ["summer_sale"]) == summer  # the other worker, from its next request
    app = create_app(config)  # a restart: the files, then the catalog
    restarted = app.test_client()
    assert in_app_arms(restarted, "uc", ["summer_sale"]) == summer
    listed = restarted.get("/v1/policies/lifecycle/contents").json
    app.extensions["tactful"].store.close()
    assert [c["id"] for c in listed["contents"]][-1] == "summer_sale" and listed["retired"] == []
    assert {c["source"] for c in listed["contents"][:-1]} == {"file"}
    # a PUT changes it whole; the change is kept beside the first
    r = b.put("/v1/policies/lifecycle/contents/summer_sale", json={"topic": "seasonal", "reason": "new topic"})
    assert r.status_code == 200 and not r.json["created"] and r.json["topic"] == "seasonal" and r.json["tags"] == []
    assert a.get("/v1/policies/lifecycle/contents").json["contents"][-1]["topic"] == "seasonal"


def test_a_retired_content_leaves_every_decision_and_its_history_stays(workers):
    a, b = workers
    before = in_app_arms(a, "u1", ["spring_sale", "win_back"])
    assert "spring_sale:in_app:now" in before
    r = a.delete("/v1/policies/lifecycle/contents/spring_sale", json={"reason": "the sale is over"})
    assert r.status_code == 200 and r.json["arm_count"] == 70 - 12
    event = b.post("/v1/policies/lifecycle/decide", json={"user_id": "u2", "context": {"segment": "s"}}).json
    shown = b.get(f"/v1/events/{event['event_id']}").json
    assert not any(arm.startswith("spring_sale:") for arm in [x["arm"] for x in shown["allowed"]]
                   + list(shown["removed_arms"]))  # not even as a removal: it is no arm any more
    bad = b.post("/v1/policies/lifecycle/decide", json={"user_id": "u2", "context": {"segment": "s"},
                                                        "contents": ["spring_sale"]})
    assert bad.status_code == 400 and bad.json["field"] == "contents[0]"
    listed = b.get("/v1/policies/lifecycle/contents").json
    assert [c["id"] for c in listed["retired"]] == ["spring_sale"] and listed["retired"][0]["reason"] == "the sale is over"
    assert a.delete("/v1/policies/lifecycle/contents/spring_sale").status_code == 404
    # put back: offered again
    assert a.put("/v1/policies/lifecycle/contents/spring_sale", json={"topic": "promotion"}).status_code == 201
    assert "spring_sale:in_app:now" in in_app_arms(b, "u3", ["spring_sale"])


@pytest.mark.parametrize("path,body,status,field", [
    ("/v1/policies/lifecycle/contents/Bad-Id", {"topic": "x"}, 400, "content_id"),
    ("/v1/policies/lifecycle/contents/x", {}, 400, "topic"),
    ("/v1/policies/lifecycle/contents/x", {"topic": "x", "features": {"d": "high"}}, 400, "features.d"),
    ("/v1/policies/lifecycle/contents/x", {"topic": "x", "valid_from": "2026-07-02T00:00:00Z",
                                           "valid_until": "2026-07-01T00:00:00Z"}, 400, "valid_until"),
    ("/v1/policies/lifecycle/contents/x", {"topic": "x", "colour": "red"}, 400, "colour"),
    ("/v1/policies/nope/contents/x", {"topic": "x"}, 404, "policy"),
])
def test_bad_catalog_changes_name_their_field(workers, path, body, status, field):
    a, _ = workers
    r = a.put(path, json=body)
    assert r.status_code == status and r.content_type == "application/problem+json"
    assert r.json["field"] == field or r.json["field"].startswith(field), r.json
    assert a.get("/v1/policies/lifecycle").json["arm_count"] == 70


def test_the_fallback_arms_content_cannot_be_retired(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (POLICIES_DIR / "lifecycle.toml").read_text().replace("hold = true", "hold = false")
    text = text.replace('fallback_arm = "hold"', 'fallback_arm = "welcome_tips:in_app:now"')
    (policies / "lifecycle.toml").write_text(text)
    app = create_app({"DB": str(tmp_path / "f.db"), "POLICIES": str(policies), "ACCESS_LOG": False})
    r = app.test_client().delete("/v1/policies/lifecycle/contents/welcome_tips")
    assert r.status_code == 409 and r.json["field"] == "content_id" and "fallback" in r.json["detail"]
    app.extensions["tactful"].store.close()


def test_history_of_a_changing_catalog_is_learned_exported_and_evaluated(tmp_path):
    """Decisions made before a content was retired and after one was added are all learned (none
    skipped), exported and evaluated, each on its own allowed arms."""
    policies_dir = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies_dir)
    store = open_store(str(tmp_path / "h.db"))
    clock = ManualClock(1_780_000_000.0)
    served = load_policies(policies_dir)
    engine = build_engine(store, served, clock, refresh_seconds=0)
    engine.ensure_models()
    reloads = PolicyReloads(store, served, engine.use_policy, refresh_seconds=0)
    learner = build_learner(store, load_policies(policies_dir), clock, follow_reloads=True)
    events = []

    def decide_some(n: int):
        for i in range(n):
            events.append(engine.decide("lifecycle", DecideInput(f"u{i}", {"segment": "s"}))["event_id"])
            clock.advance(600)

    decide_some(30)
    reloads.change_content("lifecycle", "spring_sale", None, clock.now(), "test", "over")
    reloads.change_content("lifecycle", "summer_sale", {"topic": "promotion"}, clock.now(), "test", "new")
    decide_some(30)
    assert any(engine.event(e)["action"]["content"] == "summer_sale" or "summer_sale:in_app:now" in
               [a["arm"] for a in engine.event(e)["allowed"]] for e in events[30:])
    clock.advance(2 * 86400)
    assert learner.step("lifecycle") == 60
    note = json.loads(store.versions("lifecycle")[-1]["note"])
    assert note["skipped"] == 0  # the retired content's decisions too
    policy = with_catalog(load_policies(policies_dir)["lifecycle"], store.catalog_changes("lifecycle"))
    rows = list(final_decisions(store, policy, clock.now()))
    assert len(rows) == 60
    assert export(rows, policy, "vw", tmp_path / "log.vw") == 60
    result = evaluate(store, policy, "active", ("uniform",), now=clock.now(), rows=rows, n_boot=50)
    assert result.n == 60
    store.close()
