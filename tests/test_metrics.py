"""GET /metrics: Prometheus' text format, counters that move with traffic, the learner's lag and
the served model version read from the store, who may read it; and end to end, the figures of
every gunicorn worker and of the learner added up (prometheus_client's multiprocess mode)."""
from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import POLICIES_DIR
from serving import start_serve
from service.api.app import create_app
from service.api.auth import create_key
from service.runtime import build_learner

CONTEXT = {"segment": "new_users", "country": "FR", "tenure_days": 3}
T0 = 1_790_000_000.0  # a moment for the request clock
DAY = 86_400.0


def samples(text: str) -> dict[tuple, float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(page: dict, name: str, **labels) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client, **headers) -> dict:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return samples(r.get_data(as_text=True))


def decide(client, user: str, at: float | None = None):
    body = {"user_id": user, "context": CONTEXT} | ({"timestamp": at} if at is not None else {})
    r = client.post("/v1/policies/lifecycle/decide", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_counters_move_with_traffic(client):
    before = scrape(client)
    answers = [decide(client, f"m-{uuid.uuid4().hex}") for _ in range(4)]
    client.post("/v1/policies/lifecycle/decide", json={"user_id": "x", "context": {"tenure_days": "many"}})
    first = answers[0]["event_id"]
    assert client.post(f"/v1/events/{first}/outcomes", json={"type": "click", "outcome_id": "o1"}).status_code == 202
    assert client.post(f"/v1/events/{first}/outcomes", json={"type": "click", "outcome_id": "o1"}).status_code == 202
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    by_mode: dict[tuple[str, str], int] = {}
    removed: dict[str, int] = {}
    for a in answers:
        key = (a["mode"], "true" if a["action"]["hold"] else "false")
        by_mode[key] = by_mode.get(key, 0) + 1
        for reason, n in a["removed"]["reasons"].items():
            removed[reason] = removed.get(reason, 0) + n
    for (mode, hold), n in by_mode.items():
        assert moved("tactful_decisions_total", policy="lifecycle", mode=mode, hold=hold) == n
    assert removed and all(moved("tactful_removed_arms_total", policy="lifecycle", reason=r) == n
                           for r, n in removed.items())
    assert moved("tactful_outcomes_total", type="click") == 1  # the repeat is not a second outcome
    route = "/v1/policies/<policy>/decide"
    assert moved("tactful_http_requests_total", method="POST", route=route, status="200") == 4
    assert moved("tactful_http_requests_total", method="POST", route=route, status="400") == 1
    assert moved("tactful_http_requests_total", method="POST", route="/v1/events/<event_id>/outcomes",
                 status="202") == 2
    assert moved("tactful_decide_duration_seconds_count", policy="lifecycle") == 4
    assert moved("tactful_decide_duration_seconds_bucket", policy="lifecycle", le="+Inf") == 4
    assert value(after, "tactful_store_up") == 1


def test_learner_lag_and_model_version_come_from_the_store(tmp_path, store_url):
    app = create_app({"DB": store_url, "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
    client, engine = app.test_client(), app.extensions["tactful"]
    try:
        decide(client, "lag-1", T0)
        page = scrape(client)
        assert value(page, "tactful_model_version", policy="lifecycle") == 1
        assert value(page, "tactful_learner_lag_seconds", policy="lifecycle") == 0  # its window is open
        window = engine.policies["lifecycle"].spec.reward.window
        decide(client, "lag-2", T0 + window + 3 * 3600)  # the request clock moves on: the first window closed
        page = scrape(client)
        assert value(page, "tactful_learner_lag_seconds", policy="lifecycle") == pytest.approx(3 * 3600, abs=1)
        assert value(page, "tactful_model_version_age_seconds", policy="lifecycle") >= window
        build_learner(engine.store, engine.policies, engine.clock).step("lifecycle")
        page = scrape(client)
        assert value(page, "tactful_model_version", policy="lifecycle") == 2
        assert value(page, "tactful_model_version_age_seconds", policy="lifecycle") == 0
        assert value(page, "tactful_learner_lag_seconds", policy="lifecycle") == 0  # lag-2's window is open
        assert value(page, "tactful_learner_decisions_learned_total", policy="lifecycle") >= 1
    finally:
        engine.store.close()


@pytest.mark.parametrize("public", [False, True])
def test_who_may_read_metrics(tmp_path, public):
    app = create_app({"DB": str(tmp_path / "m.db"), "POLICIES": str(POLICIES_DIR), "METRICS_PUBLIC": public})
    client, store = app.test_client(), app.extensions["tactful"].store
    scraper = create_key(store, "scraper", ["metrics"], 0.0)
    operator = create_key(store, "operator", ["decide", "people:read", "people:write", "admin"], 0.0)
    app.extensions["tactful_keys"].refresh()
    try:
        anonymous = client.get("/metrics")
        if public:
            assert anonymous.status_code == 200
        else:
            assert anonymous.status_code == 401
            assert anonymous.headers["Content-Type"] == "application/problem+json"
            r = client.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
            assert r.status_code == 403 and r.get_json()["scope"] == "metrics"
        scrape(client, Authorization=f"Bearer {scraper}")
        r = client.post("/v1/policies/lifecycle/decide", json={"user_id": "u", "context": CONTEXT},
                        headers={"Authorization": f"Bearer {scraper}"})
        assert r.status_code == 403 and r.get_json()["scope"] == "decide"  # a scraper's key does nothing else
    finally:
        store.close()


@pytest.mark.e2e
def test_every_worker_and_the_learner_add_up(tmp_path):
    """On a real `tactful serve` (two gunicorn workers and the learner, separate processes), any
    scrape shows the whole replica: every decision whichever worker made it, and what the
    learner learned in its own process."""
    proc, base = start_serve(["--db", str(tmp_path / "m.db"), "--clock", "request", "--workers", "2"],
                             tmp_path / "serve.log", new_session=True)
    http = requests.Session()
    try:
        sent = 40
        for i in range(sent):  # half of them late enough to close the first half's reward windows
            at = T0 + (0 if i < sent // 2 else 3 * DAY) + i
            r = http.post(f"{base}/v1/policies/lifecycle/decide", json={"user_id": f"e2e-{i}", "context": CONTEXT,
                                                                         "timestamp": at}, timeout=10)
            assert r.status_code == 200, r.text
        pages = [samples(http.get(f"{base}/metrics", timeout=10).text) for _ in range(4)]
        for page in pages:  # whichever worker answered the scrape
            served = sum(v for (name, labels), v in page.items()
                         if name == "tactful_decisions_total" and dict(labels)["policy"] == "lifecycle")
            assert served == sent
        deadline = time.monotonic() + 60
        while True:  # the learner learns every 10 s (the example policy's learn_every_seconds)
            page = samples(http.get(f"{base}/metrics", timeout=10).text)
            if value(page, "tactful_learner_decisions_learned_total", policy="lifecycle") >= sent // 2:
                break
            assert time.monotonic() < deadline, "the learner's count never reached /metrics"
            time.sleep(0.5)
        assert value(page, "tactful_learner_versions_published_total", policy="lifecycle") >= 1
        assert value(page, "tactful_model_version", policy="lifecycle") >= 2
        assert value(page, "tactful_learner_lag_seconds", policy="lifecycle") == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
