"""When PostgreSQL is away or a lock is stuck, the API answers 503 with a problem document and a
Retry-After, never 500, and recovers by itself: the HTTP app on a real PostgreSQL schema."""
from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from backends import pg_schema
from conftest import POLICIES_DIR
from service.api.app import create_app
from service.store import open_store

BODY = {"user_id": "carol", "context": {"segment": "s"}}


def _app(url):
    app = create_app({"DB": url, "POLICIES": str(POLICIES_DIR), "CLOCK": "system"})
    return app, app.test_client()


@pytest.mark.slow  # waits out the 5 s lock timeout
def test_a_decision_behind_a_stuck_lock_is_a_503_not_a_hang():
    with pg_schema() as url:
        app, client = _app(url)
        key = app.extensions["tactful"].store.person_key("carol")
        with psycopg.connect(url) as stuck:  # a transaction that took carol's lock and stopped
            stuck.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"person:{key}",))
            r = client.post("/v1/policies/lifecycle/decide", json=BODY)
            assert r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json"
            assert r.headers["Retry-After"] == "1" and "unavailable" in r.get_json()["detail"]
            assert client.post("/v1/policies/lifecycle/decide", json=BODY | {"user_id": "dave"}).status_code == 200
        assert client.post("/v1/policies/lifecycle/decide", json=BODY).status_code == 200  # released
        app.extensions["tactful"].store.close()


def test_connections_cut_by_the_server_cost_at_most_one_503_each():
    with pg_schema() as url:
        name = f"tactful-{uuid.uuid4().hex[:8]}"  # this test's connections, and no one else's
        app, client = _app(f"{url}&application_name={name}")
        assert client.post("/v1/policies/lifecycle/decide", json=BODY).status_code == 200
        with psycopg.connect(url, autocommit=True) as admin:  # what a server restart does to them
            cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE application_name = %s AND query NOT LIKE 'LISTEN%%'", (name,)).fetchone()[0]
        assert cut >= 1
        codes = [client.post("/v1/policies/lifecycle/decide", json=BODY | {"user_id": f"u{i}"}).status_code
                 for i in range(6)]
        assert set(codes) <= {200, 503} and codes.count(503) <= cut and codes[-3:] == [200, 200, 200], codes
        assert client.get("/healthz").status_code == 200
        app.extensions["tactful"].store.close()


def test_the_listener_comes_back_after_its_connection_is_cut():
    """Its connection cut (a server restart, a network blip), a worker polls meanwhile and listens
    again within seconds; a version activated afterwards is pushed as before."""
    with pg_schema() as url:
        name = f"tactful-{uuid.uuid4().hex[:8]}"
        app, _ = _app(f"{url}&application_name={name}")
        store = app.extensions["tactful"].store
        wait_until(lambda: store.model_generation("lifecycle") is not None, "the listener never started")
        with psycopg.connect(url, autocommit=True) as admin:
            assert admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                 " WHERE application_name = %s AND query LIKE 'LISTEN%%'", (name,)).fetchone()[0] == 1
        wait_until(lambda: store.model_generation("lifecycle") is None, "the cut went unnoticed")  # polling now
        wait_until(lambda: store.model_generation("lifecycle") is not None, "the listener did not come back")
        before = store.model_generation("lifecycle")
        other = open_store(url)
        other.activate("lifecycle", other.add_version("lifecycle", other.model("lifecycle", 1)["model"], "",
                                                      "import", 0.0, {}), "test", 0.0, watch=False)
        wait_until(lambda: store.model_generation("lifecycle") != before, "the activation was not pushed")
        other.close()
        store.close()


def wait_until(done, what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
