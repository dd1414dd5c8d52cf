"""`tactful evaluate` and `tactful retrain` on a Personalizer loop (per-request actions): a learning
setting or a version scored over the logged Rank events, and a retrained candidate stored with an
evaluation from a held-out slice that `tactful models promote` accepts. Real app, real SQLite
file, real VW; the events come through the Rank and Reward routes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import POLICIES_DIR, REPO_ROOT
from service.api.app import create_app
from service.cli.main import main
from service.clock import ManualClock
from service.learning.rank_retrain import evaluate_rank, retrain_rank
from service.learning.registry import VersionRegistry
from service.offline.errors import EvaluationError, NotEnoughData
from service.policy import load_policy
from service.runtime import build_learner

pytestmark = pytest.mark.slow

START = 1_780_000_000.0
ACTIONS = [{"id": "news", "features": [{"topic": "news", "length": 3}]},
           {"id": "sport", "features": [{"topic": "sport"}, {"length": 1}]},
           {"id": "music", "features": [{"topic": "music"}]}]
PREFERS = {"morning": "news", "evening": "sport"}


@pytest.fixture
def logged(tmp_path):
    """A loop whose served model never learned (no learner step), exploring widely (80%) while it
    logged 600 Rank events over two contexts, rewarded 1 for each context's preferred action."""
    (tmp_path / "policies").mkdir()
    text = (REPO_ROOT / "examples" / "personalizer" / "personalizer.toml").read_text()
    (tmp_path / "policies" / "personalizer.toml").write_text(text + "\n[promotion]\nmin_decisions = 100\n")
    clock = ManualClock(START)
    policies = {p.name: p for p in (load_policy(tmp_path / "policies" / "personalizer.toml"),
                                    load_policy(POLICIES_DIR / "lifecycle.toml"))}
    db = str(tmp_path / "p.db")
    app = create_app({"DB": db, "POLICIES": policies, "CLOCK": clock, "ACCESS_LOG": False,
                      "MODEL_REFRESH_SECONDS": 0})
    client = app.test_client()
    client.put("/personalizer/configurations/service", json={"explorationPercentage": 0.8})
    for i in range(600):
        context = ("morning", "evening")[i % 2]
        r = client.post("/personalizer/rank", json={"contextFeatures": [{"time": context}], "actions": ACTIONS}).json
        client.post(f"/personalizer/events/{r['eventId']}/reward",
                    json={"value": 1.0 if r["rewardActionId"] == PREFERS[context] else 0.0})
        clock.advance(1)
    clock.advance(601)
    # what is evaluated is served as Rank would serve it now: with the usual 20% exploration
    client.put("/personalizer/configurations/service", json={"explorationPercentage": 0.2})
    yield app.extensions["tactful"].store, policies["personalizer"], clock, db, tmp_path / "policies", client
    app.extensions["tactful"].store.close()


def test_a_learning_setting_is_scored_above_what_was_served_and_a_version_from_its_state(logged):
    store, policy, clock, _, _, client = logged
    setting = evaluate_rank(store, policy, "--cb_type mtr -q UA -q UI", clock.now())
    names = {e["name"]: e for e in setting["estimates"]}
    assert setting["n"] == 600 and set(names) == {"--cb_type mtr -q UA -q UI", "Online", "Baseline"}
    # served: a model that never learned, exploring 80%: about a third of the rewards
    assert names["Online"]["value"] == pytest.approx(1 / 3, abs=0.1)
    # learning the two preferences and exploring 20%: about 0.8 + 0.2 / 3
    assert names["--cb_type mtr -q UA -q UI"]["value"] == pytest.approx(0.87, abs=0.06)
    assert setting["lift"]["lo"] > 0.3
    version = evaluate_rank(store, policy, "v1", clock.now())  # the initial model, learning from its state
    assert version["version"] == 1 and version["lift"]["lo"] > 0
    with pytest.raises(EvaluationError, match="no model version 9"):
        evaluate_rank(store, policy, "9", clock.now())
    with pytest.raises(EvaluationError, match="VW arguments"):
        evaluate_rank(store, policy, "uniform", clock.now())


def test_retrain_stores_a_candidate_evaluated_on_a_held_out_slice_that_promote_accepts(logged):
    store, policy, clock, _, _, client = logged
    r = retrain_rank(store, policy, clock.now())
    assert (r["train"], r["select"], r["held_out"]) == (360, 120, 120)
    registry = VersionRegistry(store)
    stored = registry.latest_evaluation(policy.name, r["version"])
    assert stored["held_out"] is True and stored["n"] == 120 and stored["reference"] == "Online"
    assert registry.version(policy.name, r["version"])["n_learned"] == 480
    assert stored["lift"]["lo"] > 0 and r["chosen"] in {s["vw_args"] for s in r["search"]}
    assert store.active_version(policy.name) != r["version"]  # a candidate, not active
    again = retrain_rank(store, policy, clock.now())  # the same events: the same model, not a second candidate
    assert r["new"] and not again["new"] and again["version"] == r["version"]
    assert [v["version"] for v in registry.versions(policy.name) if v["source"] == "retrain"] == [r["version"]]
    registry.promote(policy, r["version"], clock.now())
    assert store.active_version(policy.name) == r["version"]
    with pytest.raises(NotEnoughData, match="needs at least 50"):
        retrain_rank(store, policy, clock.now(), since=clock.now() - 30)


def test_the_cli_evaluates_and_retrains_a_rank_loop(logged, tmp_path):
    store, policy, clock, db, policies, _ = logged
    now = ["--now", "2026-06-01T00:00:00Z"]
    runner = CliRunner()
    out = runner.invoke(main, ["evaluate", "--db", db, "--policies", str(policies), "--policy", "personalizer",
                              "--candidate", "--cb_type mtr -q UA", "--out", str(tmp_path / "ev"), *now])
    assert out.exit_code == 0, out.output
    assert "lift over Online" in out.output
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["n"] == 600
    out = runner.invoke(main, ["retrain", "--db", db, "--policies", str(policies), "--policy", "personalizer", *now])
    assert out.exit_code == 0, out.output
    assert "tactful models promote" in out.output and "held-out" in out.output
    version = int(out.output.split("candidate version ")[1].split()[0])
    out = runner.invoke(main, ["evaluate", "--db", db, "--policies", str(policies), "--policy", "personalizer",
                               "--candidate", str(version), "--out", str(tmp_path / "ev2"), *now])
    assert out.exit_code == 0 and f"not stored beside personalizer version {version}" in out.output, out.output


def test_the_console_shows_a_retrained_rank_candidates_estimates(logged):
    store, policy, clock, _, _, client = logged
    r = retrain_rank(store, policy, clock.now())
    page = client.get("/ui/policies/personalizer")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    lift = r["evaluation"]["lift"]
    assert f"lift over Online (SNIPS) {lift['value']:+.3f}" in text and "SNIPS Online" in text
    assert "no longer offered" not in text and 'id="arm-hold"' not in text and "(a Rank action)" in text
    assert "declares no contents" in text


def test_a_rank_loop_learns_evaluates_and_retrains_on_both_backends(store_url, tmp_path):
    """The loop end to end in process on each backend: Rank and Reward, the online learner learns
    from the logged actions, DELETE /logs keeps what is still to learn, and retrain stores a
    candidate with its held-out evaluation."""
    (tmp_path / "policies").mkdir()
    text = (REPO_ROOT / "examples" / "personalizer" / "personalizer.toml").read_text()
    (tmp_path / "policies" / "personalizer.toml").write_text(text + "\n[promotion]\nmin_decisions = 50\n")
    clock = ManualClock(START)
    policy = load_policy(tmp_path / "policies" / "personalizer.toml")
    app = create_app({"DB": store_url, "POLICIES": {policy.name: policy}, "CLOCK": clock, "ACCESS_LOG": False,
                      "MODEL_REFRESH_SECONDS": 0})
    client = app.test_client()
    store = app.extensions["tactful"].store
    try:
        for i in range(300):
            context = ("morning", "evening")[i % 2]
            r = client.post("/personalizer/v1.0/rank",
                            json={"contextFeatures": [{"time": context}], "actions": ACTIONS}).json
            assert client.post(f"/personalizer/v1.0/events/{r['eventId']}/reward",
                               json={"value": 1.0 if r["rewardActionId"] == PREFERS[context] else 0.0}).status_code == 204
            clock.advance(1)
        clock.advance(601)
        learner = build_learner(store, {policy.name: policy}, clock)
        assert learner.step(policy.name) == 300
        client.put("/personalizer/configurations/service", json={"explorationPercentage": 0.0})
        for context, preferred in PREFERS.items():
            assert client.post("/personalizer/rank", json={"contextFeatures": [{"time": context}],
                                                           "actions": ACTIONS}).json["rewardActionId"] == preferred
        r = retrain_rank(store, policy, clock.now())
        assert VersionRegistry(store).latest_evaluation(policy.name, r["version"])["n"] == 60
        assert client.delete("/personalizer/logs").status_code == 204
        assert client.get("/personalizer/logs/properties").json["events"] == 2  # the two ranked after learning
    finally:
        store.close()
