"""`POST /v1/policies/<policy>/decide` is answered by a WSGI fast path (service/api/fastpath.py,
DecideFastPath) and, for anything it does not take, by the Flask route. Both must answer alike:
same status, same content type, same problem documents, same shape of decision; and both check
API keys by the same rule, answering the same 401 and 403 documents and challenges."""
from __future__ import annotations

import io
import json

import pytest
from flask import request_started
from werkzeug.test import EnvironBuilder, run_wsgi_app

from service.api.app import create_app
from service.api.auth import SCOPES, new_token, token_hash
from conftest import POLICIES_DIR

CONSENT = {"channels": {"email": True, "push": True, "sms": True}, "source": "test"}
REQUESTS = [
    {"user_id": "u1", "context": {"segment": "s1", "tenure_days": 3}},
    {"user_id": "u1", "context": {"segment": "s1", "bogus": 1}},          # the engine refuses it
    {"user_id": "u1", "context": {}},                                       # a required feature missing
    {"user_id": 5, "context": {"segment": "s1"}},                           # pydantic refuses it
    {"user_id": "u1", "context": {"segment": "s1"}, "timestamp": "2026-01-01T00:00:00Z"},  # system clock
    {"user_id": "u1", "context": {"segment": "s1"}, "extra": True},
    ["not", "an", "object"],
    b'{"user_id": "u1", "context": {"segment": "s1", "tenure_days": 123456789012345678901234}}',  # > 64 bits
    {"user_id": "u1", "context": {"segment": "s1"}, "request_id": "r-1", "contents": ["spring_sale"],
     "channels": ["email", "push"]},                                      # a campaign's eligible set
    {"user_id": "u1", "context": {"segment": "s1"}, "contents": ["nope"]},  # the engine refuses it
    {"user_id": "u1", "context": {"segment": "s1"}, "request_id": "not ok"},  # pydantic refuses it
]


@pytest.fixture
def apps(tmp_path):
    # the outer layer (tests/test_requestlog.py) logs nothing: ACCESS_LOG False
    fast = create_app({"DB": str(tmp_path / "fast.db"), "POLICIES": str(POLICIES_DIR), "ACCESS_LOG": False})
    plain = create_app({"DB": str(tmp_path / "plain.db"), "POLICIES": str(POLICIES_DIR), "ACCESS_LOG": False})
    outer = plain.wsgi_app
    assert type(outer).__name__ == "RequestLog" and type(outer.app).__name__ == "DecideFastPath"
    plain.wsgi_app = outer.app.wsgi_app  # the Flask app alone
    for app in (fast, plain):
        assert app.test_client().put("/v1/users/u1/consent", json=CONSENT).status_code == 200
    seen = []  # requests the fast app's Flask machinery saw
    request_started.connect(lambda sender, **kw: seen.append(kw), fast, weak=False)
    fast_client = fast.test_client()
    fast_client.flask_saw = seen
    return fast_client, plain.test_client()


def shape(value):
    """Keys and leaf types; a null counts as a string (a hold's content, channel, timing and
    send_at are null where a send's are strings, and either app may draw a hold)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return "str" if value is None else type(value).__name__


@pytest.mark.parametrize("body", REQUESTS)
def test_fast_path_answers_as_the_flask_route(apps, body):
    fast, plain = apps
    send = {"data": body, "content_type": "application/json"} if isinstance(body, bytes) else {"json": body}
    a = fast.post("/v1/policies/lifecycle/decide", **send)
    b = plain.post("/v1/policies/lifecycle/decide", **send)
    assert (a.status, a.headers["Content-Type"]) == (b.status, b.headers["Content-Type"])
    assert int(a.headers["Content-Length"]) == len(a.data)
    if a.status_code == 200:
        assert shape(a.json) == shape(b.json) and a.json["policy"] == "lifecycle"
        assert not fast.flask_saw, "a valid request is answered without Flask"
    else:
        assert a.json == b.json and a.json["field"]


@pytest.mark.parametrize("path,data,status", [
    ("/v1/policies/nope/decide", b'{"user_id": "u1"}', 404),                   # unknown policy: Flask's 404
    ("/v1/policies/lifecycle/decide", b'{"user_id": "u1", "context": {"segment": NaN}}', 400),
    ("/v1/policies/lifecycle/decide", b"", 400),
])
def test_bodies_the_fast_path_passes_on(apps, path, data, status):
    fast, plain = apps
    a = fast.post(path, data=data, content_type="application/json")
    b = plain.post(path, data=data, content_type="application/json")
    assert a.status_code == b.status_code == status
    assert a.json == b.json
    assert len(fast.flask_saw) == 1, "passed on to the Flask app"


def test_a_body_without_length_is_decided_by_the_flask_route(apps):
    """What gunicorn hands on for `Transfer-Encoding: chunked`: no CONTENT_LENGTH, an input
    stream that ends where the body does."""
    fast, _ = apps
    body = b'{"user_id": "u1", "context": {"segment": "s1"}}'
    environ = EnvironBuilder(path="/v1/policies/lifecycle/decide", method="POST", data=body,
                             content_type="application/json").get_environ()
    del environ["CONTENT_LENGTH"]
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    app_iter, status, headers = run_wsgi_app(fast.application, environ, buffered=True)
    data = b"".join(app_iter)
    assert status.startswith("200"), data
    assert json.loads(data)["action"]["arm"] and len(fast.flask_saw) == 1


@pytest.mark.parametrize("path", ["/v1/policies/lifecycle/decide", "/v1/events/ev1/outcomes"])
def test_a_body_over_the_limit_is_refused_naming_body(apps, path):
    fast, _ = apps
    big = b'{"user_id": "u1", "context": {"segment": "' + b"x" * (1024 * 1024) + b'"}}'
    r = fast.post(path, data=big, content_type="application/json")
    assert r.status_code == 413 and r.headers["Content-Type"] == "application/problem+json"
    assert r.json["field"] == "body" and "larger than 1048576 bytes" in r.json["detail"]
    small = fast.post("/v1/policies/lifecycle/decide", json={"user_id": "u1", "context": {"segment": "s1"}})
    assert small.status_code == 200


# -- API keys: the fast path applies the Flask app's rule and answers its problem documents ------

@pytest.fixture
def keyed_apps(apps):
    """The two apps of `apps`, each holding the same keys: one with `decide`, one with every
    other scope, one revoked."""
    fast, plain = apps
    tokens = {name: new_token() for name in ("decide", "others", "revoked")}
    for client in (fast, plain):
        store = client.application.extensions["tactful"].store
        store.add_api_key("decide", token_hash(tokens["decide"]), ["decide"], 0.0)
        store.add_api_key("others", token_hash(tokens["others"]), [s for s in SCOPES if s != "decide"], 0.0)
        store.add_api_key("revoked", token_hash(tokens["revoked"]), list(SCOPES), 0.0)
        store.revoke_api_key("revoked", 1.0)
        client.application.extensions["tactful_keys"].refresh()
    return fast, plain, tokens


VALID = {"user_id": "u1", "context": {"segment": "s1"}}
KEYED = [  # (Authorization, policy, body, status)
    (None, "lifecycle", VALID, 401),
    ("Bearer tk_unknown", "lifecycle", VALID, 401),
    ("revoked", "lifecycle", VALID, 401),
    ("Basic dXNlcjpwYXNz", "lifecycle", VALID, 401),
    ("others", "lifecycle", VALID, 403),
    ("decide", "lifecycle", VALID, 200),
    ("decide", "lifecycle", {"user_id": 5}, 400),   # past the key, the Flask route says what is wrong
    ("decide", "nope", VALID, 404),
    (None, "nope", VALID, 401),                      # the key first, as the Flask app does
    ("others", "nope", VALID, 403),
]


@pytest.mark.parametrize("auth,policy,body,status", KEYED)
def test_the_fast_path_enforces_keys_as_the_flask_app_does(keyed_apps, auth, policy, body, status):
    fast, plain, tokens = keyed_apps
    headers = {"Authorization": f"Bearer {tokens[auth]}" if auth in tokens else auth} if auth else {}
    a = fast.post(f"/v1/policies/{policy}/decide", json=body, headers=headers)
    b = plain.post(f"/v1/policies/{policy}/decide", json=body, headers=headers)
    assert a.status_code == b.status_code == status, (a.data, b.data)
    assert a.headers["Content-Type"] == b.headers["Content-Type"]
    assert a.headers.get("WWW-Authenticate") == b.headers.get("WWW-Authenticate")
    assert int(a.headers["Content-Length"]) == len(a.data)
    if status == 200:
        assert shape(a.json) == shape(b.json)
    else:
        assert a.json == b.json
    if status in (401, 403):
        assert not fast.flask_saw, "refused by the fast path itself, the body unread"
        assert a.headers["WWW-Authenticate"].startswith('Bearer realm="tactful"')
    if status == 403:
        assert a.json["scope"] == "decide"


def test_both_paths_answer_a_repeated_request_id_with_the_same_decision(apps):
    fast, plain = apps
    body = {"user_id": "u1", "context": {"segment": "s1"}}
    for client in (fast, plain):
        first = client.post("/v1/policies/lifecycle/decide", json=body, headers={"Idempotency-Key": "k-1"})
        again = client.post("/v1/policies/lifecycle/decide", json=body | {"request_id": "k-1"})
        assert first.status_code == again.status_code == 200 and first.json == again.json
        other = client.post("/v1/policies/lifecycle/decide", json=body | {"user_id": "u2"},
                            headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 409 and other.json["field"] == "request_id"
        bad = client.post("/v1/policies/lifecycle/decide", json=body, headers={"Idempotency-Key": "a b"})
        assert bad.status_code == 400 and bad.json["field"] == "Idempotency-Key"
    assert len(fast.flask_saw) == 1, "only the bad header went on to Flask"
