"""One JSON line per request: time, request id, method, route template, status, duration, policy
and the key's name; never a user id or a key. X-Request-Id is taken when given and always echoed.
Through the decide fast path and through Flask alike."""
from __future__ import annotations

import json
import time

from conftest import POLICIES_DIR
from service.api.app import create_app
from service.api.auth import create_key
from service.store import open_store

CONSENT = {"channels": {"email": True}, "source": "test"}


def test_every_request_is_one_line_without_user_ids_or_keys(tmp_path):
    db = str(tmp_path / "log.db")
    store = open_store(db)
    token = create_key(store, "campaigns", ["decide", "people:write"], time.time())
    reader = create_key(store, "readers", ["people:read"], time.time())
    store.close()
    lines: list[str] = []
    app = create_app({"DB": db, "POLICIES": str(POLICIES_DIR), "ACCESS_LOG": lines.append})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    r = client.put("/v1/users/alice-secret-id/consent", json=CONSENT, headers=auth | {"X-Request-Id": "req-42"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "req-42"
    d = client.post("/v1/policies/lifecycle/decide", json={"user_id": "alice-secret-id", "context": {"segment": "s"}},
                    headers=auth)  # the fast path
    assert d.status_code == 200 and len(d.headers["X-Request-Id"]) == 32  # made up when none is given
    assert client.post("/v1/policies/lifecycle/decide", json={"user_id": "x", "context": {}}).status_code == 401
    assert client.get("/v1/users/alice-secret-id", headers=auth).status_code == 403
    assert client.post("/v1/policies/lifecycle/decide", json={"user_id": "x", "context": {}},
                       headers={"Authorization": f"Bearer {reader}"}).status_code == 403  # the fast path's
    assert client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).status_code == 200
    assert client.get("/no/such/path").status_code == 401
    records = [json.loads(line) for line in lines]
    assert [(r["method"], r["route"], r["status"], r["policy"], r["key"]) for r in records] == [
        ("PUT", "/v1/users/<user_id>/consent", 200, None, "campaigns"),
        ("POST", "/v1/policies/<policy>/decide", 200, "lifecycle", "campaigns"),
        ("POST", "/v1/policies/<policy>/decide", 401, "lifecycle", None),
        ("GET", "/v1/users/<user_id>", 403, None, "campaigns"),
        ("POST", "/v1/policies/<policy>/decide", 403, "lifecycle", "readers"),
        ("GET", "/healthz", 200, None, None),
        ("GET", None, 401, None, None),
    ]
    assert records[0]["request_id"] == "req-42" and records[1]["request_id"] == d.headers["X-Request-Id"]
    assert records[5]["request_id"] != "bad id with spaces"
    assert all(set(r) == {"time", "request_id", "method", "route", "status", "duration_ms", "policy", "key"}
               and r["duration_ms"] >= 0 and r["time"].endswith("Z") for r in records)
    text = "\n".join(lines)
    assert "alice-secret-id" not in text and token not in text and reader not in text
    app.extensions["tactful"].store.close()
