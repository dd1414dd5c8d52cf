"""Model versions speak RFC 3339 like the rest of the API, and a version's creation time is the
service's clock: under `--clock request` the first version is never dated 1970."""
from __future__ import annotations

import time

from service.times import parse_time

T = "2026-03-02T08:00:00Z"


def _rfc3339(value) -> float:
    assert isinstance(value, str) and value.endswith("Z"), value
    return parse_time(value)


def test_versions_and_activations_are_rfc3339_and_now(client):
    before = time.time()
    models = client.get("/v1/policies/lifecycle/models").get_json()
    (v1,) = models["versions"]
    assert before - 60 <= _rfc3339(v1["created_at"]) <= time.time()
    assert _rfc3339(models["activations"][0]["at"]) == _rfc3339(v1["created_at"])
    engine = client.application.extensions["tactful"]
    store = engine.store
    v2 = store.add_version("lifecycle", store.model("lifecycle", 1)["model"], "", "import", time.time(), {})
    r = client.post(f"/v1/policies/lifecycle/models/{v2}/activate", json={"reason": "test"})
    assert r.status_code == 200 and before - 60 <= _rfc3339(r.get_json()["at"]) <= time.time()


def test_under_the_request_clock_the_first_version_takes_the_first_requests_time(request_client):
    models = request_client.get("/v1/policies/lifecycle/models").get_json()
    assert models["versions"][0]["created_at"] is None, "no time seen yet: unknown, never 1970"
    r = request_client.put("/v1/users/ann/consent", json={"channels": {"email": True}, "timestamp": T})
    assert r.status_code == 200, r.get_json()
    models = request_client.get("/v1/policies/lifecycle/models").get_json()
    assert models["versions"][0]["created_at"] == T
    assert models["activations"][0]["at"] == T
    later = request_client.post("/v1/policies/lifecycle/decide", json={
        "user_id": "ann", "context": {"segment": "loyal"}, "timestamp": "2026-03-03T08:00:00Z"})
    assert later.status_code == 200
    assert request_client.get("/v1/policies/lifecycle/models").get_json()["versions"][0]["created_at"] == T
