"""Evidence to retire underperformers: the contents report marks a content that is clearly worse
than the best and than holding, and not one that merely had bad luck on a few sends; the CLI
prints and stores it, the API serves the stored one, and a policy that opts in retires what it
marks. Logs made by the real app (request clock), estimates by the real DR estimator."""
from __future__ import annotations

import random

import pytest
from click.testing import CliRunner

from conftest import POLICIES_DIR
from service.api.app import create_app
from service.cli.report import contents_cmd
from service.learning.retire import ContentsReview
from service.offline.contents import contents_report
from service.policy import load_policies
from service.times import to_rfc3339

CONTEXT = {"segment": "new_users", "country": "FR", "tenure_days": 3}
CONSENT = {"channels": {"email": True, "push": True, "sms": True}, "source": "test"}
T0 = 1_790_000_000.0
CLICK = 0.3        # every content's click rate, but win_back's
BAD = {"win_back": (0.02, 0.10)}  # (click, unsubscribe): clearly worse than every other and than holding


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """1,500 decisions. bundle_offer is allowed only for 60 of them, and its few sends happen to
    bring nothing (bad luck: its true click rate is everybody's)."""
    db = tmp_path_factory.mktemp("contents") / "c.db"
    app = create_app({"DB": str(db), "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
    client, rng, t = app.test_client(), random.Random(3), T0
    client.patch("/v1/policies/lifecycle/arms/bundle_offer", json={"status": "retired"})
    for i in range(1500):
        t += 300
        if i in (700, 760):
            client.patch("/v1/policies/lifecycle/arms/bundle_offer",
                         json={"status": "active" if i == 700 else "retired"})
        client.put(f"/v1/users/u{i}/consent", json=CONSENT | {"timestamp": to_rfc3339(t)})
        d = client.post("/v1/policies/lifecycle/decide",
                        json={"user_id": f"u{i}", "context": CONTEXT, "timestamp": to_rfc3339(t)}).get_json()
        content = d["action"]["content"]
        if content is None or content == "bundle_offer":
            continue
        click, unsubscribe = BAD.get(content, (CLICK, 0.0))
        for kind, p in (("click", click), ("unsubscribe", unsubscribe)):
            if rng.random() < p:
                client.post(f"/v1/events/{d['event_id']}/outcomes",
                            json={"type": kind, "timestamp": to_rfc3339(t + 10)})
    app.extensions["tactful"].store.close()
    return db, t + 3 * 86400  # every reward window closed


@pytest.mark.slow
def test_a_clearly_worse_content_is_marked_and_an_unlucky_one_is_not(logged):
    db, now = logged
    app = create_app({"DB": str(db), "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
    engine = app.extensions["tactful"]
    try:
        report = contents_report(engine.store, engine.policies["lifecycle"], now)
        by = {e["content"]: e for e in report["contents"]}
        assert report["retire"] == ["win_back"]
        assert by["win_back"]["vs_best"]["hi"] < 0 and by["win_back"]["vs_hold"]["hi"] < 0
        unlucky = by["bundle_offer"]
        assert unlucky["decisions"] == 60 and not unlucky["retire"]
        assert unlucky["vs_hold"]["lo"] < 0 or unlucky["vs_best"]["hi"] >= 0  # never surely worse than both
        assert all(not e["retire"] for cid, e in by.items() if cid != "win_back")

        r = app.test_client().get("/v1/policies/lifecycle/contents/report")
        assert r.status_code == 404 and "tactful report contents" in r.get_json()["detail"]
        run = CliRunner().invoke(contents_cmd, ["--db", str(db), "--policies", str(POLICIES_DIR), "--policy",
                                                "lifecycle", "--now", str(now), "--save"])
        assert run.exit_code == 0, run.output
        assert "win_back" in run.output and "RETIRE?" in run.output and "against holding" in run.output
        assert sum("RETIRE?" in line for line in run.output.splitlines()) == 1
        stored = app.test_client().get("/v1/policies/lifecycle/contents/report").get_json()
        assert stored["retire"] == ["win_back"] and stored["reported_at"].endswith("Z")
    finally:
        engine.store.close()


@pytest.mark.slow
def test_a_policy_that_opts_in_retires_what_the_report_marks(logged, tmp_path):
    db, now = logged
    text = (POLICIES_DIR / "lifecycle.toml").read_text().replace(
        'probe_share = 0.1', 'probe_share = 0.1\nreview_every = "1d"\nreview_window = "30d"\nauto_retire = true')
    (tmp_path / "lifecycle.toml").write_text(text)
    policy = load_policies(tmp_path)["lifecycle"]
    app = create_app({"DB": str(db), "POLICIES": {"lifecycle": policy}, "CLOCK": "request", "ACCESS_LOG": False})
    engine = app.extensions["tactful"]
    try:
        review = ContentsReview(engine.store)
        assert review.review(policy, now)["retire"] == ["win_back"]
        assert review.review(policy, now + 3600) is None  # not due again before review_every
        state = engine.store.arm_states("lifecycle")["win_back"]
        assert state["status"] == "retired" and state["reason"].startswith("auto-retired: estimated shaped reward")
        kinds = [(e["kind"], e["target"]) for e in engine.store.safety_events("lifecycle")]
        assert ("retire", "content:win_back") in kinds
        d = app.test_client().post("/v1/policies/lifecycle/decide",
                                   json={"user_id": "after", "context": CONTEXT, "timestamp": to_rfc3339(now)}).get_json()
        assert d["removed"]["reasons"].get("retired", 0) >= 1
    finally:
        engine.store.close()
