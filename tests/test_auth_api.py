"""API keys and scopes over HTTP: every route allowed with its scope and refused without it (401
without a key, with an unknown, revoked or malformed one; 403 naming the scope with a key that
lacks it), open until the store holds its first key, closed for good after, and a key's creation
or revocation seen by a running app within seconds. Real app, real store, real keys."""
from __future__ import annotations

import time

import pytest

from conftest import POLICIES_DIR
from service.api.app import create_app
from service.api.auth import ANY, LAST_USED_EVERY, PUBLIC, SCOPES, KeyRing, create_key, token_hash
from service.api.routes import operation_scopes
from service.errors import Unauthorized
from service.policy import load_policies, load_policy
from service.store import open_store

PROBLEM = "application/problem+json"
DECIDE = {"user_id": "u1", "context": {"segment": "s"}}
CONSENT = {"channels": {"email": True, "push": True}, "source": "test"}

# (method, OpenAPI path, concrete path, body, scope, status once allowed): every route of the app
ROUTES = [
    ("post", "/v1/policies/{policy}/decide", "/v1/policies/lifecycle/decide", DECIDE, "decide", 200),
    ("post", "/v1/events/{event_id}/outcomes", "/v1/events/{event}/outcomes", {"type": "click"}, "decide", 202),
    ("post", "/v1/events/{event_id}/delivery", "/v1/events/{event}/delivery", {"status": "sent"}, "decide", 202),
    ("get", "/v1/events/{event_id}", "/v1/events/{event}", None, "decide", 200),
    ("get", "/v1/policies", "/v1/policies", None, ANY, 200),
    ("get", "/v1/policies/{policy}", "/v1/policies/lifecycle", None, ANY, 200),
    ("put", "/v1/users/{user_id}/consent", "/v1/users/u1/consent", CONSENT, "people:write", 200),
    ("get", "/v1/users/{user_id}", "/v1/users/u1", None, "people:read", 200),
    ("put", "/v1/users/{user_id}/preferences", "/v1/users/u1/preferences", {"timezone": "Europe/Paris"},
     "people:write", 200),
    ("get", "/v1/users/{user_id}/decisions", "/v1/users/u1/decisions", None, "people:read", 200),
    ("delete", "/v1/users/{user_id}", "/v1/users/u2", None, "people:write", 200),
    ("patch", "/v1/policies/{policy}/arms/{arm}", "/v1/policies/lifecycle/arms/win_back", {"status": "retired"},
     "admin", 200),
    ("post", "/v1/policies/{policy}/pause", "/v1/policies/lifecycle/pause", {"reason": "test"}, "admin", 200),
    ("post", "/v1/policies/{policy}/resume", "/v1/policies/lifecycle/resume", {"reason": "test"}, "admin", 200),
    ("get", "/v1/policies/{policy}/breaker", "/v1/policies/lifecycle/breaker", None, "admin", 200),
    ("post", "/v1/policies/{policy}/breaker/reset", "/v1/policies/lifecycle/breaker/reset", {"reason": "test"},
     "admin", 200),
    ("get", "/v1/policies/{policy}/contents/report", "/v1/policies/lifecycle/contents/report", None, "admin", 404),
    ("post", "/v1/policies/{policy}/reload", "/v1/policies/lifecycle/reload", {"reason": "test"}, "admin", 200),
    ("get", "/v1/policies/{policy}/contents", "/v1/policies/lifecycle/contents", None, ANY, 200),
    ("put", "/v1/policies/{policy}/contents/{content_id}", "/v1/policies/lifecycle/contents/summer_sale",
     {"topic": "promotion"}, "admin", 201),
    ("delete", "/v1/policies/{policy}/contents/{content_id}", "/v1/policies/lifecycle/contents/feature_tour", None,
     "admin", 200),
    ("get", "/v1/policies/{policy}/models", "/v1/policies/lifecycle/models", None, "admin", 200),
    ("post", "/v1/policies/{policy}/models/{version}/activate", "/v1/policies/lifecycle/models/1/activate", {},
     "admin", 409),  # version 1 is active already: past the key, the registry answers
    ("get", "/v1/keys", "/v1/keys", None, "admin", 200),
    ("post", "/v1/keys", "/v1/keys", {"name": "fresh", "scopes": ["decide"]}, "admin", 201),
    ("delete", "/v1/keys/{name}", "/v1/keys/spare", None, "admin", 200),
    ("get", "/healthz", "/healthz", None, PUBLIC, 200),
    ("get", "/readyz", "/readyz", None, PUBLIC, 503),  # no learner runs beside this app
    ("get", "/openapi.json", "/openapi.json", None, PUBLIC, 200),
    ("get", "/metrics", "/metrics", None, "metrics", 200),
]


def slug(scope: str) -> str:
    return scope.replace(":", "-")


def add_keys(store) -> dict[str, str]:
    """For each scope a key with only it and one with every other; a revoked key with them all;
    a spare one to revoke. Name -> key."""
    tokens = {}
    for scope in SCOPES:
        tokens[f"only-{slug(scope)}"] = create_key(store, f"only-{slug(scope)}", [scope], time.time())
        tokens[f"but-{slug(scope)}"] = create_key(store, f"but-{slug(scope)}", [s for s in SCOPES if s != scope],
                                                  time.time())
    tokens["revoked"] = create_key(store, "revoked", list(SCOPES), time.time())
    store.revoke_api_key("revoked", time.time())
    tokens["spare"] = create_key(store, "spare", ["decide"], time.time())
    return tokens


@pytest.fixture
def keyed(app, client):
    """The app, with an event and a person made before any key existed, then the keys."""
    assert client.put("/v1/users/u1/consent", json=CONSENT).status_code == 200
    # a send (a hold has no delivery to report): the policy's exploration picks one soon enough
    answers = (client.post("/v1/policies/lifecycle/decide", json=DECIDE).json for _ in range(100))
    event = next(a for a in answers if not a["action"]["hold"])["event_id"]
    tokens = add_keys(app.extensions["tactful"].store)
    app.extensions["tactful_keys"].refresh()
    return client, tokens, event


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(r, error: str | None) -> dict:
    assert r.status_code == 401 and r.headers["Content-Type"] == PROBLEM, r.data
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and (error is None) == ("error=" not in challenge)
    assert error is None or f'error="{error}"' in challenge
    assert r.json["type"] == "https://tactful.dev/problems/unauthorized" and r.json["status"] == 401
    return r.json


@pytest.mark.parametrize("method,template,path,body,scope,ok", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_every_route_is_allowed_with_its_scope_and_refused_without(keyed, method, template, path, body, scope, ok):
    client, tokens, event = keyed
    path = path.format(event=event)

    def call(headers=None):
        return client.open(path, method=method.upper(), json=body, headers=headers or {})

    if scope == PUBLIC:
        assert call().status_code == ok
        return
    assert "tactful keys create" in assert_unauthorized(call(), None)["detail"]
    assert assert_unauthorized(call(bearer("tk_" + "x" * 43)), "invalid_token")["detail"] == "this API key is not known"
    assert "'revoked') was revoked" in assert_unauthorized(call(bearer(tokens["revoked"])), "invalid_token")["detail"]
    assert_unauthorized(call({"Authorization": "Basic dXNlcjpwYXNz"}), "invalid_request")
    assert_unauthorized(call({"Authorization": "Bearer "}), "invalid_request")
    if scope != ANY:
        r = call(bearer(tokens[f"but-{slug(scope)}"]))
        assert r.status_code == 403 and r.headers["Content-Type"] == PROBLEM, r.data
        assert r.json["scope"] == scope and f"the scope {scope!r}" in r.json["detail"]
        assert r.json["type"] == "https://tactful.dev/problems/forbidden"
        assert r.headers["WWW-Authenticate"] == \
            f'Bearer realm="tactful", error="insufficient_scope", scope="{scope}"'
    allowed = call(bearer(tokens[f"only-{slug(scope if scope != ANY else 'people:read')}"]))
    assert allowed.status_code == ok, allowed.data


def test_the_table_above_is_every_route_and_the_openapi_document_agrees(app, client):
    with app.test_request_context():
        declared = operation_scopes()
    assert declared == {(template, method): scope for method, template, _, _, scope, _ in ROUTES}
    doc = client.get("/openapi.json").json
    assert {(path, method) for path, ops in doc["paths"].items() for method in ops} == set(declared)
    bearer_scheme = doc["components"]["securitySchemes"]["bearer"]
    assert bearer_scheme["type"] == "http" and bearer_scheme["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    assert "scope" in doc["components"]["schemas"]["Problem"]["properties"]
    assert doc["components"]["schemas"]["KeyRequest"]["required"] == ["name", "scopes"]
    for (template, method), scope in declared.items():
        op = doc["paths"][template][method]
        if scope == PUBLIC:
            assert op["security"] == [] and "x-scopes" not in op and "401" not in op["responses"]
            continue
        assert op["x-scopes"] == ([] if scope == ANY else [scope]) and "security" not in op
        assert op["description"].startswith("Needs any valid API key" if scope == ANY else
                                            f"Needs an API key with the scope `{scope}`")
        assert "401" in op["responses"] and ("403" in op["responses"]) == (scope != ANY)


def test_open_until_the_first_key_then_closed_even_when_every_key_is_revoked(app, client):
    ring = app.extensions["tactful_keys"]
    assert not ring.enforced
    assert client.get("/v1/users/u1").status_code == 200
    assert client.get("/v1/users/u1", headers=bearer("tk_anything")).status_code == 200  # no key to check it against
    token = create_key(app.extensions["tactful"].store, "ops", ["people:read"], time.time())
    ring.refresh()
    assert ring.enforced and client.get("/v1/users/u1").status_code == 401
    assert client.get("/v1/users/u1", headers={"Authorization": f"bearer  {token} "}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/openapi.json").status_code == 200
    app.extensions["tactful"].store.revoke_api_key("ops", time.time())
    ring.refresh()
    assert client.get("/v1/users/u1").status_code == 401  # nobody in, rather than everybody
    assert client.get("/v1/users/u1", headers=bearer(token)).status_code == 401


def test_a_path_no_route_matches_needs_a_key_before_it_is_a_404(keyed):
    client, tokens, _ = keyed
    assert_unauthorized(client.get("/v1/nowhere"), None)
    assert client.get("/v1/nowhere", headers=bearer(tokens["only-decide"])).status_code == 404
    assert client.post("/v1/policies/a/b/decide", headers=bearer(tokens["only-admin"]), json=DECIDE).status_code == 404


def test_keys_over_http_show_a_key_once_and_never_again(keyed):
    client, tokens, _ = keyed
    admin = bearer(tokens["only-admin"])
    made = client.post("/v1/keys", json={"name": "campaigns", "scopes": ["people:read", "decide", "decide"]},
                       headers=admin)
    assert made.status_code == 201 and made.json["scopes"] == ["decide", "people:read"]
    key = made.json["key"]
    assert key.startswith("tk_") and len(key) == 46
    assert client.post("/v1/policies/lifecycle/decide", json=DECIDE, headers=bearer(key)).status_code == 200
    listed = client.get("/v1/keys", headers=admin)
    assert key not in listed.get_data(as_text=True) and token_hash(key) not in listed.get_data(as_text=True)
    assert {k["name"] for k in listed.json["keys"]} >= {"campaigns", "spare"} and \
        "revoked" not in {k["name"] for k in listed.json["keys"]}
    again = client.post("/v1/keys", json={"name": "campaigns", "scopes": ["admin"]}, headers=admin)
    assert again.status_code == 409 and again.json["field"] == "name"
    for bad, field in [({"name": "no spaces", "scopes": ["decide"]}, "name"), ({"name": "x", "scopes": []}, "scopes"),
                       ({"name": "x", "scopes": ["root"]}, "scopes[0]")]:
        r = client.post("/v1/keys", json=bad, headers=admin)
        assert r.status_code == 400 and r.json["field"] == field, r.json
    assert client.delete("/v1/keys/campaigns", headers=admin).status_code == 200
    assert client.post("/v1/policies/lifecycle/decide", json=DECIDE, headers=bearer(key)).status_code == 401
    gone = client.delete("/v1/keys/campaigns", headers=admin)
    assert gone.status_code == 404 and gone.json["field"] == "name"


def wait_for_status(client, path: str, headers: dict, status: int, seconds: float = 5.0) -> float:
    """Seconds until `path` answers `status` (asked every 50 ms)."""
    start = time.monotonic()
    while client.get(path, headers=headers).status_code != status:
        assert time.monotonic() - start < seconds, f"{path} never answered {status}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_running_app_sees_a_new_key_and_a_revocation_within_two_seconds(store_url):
    """The default refresh (1 s), and the keys changed through a store of their own, as `tactful
    keys` does while the service runs; on both backends."""
    app = create_app({"DB": store_url, "POLICIES": str(POLICIES_DIR)})
    client = app.test_client()
    assert client.get("/v1/users/u1").status_code == 200
    operator = open_store(store_url)
    key = create_key(operator, "ops", ["people:read"], time.time())
    assert wait_for_status(client, "/v1/users/u1", {}, 401) < 2.0
    assert client.get("/v1/users/u1", headers=bearer(key)).status_code == 200
    assert operator.revoke_api_key("ops", time.time())
    assert wait_for_status(client, "/v1/users/u1", bearer(key), 401) < 2.0
    operator.close()
    app.extensions["tactful"].store.close()


class Ticks:
    """A clock a test moves by hand."""

    def __init__(self, at: float = 0.0):
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_a_ring_reads_the_store_once_per_interval_not_per_request(tmp_path):
    store = open_store(str(tmp_path / "k.db"))
    token = create_key(store, "a", ["decide"], 0.0)
    mono = Ticks()
    ring = KeyRing(store, refresh_seconds=1.0, monotonic=mono)
    assert ring.authorize(f"Bearer {token}", "decide").name == "a"
    store.revoke_api_key("a", 1.0)
    mono.at = 0.99  # within the interval: the table read at 0 still holds
    for _ in range(100):
        assert ring.authorize(f"Bearer {token}", "decide").name == "a"
    mono.at = 1.0
    with pytest.raises(Unauthorized, match="was revoked"):
        ring.authorize(f"Bearer {token}", "decide")
    store.close()


def test_last_use_is_written_at_most_once_a_minute_per_key(tmp_path):
    store = open_store(str(tmp_path / "k.db"))
    token = create_key(store, "a", ["decide"], 0.0)
    create_key(store, "idle", ["decide"], 0.0)
    mono, wall = Ticks(), Ticks(1000.0)
    ring = KeyRing(store, refresh_seconds=1.0, monotonic=mono, wall=wall)

    def used() -> dict:
        return {k["name"]: k["last_used_at"] for k in store.api_keys()}

    ring.authorize(f"Bearer {token}", "decide")
    assert used() == {"a": None, "idle": None}  # nothing written on the request itself
    mono.at, wall.at = 1.0, 1001.0
    ring.authorize(f"Bearer {token}", "decide")  # the refresh records the use seen before
    assert used() == {"a": 1001.0, "idle": None}
    mono.at, wall.at = 2.0, 1001.0 + LAST_USED_EVERY - 1
    ring.authorize(f"Bearer {token}", "decide")
    mono.at, wall.at = 3.0, 1001.0 + LAST_USED_EVERY
    ring.authorize(f"Bearer {token}", "decide")
    assert used()["a"] == 1001.0  # recorded less than a minute ago: not again
    mono.at, wall.at = 4.0, 1002.0 + LAST_USED_EVERY
    ring.authorize(f"Bearer {token}", "decide")
    assert used()["a"] == 1002.0 + LAST_USED_EVERY
    store.close()


def test_a_ring_keeps_the_keys_it_read_while_the_store_cannot_answer(tmp_path):
    db = str(tmp_path / "k.db")
    store = open_store(db)
    token = create_key(store, "a", ["decide"], 0.0)
    mono = Ticks()
    ring = KeyRing(store, monotonic=mono)
    other = open_store(db)
    with other.write() as conn:  # the table gone: every read of it fails
        conn.execute("ALTER TABLE api_keys RENAME TO api_keys_away")
    mono.at = 5.0
    assert ring.authorize(f"Bearer {token}", "decide").name == "a"
    with other.write() as conn:
        conn.execute("ALTER TABLE api_keys_away RENAME TO api_keys")
    other.revoke_api_key("a", 1.0)
    mono.at = 10.0
    with pytest.raises(Unauthorized, match="was revoked"):
        ring.authorize(f"Bearer {token}", "decide")
    other.close()
    store.close()


# The Personalizer compatibility surface (service/api/personalizer.py): its routes follow
# Personalizer's specification and stay out of the OpenAPI document; each is served under
# /personalizer and /personalizer/v1.0, takes the key in Ocp-Apim-Subscription-Key and answers
# Personalizer's error shape. (method, path template, concrete path, body, scope, status once allowed),
# in an order each call's state allows.
RANK = {"contextFeatures": [{"time": "am"}], "actions": [{"id": "a", "features": [{"x": 1}]}, {"id": "b"}]}
SLOTS = RANK | {"slots": [{"id": "hero"}, {"id": "side"}]}
PERSONALIZER_ROUTES = [
    ("post", "/personalizer/rank", "/personalizer/rank?api-version=2022-09-01-preview", RANK, "decide", 201),
    ("post", "/personalizer/events/{event_id}/reward", "/personalizer/events/e1/reward", {"value": 1}, "decide", 204),
    ("post", "/personalizer/events/{event_id}/activate", "/personalizer/v1.0/events/e1/activate", None, "decide", 204),
    ("post", "/personalizer/multislot/rank", "/personalizer/multislot/rank", SLOTS, "decide", 201),
    ("post", "/personalizer/multislot/events/{event_id}/reward", "/personalizer/multislot/events/m1/reward",
     {"reward": [{"slotId": "hero", "value": 1}]}, "decide", 204),
    ("post", "/personalizer/multislot/events/{event_id}/activate", "/personalizer/multislot/events/m1/activate",
     None, "decide", 204),
    ("get", "/personalizer/configurations/service", "/personalizer/configurations/service", None, "admin", 200),
    ("put", "/personalizer/configurations/service", "/personalizer/configurations/service", {"defaultReward": 0.5},
     "admin", 200),
    ("get", "/personalizer/configurations/policy", "/personalizer/configurations/policy", None, "admin", 200),
    ("put", "/personalizer/configurations/policy", "/personalizer/configurations/policy",
     {"name": "p", "arguments": "--epsilon 0.1"}, "admin", 200),
    ("delete", "/personalizer/configurations/policy", "/personalizer/configurations/policy", None, "admin", 200),
    ("post", "/personalizer/configurations/applyFromEvaluation", "/personalizer/configurations/applyFromEvaluation",
     {}, "admin", 501),
    ("get", "/personalizer/model", "/personalizer/model", None, "admin", 200),
    ("put", "/personalizer/model", "/personalizer/model", {"not": "a model"}, "admin", 400),
    ("delete", "/personalizer/model", "/personalizer/model", None, "admin", 204),
    ("get", "/personalizer/model/properties", "/personalizer/model/properties", None, "admin", 200),
    ("get", "/personalizer/logs/properties", "/personalizer/logs/properties", None, "admin", 200),
    ("delete", "/personalizer/logs", "/personalizer/logs", None, "admin", 501),
    ("get", "/personalizer/evaluations", "/personalizer/evaluations", None, "admin", 200),
    ("post", "/personalizer/evaluations", "/personalizer/v1.0/evaluations", {"name": "n"}, "admin", 201),
    ("put", "/personalizer/evaluations/{evaluation_id}", "/personalizer/evaluations/ev", {"name": "ev"}, "admin", 200),
    ("get", "/personalizer/evaluations/{evaluation_id}", "/personalizer/evaluations/ev", None, "admin", 200),
    ("delete", "/personalizer/evaluations/{evaluation_id}", "/personalizer/evaluations/ev", None, "admin", 204),
    ("get", "/personalizer/featureImportances", "/personalizer/featureImportances", None, "admin", 501),
    ("get", "/personalizer/featureImportances/{feature_importance_id}", "/personalizer/featureImportances/f",
     None, "admin", 501),
    ("put", "/personalizer/featureImportances/{feature_importance_id}", "/personalizer/featureImportances/f",
     {}, "admin", 501),
    ("delete", "/personalizer/featureImportances/{feature_importance_id}", "/personalizer/featureImportances/f",
     None, "admin", 501),
]


def test_every_personalizer_route_takes_the_subscription_key_with_its_scope(tmp_path):
    policies = load_policies(POLICIES_DIR) | {"personalizer": load_policy(
        POLICIES_DIR.parent / "personalizer" / "personalizer.toml")}
    app = create_app({"DB": str(tmp_path / "k.db"), "POLICIES": policies, "ACCESS_LOG": False})
    client = app.test_client()
    with app.test_request_context():
        declared = operation_scopes(compat=True)
    table = {(template, method): scope for method, template, _, _, scope, _ in PERSONALIZER_ROUTES}
    assert declared == table | {(t.replace("/personalizer", "/personalizer/v1.0", 1), m): s
                                for (t, m), s in table.items()}
    assert not any(p.startswith("/personalizer") for p in client.get("/openapi.json").json["paths"])
    assert client.post("/personalizer/rank", json=RANK | {"eventId": "e1"}).status_code == 201
    assert client.post("/personalizer/multislot/rank", json=SLOTS | {"eventId": "m1"}).status_code == 201
    tokens = add_keys(app.extensions["tactful"].store)
    app.extensions["tactful_keys"].refresh()
    for method, _, path, body, scope, ok in PERSONALIZER_ROUTES:
        def call(key=None):
            return client.open(path, method=method.upper(), json=body,
                               headers={"Ocp-Apim-Subscription-Key": key} if key else {})
        for r, status, code in ((call(), 401, "Unauthorized"), (call("tk_" + "x" * 43), 401, "Unauthorized"),
                                (call(tokens["revoked"]), 401, "Unauthorized"),
                                (call(tokens[f"but-{slug(scope)}"]), 403, "PermissionDenied")):
            assert r.status_code == status and r.json["error"]["code"] == code, (method, path, r.data)
        allowed = call(tokens[f"only-{slug(scope)}"])
        assert allowed.status_code == ok, (method, path, allowed.data)
    app.extensions["tactful"].store.close()
