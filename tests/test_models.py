"""Model versions: list, show, activate (with a recorded reason), rollback, promote against the
policy's criteria, over the CLI and HTTP; a rollback on a real gunicorn server."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from serving import serve  # noqa: F401  (fixture)
from service.cli import main
from service.policy.bandit import new_model
from service.learning.registry import VersionRegistry
from service.clock import SystemClock
from service.decision.engine import DecideInput
from service.decision.sampling import in_holdout
from service.policy import load_policies
from service.runtime import build_engine
from service.store import Store, open_store

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "examples" / "policies"


def add_candidate(store: Store, policy_name: str = "lifecycle", source: str = "import") -> int:
    policies = load_policies(POLICIES)
    model = new_model(policies[policy_name])
    try:
        return VersionRegistry(store).add_version(policy_name, model.to_bytes(), model.vw_args, source, time.time(),
                                                  {"what": "test candidate"})
    finally:
        model.close()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "m.db"
    store = open_store(str(path))
    build_engine(store, load_policies(POLICIES), SystemClock()).ensure_models()
    add_candidate(store)
    store.close()
    return path


def cli(*args):
    return CliRunner().invoke(main, [*args])


def test_activate_and_rollback_are_recorded_with_their_reasons(db):
    base = ["--db", str(db), "--policies", str(POLICIES), "--policy", "lifecycle"]
    r = cli("models", "list", *base)
    assert r.exit_code == 0, r.output
    assert "*       1      -  init" in r.output and "        2      1  import" in r.output
    r = cli("models", "activate", *base, "2", "--reason", "offline retrain looked better")
    assert r.exit_code == 0 and "version 2 active (was 1)" in r.output, r.output
    r = cli("models", "activate", *base, "2", "--reason", "again")
    assert r.exit_code == 1 and "already active" in r.output
    r = cli("models", "rollback", *base)
    assert r.exit_code == 0 and "rolled back to version 1 (was 2)" in r.output, r.output
    r = cli("models", "show", *base, "2")
    shown = json.loads(r.output)
    assert [(a["version"], a["previous"], a["reason"]) for a in shown["activations"]] == [
        (2, 1, "offline retrain looked better"), (1, 2, "rollback from version 2")]
    assert shown["source"] == "import" and shown["note"] == {"what": "test candidate"}
    # bad input: clear errors, no traceback
    r = cli("models", "activate", *base, "9", "--reason", "x")
    assert r.exit_code == 1 and "no model version 9" in r.output
    r = cli("models", "activate", *base, "two", "--reason", "x")
    assert r.exit_code == 2 and "not a model version number" in r.output
    # no --reason: as over HTTP, a default one is recorded
    r = cli("models", "activate", *base, "2")
    assert r.exit_code == 0 and "activated from the command line" in r.output, r.output


def test_promote_refuses_a_candidate_that_misses_a_criterion_and_says_which(db):
    base = ["--db", str(db), "--policies", str(POLICIES), "--policy", "lifecycle"]
    r = cli("models", "promote", *base, "2")
    assert r.exit_code == 1 and "no evaluation is stored" in r.output
    store = open_store(str(db))
    ops = VersionRegistry(store)
    ops.store_evaluation("lifecycle", 2, {"n": 300, "reference": "active (v1)",
                                          "lift": {"value": 0.02, "lo": -0.01, "hi": 0.05},
                                          "unsubscribe": {"rise": 0.01}}, time.time())
    r = cli("models", "promote", *base, "2")
    assert r.exit_code == 1
    assert "min_decisions: evaluated on 300 decisions, fewer than the 1000 required" in r.output
    assert "min_lift_lower_bound: the lift's lower bound -0.0100" in r.output
    assert "max_unsubscribe_rise" in r.output
    assert store.active_version("lifecycle") == 1
    ops.store_evaluation("lifecycle", 2, {"n": 5000, "reference": "active (v1)",
                                          "lift": {"value": 0.05, "lo": 0.01, "hi": 0.09},
                                          "unsubscribe": {"rise": 0.0005}}, time.time())
    r = cli("models", "promote", *base, "2")
    assert r.exit_code == 0 and "promoted" in r.output, r.output
    assert store.active_version("lifecycle") == 2
    assert "lift +0.0500" in ops.activations("lifecycle", 1)[0]["reason"]


def test_models_over_http(app, client):
    store = app.extensions["tactful"].store
    add_candidate(store)
    r = client.get("/v1/policies/lifecycle/models")
    assert r.status_code == 200
    body = r.get_json()
    assert body["active_version"] == 1 and [v["version"] for v in body["versions"]] == [1, 2]
    assert body["versions"][1]["active"] is False
    r = client.post("/v1/policies/lifecycle/models/2/activate", json={"reason": "canary looked fine"})
    assert r.status_code == 200 and r.get_json()["previous"] == 1
    assert client.get("/v1/policies/lifecycle/models").get_json()["activations"][0]["reason"] == "canary looked fine"
    decided = client.post("/v1/policies/lifecycle/decide", json={"user_id": "a", "context": {"segment": "x"}})
    assert decided.get_json()["model_version"] == 2
    for path, body, status, field in [
        ("/v1/policies/nope/models/2/activate", {}, 404, "policy"),
        ("/v1/policies/lifecycle/models/two/activate", {}, 400, "version"),
        ("/v1/policies/lifecycle/models/7/activate", {}, 404, "version"),
        ("/v1/policies/lifecycle/models/2/activate", {}, 409, "version"),
        ("/v1/policies/lifecycle/models/1/activate", {"reason": 5}, 400, "reason"),
        ("/v1/policies/lifecycle/models/1/activate", [1], 400, "body"),
    ]:
        r = client.post(path, json=body)
        assert r.status_code == status, (path, r.get_json())
        assert r.content_type == "application/problem+json"
        assert r.get_json()["field"] == field
    assert client.get("/v1/policies/nope/models").status_code == 404


def _versions_served(http, base: str, n: int) -> list[int]:
    out = []
    for i in range(n):
        r = http.post(f"{base}/v1/policies/lifecycle/decide",
                      json={"user_id": f"probe-{time.time_ns()}-{i}", "context": {"segment": "x"}})
        assert r.status_code == 200, r.text
        out.append(r.json()["model_version"])
    return out


def _wait_all(http, base: str, version: int, timeout: float = 15.0) -> float:
    """Seconds until 40 consecutive decisions (spread over both workers) all name `version`."""
    start = time.time()
    while time.time() - start < timeout:
        if set(_versions_served(http, base, 40)) == {version}:
            return time.time() - start
        time.sleep(0.1)
    raise AssertionError(f"workers did not all serve version {version} within {timeout}s")


@pytest.mark.e2e
def test_rollback_on_a_real_server_reaches_every_worker_within_seconds(serve, db, tmp_path):
    http, base = serve(db=db, workers=2)
    assert set(_versions_served(http, base, 20)) == {1}
    r = http.post(f"{base}/v1/policies/lifecycle/models/2/activate", json={"reason": "e2e: new version"})
    assert r.status_code == 200, r.text
    took_activate = _wait_all(http, base, 2)
    rolled = subprocess.run([sys.executable, "-m", "service.cli", "models", "rollback", "--db", str(db),
                             "--policies", str(POLICIES), "--policy", "lifecycle", "--reason", "e2e: roll back"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert rolled.returncode == 0, rolled.stderr
    took_rollback = _wait_all(http, base, 1)
    assert took_activate < 5 and took_rollback < 5, (took_activate, took_rollback)
    models = http.get(f"{base}/v1/policies/lifecycle/models").json()
    assert models["active_version"] == 1
    assert [a["reason"] for a in models["activations"][:2]] == ["e2e: roll back", "e2e: new version"]


def test_a_version_vw_cannot_load_is_never_scored_with(tmp_path):
    """Bytes VW refuses, active or shadow: the engine serves the policy's fallback and says which
    version it could not use, the shadow scores nothing, and neither goes back to the version the
    broken one replaced while it waits to look again. A loadable version activated again is
    served from the next look-up on."""
    store = open_store(str(tmp_path / "broken.db"))
    policies = load_policies(POLICIES)
    seconds = [0.0]  # the monotonic time that paces the model caches' look-ups (every 10 s)
    engine = build_engine(store, policies, SystemClock(), refresh_seconds=10, monotonic=lambda: seconds[0])
    engine.ensure_models()
    registry = VersionRegistry(store)
    good = store.active_version("lifecycle")
    broken = registry.add_version("lifecycle", b"not a VW model", "", "import", time.time())
    share = policies["lifecycle"].spec.learner.holdout_share
    users = iter(u for u in (f"p{i}" for i in range(100)) if not in_holdout("lifecycle", store.person_key(u), share))

    def decide() -> dict:
        user = next(users)
        engine.people.set_consent(user, {"email": True, "push": True}, "test", None)
        return engine.decide("lifecycle", DecideInput(user, {"segment": "bargain_hunters", "country": "FR"}))

    registry.set_shadow("lifecycle", broken, time.time())
    served = decide()
    assert served["mode"] in ("explore", "exploit") and served["model_version"] == good
    assert store.shadow_decisions("lifecycle") == {}

    registry.activate("lifecycle", broken, "a broken import", time.time())
    seconds[0] += 11
    for _ in range(2):  # the look-up, then the decisions until the next one
        fallback = decide()
        assert fallback["mode"] == "fallback" and fallback["model_version"] == broken
        assert fallback["action"]["arm"] == policies["lifecycle"].spec.learner.fallback_arm

    registry.set_shadow("lifecycle", good, time.time())
    registry.rollback("lifecycle", time.time())
    seconds[0] += 11
    again = decide()
    assert again["mode"] in ("explore", "exploit") and again["model_version"] == good
    assert list(store.shadow_decisions("lifecycle")) == [again["event_id"]]
