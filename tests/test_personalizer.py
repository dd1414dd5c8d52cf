"""Azure Personalizer's REST API on Tactful, in process: Rank with per-request actions, Reward,
Activate, multi-slot, configuration, the model, evaluations, errors in Personalizer's shape, the
subscription key. Real app, real SQLite file, real VW, the real online learner; the official
clients drive a real `tactful serve` in tests/test_personalizer_e2e.py."""
from __future__ import annotations

import json
import time

import pytest

from conftest import POLICIES_DIR, REPO_ROOT
from service.api.app import create_app
from service.api.auth import create_key
from service.clock import ManualClock
from service.errors import BadRequest
from service.learning.registry import VersionRegistry
from service.learning.retrain import retrain
from service.learning.shadow_report import shadow_report
from service.offline.errors import EvaluationError
from service.offline.evaluate import evaluate
from service.offline.export import export, final_decisions
from service.policy import load_policy
from service.policy.personalizer import format_timespan, parse_timespan
from service.policy.stored import canonical
from service.runtime import build_learner

START = 1_780_000_000.0
LOOP = REPO_ROOT / "examples" / "personalizer" / "personalizer.toml"
ACTIONS = [{"id": "news", "features": [{"topic": "news", "length": 3}]},
           {"id": "sport", "features": [{"topic": "sport"}, {"length": 1}]}]
PREFERS = {"morning": "news", "evening": "sport"}


@pytest.fixture
def loop(tmp_path):
    clock = ManualClock(START)
    policies = {p.name: p for p in (load_policy(LOOP), load_policy(POLICIES_DIR / "lifecycle.toml"))}
    app = create_app({"DB": str(tmp_path / "p.db"), "POLICIES": policies, "CLOCK": clock, "ACCESS_LOG": False,
                      "MODEL_REFRESH_SECONDS": 0})
    yield app, app.test_client(), clock
    app.extensions["tactful"].store.close()


def rank(client, context: str | None = None, path="/personalizer/rank?api-version=2022-09-01-preview", **extra):
    body = {"contextFeatures": [{"time": context or "morning"}], "actions": ACTIONS} | extra
    return client.post(path, json=body)


def assert_error(r, status: int, code: str, target: str | None = None):
    assert r.status_code == status, r.data
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json["error"]["code"] == code and r.json["error"]["message"]
    if target is not None:
        assert r.json["error"]["target"] == target


def learner(app, clock):
    engine = app.extensions["tactful"]
    return build_learner(engine.store, engine.policies, clock)


def test_rank_answers_in_both_url_forms_and_a_retry_is_the_same_event(loop):
    _, client, _ = loop
    first = rank(client, eventId="e1", excludedActions=["sport"])
    assert first.status_code == 201
    assert first.json["eventId"] == "e1" and first.json["rewardActionId"] == "news"
    assert first.json["ranking"] == [{"id": "news", "probability": 1.0}, {"id": "sport", "probability": 0.0}]
    for path in ("/personalizer/v1.0/rank", "/personalizer/rank"):  # the doubled slash: over HTTP, in the e2e test
        again = rank(client, path=path, eventId="e1", excludedActions=["sport"])
        assert again.status_code == 201 and again.json == first.json
    assert_error(rank(client, "evening", eventId="e1"), 409, "Conflict", "eventId")
    fresh = rank(client, path="/personalizer/v1.0/rank")
    assert fresh.status_code == 201 and fresh.json["eventId"] != "e1"
    assert sum(a["probability"] for a in fresh.json["ranking"]) == pytest.approx(1.0)
    assert fresh.json["ranking"][0]["id"] == fresh.json["rewardActionId"]


def test_bad_input_is_answered_in_personalizers_error_shape(loop):
    _, client, _ = loop
    assert_error(client.post("/personalizer/rank", json={"actions": []}), 400, "BadArgument", "actions")
    assert_error(rank(client, excludedActions=["news", "sport"]), 400, "BadArgument", "excludedActions")
    assert_error(client.post("/personalizer/rank", json={"actions": [{"id": "a"}, {"id": "a"}]}), 400,
                 "BadArgument", "actions[1].id")
    assert_error(rank(client, deferActivation="yes"), 400, "BadArgument", "deferActivation")
    event = rank(client).json["eventId"]
    assert_error(client.post(f"/personalizer/events/{event}/reward", json={"value": 2}), 400, "BadArgument", "value")
    assert_error(client.post("/personalizer/events/nope/reward", json={"value": 1}), 404, "ResourceNotFound",
                 "eventId")
    assert_error(client.get("/personalizer/nowhere"), 404, "ResourceNotFound")
    assert_error(client.delete("/personalizer/logs"), 501, "NotSupported")
    assert_error(client.get("/personalizer/featureImportances"), 501, "NotSupported")
    decide = client.post("/v1/policies/personalizer/decide", json={"user_id": "u1", "context": {}})
    assert decide.status_code == 409 and "/personalizer/rank" in decide.json["detail"]  # Tactful's own shape


def test_the_learner_learns_each_contexts_preference_from_the_logged_actions(loop):
    """Two contexts, two actions: the online learner learns from the actions and features logged
    with each event (there is no catalogue), and Rank then serves each context its preference."""
    app, client, clock = loop
    for i in range(300):
        context = ("morning", "evening")[i % 2]
        r = rank(client, context).json
        reward = 1.0 if r["rewardActionId"] == PREFERS[context] else 0.0
        assert client.post(f"/personalizer/events/{r['eventId']}/reward", json={"value": reward}).status_code == 204
    clock.advance(601)
    assert learner(app, clock).step("personalizer") == 300
    client.put("/personalizer/configurations/service", json={"explorationPercentage": 0.0})
    for context, preferred in PREFERS.items():
        r = rank(client, context).json
        assert r["rewardActionId"] == preferred and r["ranking"][0]["probability"] == 1.0
    event = client.get(f"/v1/events/{r['eventId']}").json  # Tactful's explanation of a Rank event
    assert event["policy"] == "personalizer" and event["explanation"]["history"]["personalizer"]["actions"]


def test_deferred_events_are_learned_only_once_activated(loop):
    app, client, clock = loop
    kept = rank(client, eventId="kept", deferActivation=True).json
    dropped = rank(client, eventId="dropped", deferActivation=True).json
    assert client.post("/personalizer/events/kept/activate").status_code == 204
    for r in (kept, dropped):
        client.post(f"/personalizer/events/{r['eventId']}/reward", json={"value": 1.0})
    clock.advance(601)
    assert learner(app, clock).step("personalizer") == 2
    note = json.loads(app.extensions["tactful"].store.versions("personalizer")[-1]["note"])
    assert note["decisions"] == 2 and note["skipped"] == 1
    assert_error(client.post("/personalizer/events/nope/activate"), 404, "ResourceNotFound")


def test_multislot_rank_gives_each_slot_its_own_action_and_takes_rewards_per_slot(loop):
    app, client, clock = loop
    body = {"contextFeatures": [{"time": "morning"}], "actions": ACTIONS + [{"id": "music", "features": []}],
            "slots": [{"id": "hero", "baselineAction": "sport", "features": [{"size": "large"}]},
                      {"id": "side", "baselineAction": "news", "excludedActions": ["music"]}],
            "eventId": "m1", "deferActivation": True}
    r = client.post("/personalizer/multislot/rank", json=body)
    assert r.status_code == 201 and r.json["eventId"] == "m1"
    chosen = {s["id"]: s["rewardActionId"] for s in r.json["slots"]}
    assert set(chosen) == {"hero", "side"} and chosen["hero"] != chosen["side"] and chosen["side"] != "music"
    assert client.post("/personalizer/multislot/rank", json=body).json == r.json  # a retry
    rewards = {"reward": [{"slotId": "hero", "value": 1.0}, {"slotId": "side", "value": -0.5}]}
    assert client.post("/personalizer/multislot/events/m1/reward", json=rewards).status_code == 204
    assert client.post("/personalizer/multislot/events/m1/activate").status_code == 204
    assert_error(client.post("/personalizer/multislot/events/m1/reward",
                             json={"reward": [{"slotId": "nope", "value": 1}]}), 404, "ResourceNotFound", "slotId")
    clock.advance(601)
    assert learner(app, clock).step("personalizer") == 2
    store = app.extensions["tactful"].store
    assert {d.reward for d in store.decisions_with_prefix("personalizer", "m1#slot:")} == {1.0, -0.5}


def test_service_configuration_is_read_updated_and_applied(loop):
    app, client, clock = loop
    conf = client.get("/personalizer/configurations/service").json
    assert conf["rewardWaitTime"] == "PT10M" and conf["learningMode"] == "Online"
    new = client.put("/personalizer/configurations/service",
                     json=conf | {"rewardWaitTime": "PT30S", "defaultReward": -0.25, "learningMode": "Apprentice"})
    assert new.status_code == 200 and new.json["rewardWaitTime"] == "PT30S" and new.json["defaultReward"] == -0.25
    assert client.get("/personalizer/configurations/service").json["learningMode"] == "Apprentice"
    for i in range(6):  # the apprentice serves the baseline, the first action, and learns
        r = rank(client, ("morning", "evening")[i % 2]).json
        assert r["rewardActionId"] == "news" and r["ranking"][0]["probability"] == 1.0
    clock.advance(31)
    assert learner(app, clock).step("personalizer") == 6
    metrics = client.get("/personalizer/configurations/service").json["latestApprenticeModeMetrics"]
    assert metrics["numberOfEvents"] == 6 and 0 <= metrics["numberOfImitatedEvents"] <= 6
    assert metrics["sumOfRewards"] == pytest.approx(-1.5)  # no reward came: the default, -0.25 each
    for field, value in (("rewardWaitTime", "soon"), ("rewardWaitTime", "PT1S"), ("learningMode", "Offline"),
                         ("explorationPercentage", 2), ("rewardAggregation", "max")):
        assert_error(client.put("/personalizer/configurations/service", json={field: value}), 400, "BadArgument", field)


def test_learning_policy_and_model_are_versions_that_roll_back(loop):
    app, client, _ = loop
    before = client.get("/personalizer/configurations/policy").json
    assert before["arguments"].startswith("--cb_explore_adf ") and "-q UA" in before["arguments"]
    new = client.put("/personalizer/configurations/policy", json={"name": "x", "arguments": "--cb_explore_adf --epsilon 0.3 -q UA"})
    assert new.status_code == 200 and new.json["arguments"] == "--cb_explore_adf --epsilon 0.3 -q UA"
    assert_error(client.put("/personalizer/configurations/policy", json={"arguments": "--no_such_option"}),
                 400, "BadArgument", "arguments")
    assert client.delete("/personalizer/configurations/policy").json["arguments"] == before["arguments"]
    exported = client.get("/personalizer/model")
    assert exported.status_code == 200 and exported.mimetype == "application/octet-stream" and exported.data
    assert client.put("/personalizer/model", data=exported.data,
                      content_type="application/octet-stream").status_code == 204
    assert_error(client.put("/personalizer/model", data=b"not a model"), 400, "BadArgument", "body")
    large = b"x" * (2 * 1024 * 1024)  # larger than other bodies may be: refused as a model, not for its size
    assert_error(client.put("/personalizer/model", data=large), 400, "BadArgument", "body")
    assert client.delete("/personalizer/model").status_code == 204
    props = client.get("/personalizer/model/properties").json
    assert props["creationTime"] and props["lastModifiedTime"] and props["version"] == 5
    models = client.get("/v1/policies/personalizer/models").json  # each change a version, rollback-able
    assert [v["source"] for v in models["versions"]][1:] == ["personalizer policy", "personalizer policy",
                                                              "import", "personalizer reset"]


def test_an_evaluation_estimates_each_setting_with_an_interval(loop):
    app, client, clock = loop
    for i in range(120):
        context = ("morning", "evening")[i % 2]
        r = rank(client, context).json
        client.post(f"/personalizer/events/{r['eventId']}/reward",
                    json={"value": 1.0 if r["rewardActionId"] == PREFERS[context] else 0.0})
    clock.advance(601)
    body = {"name": "try", "startTime": "2020-01-01T00:00:00Z", "endTime": "2100-01-01T00:00:00Z",
            "policies": [{"name": "interactions", "arguments": "--cb_explore_adf --epsilon 0.1 -q UA -l 0.5"}]}
    created = client.put("/personalizer/evaluations/ev1", json=body)
    assert created.status_code == 200 and created.json["status"] == "Succeeded" and created.json["events"] == 120
    results = {p["name"]: p for p in client.get("/personalizer/evaluations/ev1").json["content"]["value"]}
    assert set(results) == {"Online", "Baseline", "interactions"}
    for p in results.values():
        lo, hi = p["summary"]["confidenceInterval"]
        assert lo <= p["summary"]["expectedReward"] <= hi
    assert results["Baseline"]["summary"]["expectedReward"] == pytest.approx(0.5, abs=0.25)
    assert [e["id"] for e in client.get("/personalizer/evaluations").json["value"]] == ["ev1"]
    assert client.delete("/personalizer/evaluations/ev1").status_code == 204
    assert_error(client.get("/personalizer/evaluations/ev1"), 404, "ResourceNotFound", "evaluationId")
    assert client.get("/personalizer/logs/properties").json["events"] == 120


def test_the_subscription_key_is_a_tactful_key_with_its_scopes(loop):
    app, client, _ = loop
    store = app.extensions["tactful"].store
    decide = create_key(store, "ranker", ["decide"], time.time())
    admin = create_key(store, "ops", ["admin"], time.time())
    app.extensions["tactful_keys"].refresh()
    assert_error(rank(client), 401, "Unauthorized")
    ok = client.post("/personalizer/rank", json={"actions": ACTIONS}, headers={"Ocp-Apim-Subscription-Key": decide})
    assert ok.status_code == 201
    assert_error(client.get("/personalizer/configurations/service", headers={"Ocp-Apim-Subscription-Key": decide}),
                 403, "PermissionDenied")
    assert client.get("/personalizer/configurations/service",
                      headers={"Ocp-Apim-Subscription-Key": admin}).status_code == 200
    assert_error(client.get("/personalizer/model", headers={"Ocp-Apim-Subscription-Key": "tk_unknown"}),
                 401, "Unauthorized")
    # the header is Personalizer's only: Tactful's own routes still want Authorization
    assert client.get("/v1/policies", headers={"Ocp-Apim-Subscription-Key": admin}).status_code == 401


CHANNELED = [{"id": "mail", "features": [{"channel": "email", "topic": "promotion"}]},
             {"id": "ping", "features": [{"channel": "push", "topic": "news"}]},
             {"id": "promo", "features": [{"channel": "push", "topic": "promotion"}]},
             {"id": "plain", "features": [{"length": 2}]}]


def test_guardrails_apply_to_rank_where_the_context_names_a_person(loop):
    """Actions that declare a channel or a topic meet the person's consent, preferences and
    signals; an action that declares neither, or a context without a person, ranks as
    Personalizer did."""
    app, client, _ = loop
    assert client.put("/v1/users/u1/consent", json={"channels": {"push": True}, "source": "test"}).status_code == 200
    assert client.put("/v1/users/u1/preferences", json={"blocked_topics": ["promotion"]}).status_code == 200
    ranked = client.post("/personalizer/rank", json={"contextFeatures": [{"user_id": "u1", "time": "am"}],
                                                     "actions": CHANNELED, "eventId": "g1"}).json
    probability = {a["id"]: a["probability"] for a in ranked["ranking"]}
    assert probability["mail"] == probability["promo"] == 0.0 and probability["ping"] + probability["plain"] == 1.0
    event = client.get("/v1/events/g1").json
    assert {r["reason"] for r in event["removed_arms"]["mail"]} == {"no_consent", "blocked_topic"}
    assert [r["reason"] for r in event["removed_arms"]["promo"]] == ["blocked_topic"]
    assert "user_id" not in event["context"]  # the person is keyed, never a feature
    anonymous = client.post("/personalizer/rank", json={"contextFeatures": [{"time": "am"}], "actions": CHANNELED,
                                                        "eventId": "g2"}).json
    assert all(a["probability"] > 0 for a in anonymous["ranking"])  # no person: Personalizer's behaviour
    only_mail = client.post("/personalizer/rank", json={"contextFeatures": [{"user_id": "u1"}],
                                                        "actions": CHANNELED[:1], "eventId": "g3"})
    assert only_mail.status_code == 201 and only_mail.json["rewardActionId"] is None
    assert only_mail.json["ranking"] == [{"id": "mail", "probability": 0.0}]
    metrics = client.get("/metrics").data.decode()  # counted as decides are, where the work happens
    assert 'tactful_removed_arms_total{policy="personalizer",reason="no_consent"}' in metrics


def test_a_ranked_push_is_a_contact_and_a_refused_channel_is_not_ranked(loop):
    app, client, _ = loop
    client.put("/v1/users/u2/consent", json={"channels": {"push": True}, "source": "test"})
    ping = [CHANNELED[1]]
    r = client.post("/personalizer/rank", json={"contextFeatures": [{"user_id": "u2"}], "actions": ping}).json
    assert r["rewardActionId"] == "ping"
    contacts = client.get("/v1/users/u2").json["contacts"]
    assert [(c["channel"], c["policy"]) for c in contacts] == [("push", "personalizer")]
    client.put("/v1/users/u2/consent", json={"channels": {"push": False}, "source": "test"})
    again = client.post("/personalizer/rank", json={"contextFeatures": [{"user_id": "u2"}], "actions": ping}).json
    assert again["rewardActionId"] is None


@pytest.mark.slow  # the same queries run in the fast tests above on SQLite; CI runs both backends
def test_the_loops_store_queries_on_both_backends(store_url, tmp_path):
    """Configuration, multi-slot events, evaluations, the log's extent and the apprentice's
    events: the queries of service/store/personalizer.py, on SQLite and on PostgreSQL."""
    clock = ManualClock(START)
    app = create_app({"DB": store_url, "POLICIES": {"personalizer": load_policy(LOOP)}, "CLOCK": clock,
                      "ACCESS_LOG": False, "MODEL_REFRESH_SECONDS": 0})
    client = app.test_client()
    try:
        assert client.put("/personalizer/configurations/service",
                          json={"learningMode": "Apprentice", "rewardWaitTime": "PT1M"}).status_code == 200
        body = {"actions": ACTIONS, "slots": [{"id": "a"}, {"id": "b"}], "eventId": "m"}
        assert client.post("/personalizer/multislot/rank", json=body).status_code == 201
        assert client.post("/personalizer/multislot/events/m/activate").status_code == 204
        assert client.post("/personalizer/multislot/events/m/reward",
                           json={"reward": [{"slotId": "b", "value": 0.5}]}).status_code == 204
        clock.advance(61)
        assert learner(app, clock).step("personalizer") == 2
        assert client.get("/personalizer/configurations/service").json["latestApprenticeModeMetrics"][
            "numberOfEvents"] == 2
        assert client.get("/personalizer/logs/properties").json["events"] == 2
        assert client.put("/personalizer/evaluations/e", json={"name": "e"}).json["events"] == 2
        assert [e["id"] for e in client.get("/personalizer/evaluations").json["value"]] == ["e"]
        assert client.delete("/personalizer/evaluations/e").status_code == 204
        assert client.get("/personalizer/evaluations").json["value"] == []
    finally:
        app.extensions["tactful"].store.close()


def test_export_writes_rank_events_as_the_learner_learns_them(loop, tmp_path):
    """`tactful export`'s library twin: a Rank event's VW example is built from its logged
    actions; an event whose deferred activation never came is in the CSV, not in the examples."""
    app, client, clock = loop
    kept = rank(client, "evening", eventId="k").json
    client.post("/personalizer/events/k/reward", json={"value": 1.0})
    rank(client, eventId="never", deferActivation=True)
    clock.advance(601)
    engine = app.extensions["tactful"]
    policy = engine.policies["personalizer"]
    n = export(final_decisions(engine.store, policy, clock.now()), policy, "vw", tmp_path / "out.vw")
    examples = (tmp_path / "out.vw").read_text().strip().split("\n\n")
    assert n == 1 and len(examples) == 1
    shared, *actions = examples[0].splitlines()
    assert shared.startswith("shared |User time=evening")
    assert [line.startswith("0:0.000000:") for line in actions] == [a["id"] == kept["rewardActionId"] for a in ACTIONS]
    assert all("|Arm " in line and "|Id arm=" in line for line in actions)
    assert export(final_decisions(engine.store, policy, clock.now()), policy, "csv", tmp_path / "out.csv") == 2
    with pytest.raises(EvaluationError, match="/personalizer/evaluations"):
        evaluate(engine.store, policy, "active", now=clock.now())
    with pytest.raises(EvaluationError, match="/personalizer/evaluations"):
        retrain(engine.store, policy, clock.now())


def test_the_shadow_candidate_scores_rank_events_and_rollback_serves_an_older_version(loop):
    app, client, clock = loop
    engine = app.extensions["tactful"]
    registry = VersionRegistry(engine.store)
    client.put("/personalizer/configurations/policy", json={"arguments": "--epsilon 0.1 -q UA -q UI"})
    registry.set_shadow("personalizer", 1, clock.now())
    for i in range(40):
        r = rank(client, ("morning", "evening")[i % 2]).json
        client.post(f"/personalizer/events/{r['eventId']}/reward", json={"value": 1.0 if i % 3 else 0.0})
    assert len(engine.store.shadow_decisions("personalizer")) == 40
    clock.advance(601)
    report = shadow_report(engine.store, engine.policies["personalizer"], clock.now())
    assert report["versions"] == [1] and report["n"] == 40 and 0 <= report["agreement"] <= 1
    lo, hi = report["estimates"][0]["lo"], report["estimates"][0]["hi"]
    assert lo <= report["estimates"][0]["value"] <= hi
    registry.rollback("personalizer", clock.now())
    assert client.get("/personalizer/configurations/policy").json["arguments"] == \
        "--cb_explore_adf " + load_policy(LOOP).spec.learner.vw_args


def test_a_catalog_policys_fingerprint_is_what_stores_written_before_kinds_recorded():
    """`kind` is new: at its default it stays out of the canonical spec, so a store written before
    it does not see its unchanged catalog policies as changed (service/policy/stored.py)."""
    assert '"kind"' not in canonical(load_policy(POLICIES_DIR / "lifecycle.toml"))
    assert '"kind":"personalizer"' in canonical(load_policy(LOOP))


@pytest.mark.parametrize("text,seconds", [("PT10M", 600), ("PT5S", 5), ("P1DT2H", 93600), ("00:10:00", 600),
                                          ("1.02:00:00", 93600), ("PT1H30M", 5400)])
def test_durations_in_both_forms_personalizer_clients_send(text, seconds):
    assert parse_timespan(text, "rewardWaitTime") == seconds
    assert parse_timespan(format_timespan(seconds), "rewardWaitTime") == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "10 minutes", "T10M", 600])
def test_a_duration_that_is_not_one_names_its_field(text):
    with pytest.raises(BadRequest, match="modelExportFrequency"):
        parse_timespan(text, "modelExportFrequency")
