"""The official Azure Personalizer clients against a real `tactful serve` (gunicorn workers and the
learner): azure-ai-personalizer 1.0.0b1 (azure-core; `/personalizer/...?api-version=2022-09-01-preview`)
and azure-cognitiveservices-personalizer 0.1.1 (msrest; `/personalizer/v1.0/...`), each with a
Tactful API key in `Ocp-Apim-Subscription-Key`, the endpoint given with a trailing slash as users
often do (the clients then send `//personalizer`)."""
from __future__ import annotations

import io
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.cognitiveservices.personalizer import PersonalizerClient as PersonalizerClientV1
from azure.cognitiveservices.personalizer.models import RankableAction, RankRequest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from msrest.authentication import CognitiveServicesCredentials

from serving import start_serve
from service.api.auth import create_key
from service.store import open_store

pytestmark = pytest.mark.e2e

POLICY = """
name = "personalizer"
kind = "personalizer"
[reward]
weights = { reward = 1.0, activate = 0.0 }
min = -1.0
max = 1.0
[learner]
vw_args = "--epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q UA -q UI"
learn_every_seconds = 1
"""
ACTIONS = [{"id": "news", "features": [{"topic": "news", "length": 3}]},
           {"id": "sport", "features": [{"topic": "sport"}, {"length": 1}]}]
PREFERS = {"morning": "news", "evening": "sport"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One `tactful serve` for the module, with a decide key and an admin key."""
    tmp = tmp_path_factory.mktemp("personalizer")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "personalizer.toml").write_text(POLICY)
    store = open_store(str(tmp / "p.db"))
    keys = {scope: create_key(store, f"{scope}-key", [scope], time.time()) for scope in ("decide", "admin")}
    store.close()
    proc, base = start_serve(["--db", str(tmp / "p.db"), "--policies", str(tmp / "policies"), "--workers", "2"],
                             tmp / "serve.log")
    # a short reward wait from the first event on: the learner takes events in order, so one event
    # waiting the default ten minutes would hold back every later one
    PersonalizerAdministrationClient(base, AzureKeyCredential(keys["admin"])).update_service_configuration(
        {"rewardWaitTime": "PT5S"})
    yield base + "/", keys  # the trailing slash: the clients send //personalizer/...
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def clients(served):
    endpoint, keys = served
    return (PersonalizerClient(endpoint, AzureKeyCredential(keys["decide"])),
            PersonalizerAdministrationClient(endpoint, AzureKeyCredential(keys["admin"])),
            PersonalizerClientV1(endpoint, CognitiveServicesCredentials(keys["decide"])))


def test_rank_reward_activate_through_both_clients(served):
    client, admin, v1 = clients(served)
    r = client.rank({"contextFeatures": [{"time": "morning"}], "actions": ACTIONS, "eventId": "p1",
                     "excludedActions": ["sport"]})
    assert r["eventId"] == "p1" and r["rewardActionId"] == "news"
    assert client.rank({"contextFeatures": [{"time": "morning"}], "actions": ACTIONS, "eventId": "p1",
                        "excludedActions": ["sport"]}) == r  # a retry is the same event
    client.reward("p1", {"value": 0.5})
    deferred = client.rank({"contextFeatures": [{"time": "evening"}], "actions": ACTIONS, "deferActivation": True})
    client.activate(deferred["eventId"])
    client.reward(deferred["eventId"], {"value": 1.0})
    old = v1.rank(RankRequest(context_features=[{"time": "evening"}], event_id="v1",
                              actions=[RankableAction(id=a["id"], features=a["features"]) for a in ACTIONS]))
    assert old.event_id == "v1" and old.reward_action_id in {"news", "sport"}
    assert abs(sum(a.probability for a in old.ranking) - 1.0) < 1e-6
    v1.events.reward("v1", 1.0)
    v1.events.activate("v1")
    with pytest.raises(HttpResponseError) as bad:
        client.reward("p1", {"value": 3})
    assert bad.value.status_code == 400 and bad.value.error.code == "BadArgument"
    with pytest.raises(HttpResponseError) as refused:  # a decide key cannot configure
        PersonalizerAdministrationClient(served[0], AzureKeyCredential(served[1]["decide"])).get_policy()
    assert refused.value.status_code == 403


def test_multislot_rank_and_reward(served):
    client, _, _ = clients(served)
    r = client.rank_multi_slot({"contextFeatures": [{"time": "morning"}], "eventId": "m1",
                                "actions": ACTIONS + [{"id": "music", "features": [{"topic": "music"}]}],
                                "slots": [{"id": "hero", "baselineAction": "news"},
                                          {"id": "side", "baselineAction": "sport"}], "deferActivation": True})
    slots = {s["id"]: s["rewardActionId"] for s in r["slots"]}
    assert set(slots) == {"hero", "side"} and len(set(slots.values())) == 2
    client.reward_multi_slot("m1", {"reward": [{"slotId": "hero", "value": 1.0}, {"slotId": "side", "value": 0.0}]})
    client.activate_multi_slot("m1")


def test_configuration_evaluation_and_model_through_the_admin_client(served):
    _, admin, _ = clients(served)
    conf = admin.get_service_configuration()
    assert conf["learningMode"] == "Online"
    conf.update({"rewardWaitTime": "PT5S", "defaultReward": 0.0, "explorationPercentage": 0.2})
    assert admin.update_service_configuration(conf)["rewardWaitTime"] == "PT5S"
    policy = admin.get_policy()
    assert "--cb_type mtr" in policy["arguments"]
    assert admin.update_policy({"name": "p", "arguments": policy["arguments"]})["arguments"] == policy["arguments"]
    model = b"".join(admin.export_model())
    assert model
    admin.import_model(io.BytesIO(model))
    assert admin.get_model_properties()["lastModifiedTime"]
    now = datetime.now(timezone.utc)
    admin.create_evaluation("ev1", {"name": "ev1", "startTime": (now - timedelta(days=1)).isoformat(),
                                    "endTime": (now + timedelta(days=1)).isoformat(),
                                    "policies": [{"name": "faster", "arguments": "--cb_explore_adf -q UA -l 0.5"}]})
    ev = admin.get_evaluation("ev1", start_time=now - timedelta(days=1), end_time=now + timedelta(days=1))
    assert ev["status"] == "Succeeded" and {p["name"] for p in ev["content"]["value"]} <= {"Online", "Baseline",
                                                                                         "faster"}
    assert [e["id"] for e in admin.list_evaluations()] == ["ev1"]
    assert admin.get_log_properties()["events"] >= 0


def test_a_rank_loop_learns_a_two_context_preference_through_the_client(served):
    """The client's loop: rank, reward 1 for each context's preferred action; the real learner
    learns it within seconds, and Rank then serves each context its preference."""
    client, admin, _ = clients(served)
    conf = admin.get_service_configuration()
    admin.update_service_configuration(conf | {"rewardWaitTime": "PT5S", "explorationPercentage": 0.3})
    admin.update_policy({"name": "fast", "arguments": "--cb_explore_adf --epsilon 0.2 --cb_type mtr -q UA -q UI"})
    for i in range(200):
        context = ("morning", "evening")[i % 2]
        r = client.rank({"contextFeatures": [{"time": context}], "actions": ACTIONS})
        client.reward(r["eventId"], {"value": 1.0 if r["rewardActionId"] == PREFERS[context] else 0.0})
    admin.update_service_configuration(conf | {"explorationPercentage": 0.0})
    deadline = time.time() + 40
    while True:
        served_now = {c: client.rank({"contextFeatures": [{"time": c}], "actions": ACTIONS})["rewardActionId"]
                      for c in PREFERS}
        if served_now == PREFERS or time.time() > deadline:
            break
        time.sleep(1)
    assert served_now == PREFERS
