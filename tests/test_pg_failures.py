"""When PostgreSQL is away or a lock is stuck, the API answers 503 with a problem document and a
Retry-After, never 500, and recovers by itself: the HTTP app on a real PostgreSQL schema."""
from __future__ import annotations

import uuid

import psycopg

from backends import pg_schema
from conftest import POLICIES_DIR
from service.api.app import create_app

BODY = {"user_id": "carol", "context": {"segment": "s"}}


def _app(url):
    app = create_app({"DB": url, "POLICIES": str(POLICIES_DIR), "CLOCK": "system"})
    return app, app.test_client()


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
