"""The OpenAPI document says exactly what the validators accept and every status a route answers:
one regression test for each mismatch and each 500 the schemathesis run found (tests/test_fuzz_api.py,
docs/reliability.md), on the real app and store, so that the quick loop catches them too."""
from __future__ import annotations

import time

import pytest

from conftest import POLICIES_DIR
from service.api.app import create_app
from service.api.auth import create_key
from test_api_errors import CONTEXT, DECIDE, assert_problem, new_event

ACTIVATE = "/v1/policies/lifecycle/models/{}/activate"
BODY_ROUTES = [("post", DECIDE), ("post", "/v1/events/{event}/outcomes"), ("put", "/v1/users/u1/consent"),
               ("put", "/v1/users/u1/preferences"), ("patch", "/v1/policies/lifecycle/arms/win_back"),
               ("post", ACTIVATE.format(1)), ("post", "/v1/keys")]


def doc(client) -> dict:
    return client.get("/openapi.json").get_json()


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# -- model versions: the 500 and the undeclared 409 --------------------------------------------------

@pytest.mark.parametrize("version", ["9223372036854775808", "99999999999999999999999", "0", "-1", "²", "١", "1.0"])
def test_a_version_out_of_range_or_not_ascii_digits_is_a_400_naming_version(client, version):
    # a version beyond 64 bits used to reach the store (a 500), and "²" passed str.isdigit (a 500)
    assert_problem(client.post(ACTIVATE.format(version)), 400, "version")


def test_the_largest_64_bit_version_is_looked_up_and_the_document_gives_the_range(client):
    assert_problem(client.post(ACTIVATE.format(2**63 - 1)), 404, "version")
    op = doc(client)["paths"]["/v1/policies/{policy}/models/{version}/activate"]["post"]
    version = next(p for p in op["parameters"] if p["name"] == "version")
    assert version["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    assert "409" in op["responses"]  # activating the active version, as here:
    assert_problem(client.post(ACTIVATE.format(1)), 409, "version", "already active")


@pytest.mark.parametrize("body,field", [({"reason": "   "}, "reason"), ({"reason": None}, "reason"),
                                       ({"reason": "ok", "other": 1}, "other"), ([1], "body")])
def test_an_activation_body_is_validated_by_its_published_schema(client, body, field):
    assert_problem(client.post(ACTIVATE.format(1), json=body), 400, field)
    schema = doc(client)["components"]["schemas"]["ActivateRequest"]
    assert schema["additionalProperties"] is False and schema["properties"]["reason"]["pattern"]


# -- statuses every operation can answer -----------------------------------------------------------------

def test_every_operation_declares_the_statuses_it_can_answer(client):
    for path, ops in doc(client)["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if "requestBody" in op:
                assert {"400", "413", "415"} <= codes, (path, method)
            if path not in ("/openapi.json", "/metrics"):  # /metrics says tactful_store_up 0 instead
                assert "503" in codes, (path, method)  # the store unavailable
            assert "500" not in codes


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_a_body_that_is_not_json_is_a_415_naming_the_content_type(client, method, path):
    path = path.format(event=new_event(client))
    r = client.open(path, method=method.upper(), data='{"reason": "x"}', content_type="text/plain")
    assert_problem(r, 415, "Content-Type", "application/json")


def test_a_method_a_public_path_does_not_allow_is_a_405_even_without_a_key(app, client):
    create_key(app.extensions["tactful"].store, "ops", ["admin"], time.time())
    app.extensions["tactful_keys"].refresh()
    r = client.open("/healthz", method="TRACE")  # used to be 401: the key was checked first
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert client.open("/v1/keys", method="TRACE").status_code == 401  # a secured path still needs a key


def test_the_document_uses_json_schema_keywords_only(client):
    # pydantic writes constraints placed after a BeforeValidator as `ge`/`le`, which a JSON Schema
    # reader ignores: the document then allowed any max_contacts_per_week
    for node in walk(doc(client)["components"]["schemas"]):
        assert not {"ge", "le", "gt", "lt", "min_length", "max_length"} & set(node), node


# -- request bodies: what the policies and the clock decide ---------------------------------------------

def test_the_decide_context_is_the_policy_s_features(client):
    context = doc(client)["components"]["schemas"]["DecideRequest"]
    assert "context" in context["required"]  # lifecycle requires `segment`
    ctx = context["properties"]["context"]
    assert ctx["required"] == ["segment"] and ctx["additionalProperties"] is False
    assert ctx["properties"]["tenure_days"]["minimum"] == 0
    assert ctx["properties"]["tenure_days"]["maximum"] == 2**63 - 1
    assert_problem(client.post(DECIDE, json={"user_id": "u1"}), 400, "context.segment", "required")
    # the 64-bit bound holds for fractions as for whole numbers, as the document says
    r = client.post(DECIDE, json={"user_id": "u1", "context": CONTEXT | {"tenure_days": 1e19}})
    assert_problem(r, 400, "context.tenure_days", "64-bit")


def test_timestamps_are_published_only_where_the_clock_takes_them(client, request_client):
    for c, present in ((client, False), (request_client, True)):
        schemas = doc(c)["components"]["schemas"]
        for name in ("DecideRequest", "OutcomeRequest", "ConsentRequest", "PreferencesRequest"):
            assert ("timestamp" in schemas[name]["properties"]) is present, name
    ts = doc(request_client)["components"]["schemas"]["DecideRequest"]["properties"]["timestamp"]["anyOf"][0]
    assert ts["format"] == "date-time" and ts["pattern"].startswith("^(19[7-9]")


def test_channels_outcome_types_arms_and_time_zones_are_the_ones_validated(client):
    d = doc(client)
    schemas = d["components"]["schemas"]
    channels = ["email", "in_app", "push", "sms"]
    assert schemas["ConsentRequest"]["properties"]["channels"]["propertyNames"] == {"enum": channels}
    assert schemas["PreferencesRequest"]["properties"]["blocked_channels"]["items"] == {"enum": channels}
    assert "click" in schemas["OutcomeRequest"]["properties"]["type"]["enum"]
    arm = next(p for p in d["paths"]["/v1/policies/{policy}/arms/{arm}"]["patch"]["parameters"] if p["name"] == "arm")
    assert "win_back" in arm["schema"]["enum"] and "hold" not in arm["schema"]["enum"]
    zones = schemas["PreferencesRequest"]["properties"]["timezone"]["anyOf"][0]["enum"]
    assert "Europe/Paris" in zones and not any(z.startswith(("posix/", "right/")) for z in zones)
    # ZoneInfo opens these too; they are not IANA names and the document does not list them
    r = client.put("/v1/users/u1/preferences", json={"timezone": "posix/Europe/Paris"})
    assert_problem(r, 400, "timezone", "IANA")


def test_a_whole_number_written_with_a_fraction_is_accepted_as_json_schema_says(client):
    r = client.put("/v1/users/u1/preferences", json={"max_contacts_per_week": 7.0})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert client.get("/v1/users/u1").get_json()["preferences"]["max_contacts_per_week"] == 7
    for bad in (7.5, "7", True):
        assert_problem(client.put("/v1/users/u1/preferences", json={"max_contacts_per_week": bad}), 400,
                       "max_contacts_per_week")


@pytest.mark.parametrize("limit", ["٥", "+5", " 5", "5_0", "0", "201"])
def test_limit_is_ascii_digits_within_its_published_range(client, limit):
    assert_problem(client.get("/v1/users/u1/decisions", query_string={"limit": limit}), 400, "limit")


# -- the cross-field rules a JSON Schema cannot state (tests/fuzz_hooks.py accepts exactly these) ------

def test_cross_field_rules_are_refused_naming_the_field(client):
    r = client.patch("/v1/policies/lifecycle/arms/win_back",
                     json={"valid_from": "2030-01-01T00:00:00Z", "valid_until": "2029-01-01T00:00:00Z"})
    assert_problem(r, 400, "valid_until", "after valid_from")
    r = client.put("/v1/users/u1/preferences", json={"quiet_hours": {"start": "21:00", "end": "21:00"}})
    assert_problem(r, 400, "quiet_hours.end", "must differ from start")


def test_an_app_serving_no_key_still_publishes_the_401s(tmp_path):
    app = create_app({"DB": str(tmp_path / "t.db"), "POLICIES": str(POLICIES_DIR), "ACCESS_LOG": False})
    try:
        op = app.test_client().get("/openapi.json").get_json()["paths"]["/v1/keys"]["get"]
        assert {"401", "403"} <= set(op["responses"])
        assert op["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    finally:
        app.extensions["tactful"].store.close()


# -- NUL characters: PostgreSQL cannot store them, and answered 500 -------------------------------------

def test_nul_in_any_text_is_a_400_naming_the_field_on_both_backends(store_url):
    app = create_app({"DB": store_url, "POLICIES": str(POLICIES_DIR), "ACCESS_LOG": False})
    try:
        c = app.test_client()
        event = new_event(c)
        for method, path, body, field in [
                ("put", "/v1/users/u1/consent", {"channels": {"email": True}, "source": "a\x00"}, "source"),
                ("post", DECIDE, {"user_id": "u\x00", "context": CONTEXT}, "user_id"),
                ("post", DECIDE, {"user_id": "u1", "context": CONTEXT | {"country": "F\x00"}}, "context.country"),
                ("post", f"/v1/events/{event}/outcomes", {"type": "click", "outcome_id": "o\x00"}, "outcome_id"),
                ("patch", "/v1/policies/lifecycle/arms/win_back", {"reason": "r\x00"}, "reason"),
                ("put", "/v1/users/u1/preferences", {"blocked_topics": ["t\x00"]}, "blocked_topics[0]"),
                ("get", "/v1/users/u%00", None, "user_id")]:
            r = c.open(path, method=method.upper(), json=body)
            assert_problem(r, 400, field, "NUL")
        # a path naming an event or a key with NUL names nothing (PostgreSQL cannot even compare it)
        assert_problem(c.get("/v1/events/e%00"), 404, "event_id", "NUL")
        assert_problem(c.delete("/v1/keys/k%00"), 404, "name", "NUL")
        assert c.get(f"/v1/events/{event}").status_code == 200
    finally:
        app.extensions["tactful"].store.close()


def test_the_document_refuses_nul_in_every_free_text(client):
    schemas = doc(client)["components"]["schemas"]
    assert schemas["ConsentRequest"]["properties"]["source"]["anyOf"][0]["pattern"] == "^[^\\x00]*$"
    assert schemas["DecideRequest"]["properties"]["user_id"]["pattern"] == "^[^\\x00]*$"
    user = doc(client)["paths"]["/v1/users/{user_id}"]["get"]["parameters"][0]
    assert user["schema"]["pattern"] == "^[^\\x00]*$"
