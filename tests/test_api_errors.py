"""HTTP API v1: every error path answers with application/problem+json naming the offending field
and the reason, plus the read endpoints and outcome idempotency. Real app, real SQLite file, real
VW model, real guardrails and clock (fixtures in conftest.py)."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

DECIDE = "/v1/policies/lifecycle/decide"
CONTEXT = {"segment": "new_users", "country": "FR", "tenure_days": 3}
T0 = "2024-03-04T10:00:00Z"
PROBLEM = "application/problem+json"


def assert_problem(resp, status: int, field: str | None = None, *reason_parts: str) -> dict:
    """The response is an RFC 9457 problem with this status, naming `field`, whose detail carries
    every one of `reason_parts` (case-insensitive)."""
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, text
    assert resp.headers["Content-Type"] == PROBLEM, text
    body = json.loads(text)
    assert body["status"] == status
    assert body["type"].startswith("https://tactful.dev/problems/")
    assert isinstance(body["title"], str) and body["title"]
    detail = body["detail"]
    assert isinstance(detail, str) and detail.strip()
    if field is None:
        assert "field" not in body
    else:
        assert body.get("field") == field, body
        assert body["errors"][0]["field"] == field
        assert body["errors"][0]["reason"].strip()
        # the detail gives a reason, not just the field's name
        assert detail.strip() != field
        assert len(detail.removeprefix(f"{field}:").strip()) > 5, detail
    for part in reason_parts:
        assert part.lower() in detail.lower(), f"{part!r} not in {detail!r}"
    return body


def decide(client, user_id="u1", context=None, **extra):
    body = {"user_id": user_id, "context": CONTEXT if context is None else context} | extra
    return client.post(DECIDE, json=body)


def new_event(client, **extra) -> str:
    resp = decide(client, **extra)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["event_id"]


def post_raw(client, url: str, raw: bytes | str):
    return client.post(url, data=raw, content_type="application/json")


# -- decide: the policy and the body ---------------------------------------------------------------

def test_decide_unknown_policy_is_404_naming_the_policy(client):
    resp = client.post("/v1/policies/nope/decide", json={"user_id": "u1", "context": CONTEXT})
    assert_problem(resp, 404, "policy", "'nope'", "lifecycle")


def test_decide_unknown_policy_is_reported_before_a_bad_body(client):
    resp = post_raw(client, "/v1/policies/nope/decide", b"{not json")
    assert_problem(resp, 404, "policy", "'nope'")


@pytest.mark.parametrize("raw", [b"{not json", b'{"user_id": "u1",', b"\xff\xfe\x00garbage", b"user_id=u1"])
def test_decide_body_not_json(client, raw):
    assert_problem(post_raw(client, DECIDE, raw), 400, "body", "not valid JSON")


def test_decide_empty_body(client):
    assert_problem(post_raw(client, DECIDE, b""), 400, "body", "empty")


@pytest.mark.parametrize("payload", [[{"user_id": "u1", "context": CONTEXT}], [], "u1", 42, True])
def test_decide_body_not_an_object(client, payload):
    resp = client.post(DECIDE, json=payload)
    assert_problem(resp, 400, "body", "must be a JSON object")


def test_decide_missing_user_id(client):
    resp = client.post(DECIDE, json={"context": CONTEXT})
    assert_problem(resp, 400, "user_id", "required")


def test_decide_empty_user_id(client):
    assert_problem(decide(client, user_id=""), 400, "user_id", "at least 1 character")


def test_decide_too_long_user_id(client):
    assert_problem(decide(client, user_id="x" * 257), 400, "user_id", "at most 256")


@pytest.mark.parametrize("user_id", [42, 4.5, True, None, ["u1"], {"id": "u1"}])
def test_decide_user_id_wrong_type(client, user_id):
    assert_problem(decide(client, user_id=user_id), 400, "user_id", "valid string")


def test_decide_unknown_top_level_field(client):
    resp = decide(client, channel="email")
    assert_problem(resp, 400, "channel", "not a field of this request")


def test_decide_context_not_an_object(client):
    assert_problem(decide(client, context=["segment"]), 400, "context", "valid dictionary")


# -- decide: context features, as the policy declares them --------------------------------------------

def test_decide_undeclared_context_feature(client):
    resp = decide(client, context=CONTEXT | {"age": 31})
    body = assert_problem(resp, 400, "context.age", "not a feature of policy 'lifecycle'")
    # the reason says which features the policy does accept
    for name in ("segment", "country", "tenure_days"):
        assert name in body["detail"]


@pytest.mark.parametrize("name, value, reason", [
    ("segment", 5, "must be a string, not int"),
    ("country", ["FR"], "must be a string, not list"),
    ("tenure_days", "12", "must be a number, not str"),
    ("tenure_days", True, "must be a number, not bool"),
    ("tenure_days", False, "must be a number, not bool"),
    ("tenure_days", {"days": 3}, "must be a number, not dict"),
])
def test_decide_context_feature_of_wrong_type(client, name, value, reason):
    resp = decide(client, context=CONTEXT | {name: value})
    assert_problem(resp, 400, f"context.{name}", reason)


def test_decide_context_string_too_long(client):
    resp = decide(client, context=CONTEXT | {"country": "x" * 201})
    assert_problem(resp, 400, "context.country", "at most 200 characters")


@pytest.mark.parametrize("value", [-1, -0.5, -1e9])
def test_decide_number_below_declared_min(client, value):
    resp = decide(client, context=CONTEXT | {"tenure_days": value})
    assert_problem(resp, 400, "context.tenure_days", "must be at least 0")


def test_decide_number_at_declared_min_is_accepted(client):
    assert decide(client, context=CONTEXT | {"tenure_days": 0}).status_code == 200


@pytest.mark.parametrize("context", [{"country": "FR"}, {}, {"segment": None}])
def test_decide_missing_required_feature(client, context):
    assert_problem(decide(client, context=context), 400, "context.segment", "required")


def test_decide_lists_every_context_error(client):
    resp = decide(client, context={"age": 3, "tenure_days": -2})
    body = assert_problem(resp, 400, "context.age")
    assert {e["field"] for e in body["errors"]} == {"context.age", "context.tenure_days", "context.segment"}
    assert all(e["reason"] for e in body["errors"])


def test_decide_rejected_request_logs_nothing(client):
    assert decide(client, context={"tenure_days": -1}).status_code == 400
    counts = client.get("/v1/policies/lifecycle").get_json()["counts"]
    assert counts["decisions"] == 0


# -- decide: timestamps and the clock -----------------------------------------------------------------

def test_decide_timestamp_with_system_clock(client):
    resp = decide(client, timestamp=T0)
    assert_problem(resp, 400, "timestamp", "--clock request")


def test_decide_timestamp_is_accepted_with_request_clock(request_client):
    resp = decide(request_client, timestamp=T0)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["explanation"]["decided_at"] == T0


@pytest.mark.parametrize("timestamp, reason", [
    ("yesterday", "RFC 3339"),
    ("2024-13-45T10:00:00Z", "RFC 3339"),
    ("04/03/2024 10:00", "RFC 3339"),
    ("", "RFC 3339"),
    ([T0], "valid string"),
    (1709546400, "valid string"),  # seconds since the epoch: the document says a string
    ("2024-03-04T10:00:00", "time-zone offset"),
    ("2024-03-04", "time-zone offset"),
    ("2024-03-04 10:00:00Z", "RFC 3339"),  # what RFC 3339 allows, not what ISO 8601 parsers do
    ("2024-03-04T10:00Z", "RFC 3339"),
    ("2024-02-30T10:00:00Z", "not a date"),  # the pattern lets it through; the calendar does not
])
def test_decide_invalid_timestamp_with_request_clock(request_client, timestamp, reason):
    resp = decide(request_client, timestamp=timestamp)
    assert_problem(resp, 400, "timestamp", reason)


@pytest.mark.parametrize("timestamp", ["9999-12-31T23:00:00Z", "9000-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
                                       "1969-12-31T23:59:59Z"])
def test_timestamp_at_the_ends_of_the_calendar_is_refused(request_client, timestamp):
    # Regression: the request clock only moves forward and keeps the first timestamp it sees.
    # One at the end of the calendar used to be accepted and made every later decision fail with
    # a 500 (date value out of range); one before year 1 (UTC) did the same to consent reads.
    resp = decide(request_client, timestamp=timestamp)
    assert_problem(resp, 400, "timestamp", "between 1970 and 8999")
    resp = request_client.put("/v1/users/u1/consent", json={"channels": {"email": True}, "timestamp": timestamp})
    assert_problem(resp, 400, "timestamp", "between 1970 and 8999")
    resp = decide(request_client, timestamp=T0)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["explanation"]["decided_at"] == T0
    assert request_client.get("/v1/users/u1").status_code == 200
    assert request_client.get("/v1/policies/lifecycle").status_code == 200


def test_timestamps_inside_the_range_are_accepted(request_client):
    for ts in ("1970-01-01T00:00:00Z", "8999-12-31T23:59:59Z"):
        resp = request_client.put("/v1/users/u1/consent", json={"channels": {"email": True}, "timestamp": ts})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert decide(request_client, timestamp=ts).status_code == 200
    assert request_client.get("/v1/users/u1").status_code == 200


# -- outcomes -------------------------------------------------------------------------------------------

def test_outcome_for_unknown_event(client):
    resp = client.post("/v1/events/no-such-event/outcomes", json={"type": "click"})
    assert_problem(resp, 404, "event_id", "'no-such-event'")


def test_outcome_unknown_type(client):
    event = new_event(client)
    resp = client.post(f"/v1/events/{event}/outcomes", json={"type": "like"})
    body = assert_problem(resp, 400, "type", "'like'", "not an outcome type")
    for known in ("click", "convert", "unsubscribe"):
        assert known in body["detail"]


def test_outcome_missing_type(client):
    event = new_event(client)
    resp = client.post(f"/v1/events/{event}/outcomes", json={"value": 2.0})
    assert_problem(resp, 400, "type", "required")


@pytest.mark.parametrize("raw_value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_outcome_value_not_finite(client, raw_value):
    # NaN and Infinity are not JSON (RFC 8259) and 1e999 overflows a double: the parser refuses
    # them and says where; nothing is stored
    event = new_event(client)
    resp = post_raw(client, f"/v1/events/{event}/outcomes", '{"type": "convert", "value": %s}' % raw_value)
    body = assert_problem(resp, 400, "body", "not valid JSON")
    assert "column" in body["detail"]
    assert client.get(f"/v1/events/{event}").get_json()["outcomes"] == []


def test_outcome_value_not_finite_in_process(tmp_path):
    # the Python API takes floats as they are: the schema refuses a non-finite value
    from service.api import schemas
    from service.errors import BadRequest

    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(BadRequest) as exc:
            schemas.parse(schemas.OutcomeRequest, {"type": "convert", "value": value})
        assert exc.value.field == "value" and "finite" in str(exc.value)


@pytest.mark.parametrize("value", ["lots", [1], {"amount": 1}, None])
def test_outcome_value_not_a_number(client, value):
    event = new_event(client)
    resp = client.post(f"/v1/events/{event}/outcomes", json={"type": "convert", "value": value})
    assert_problem(resp, 400, "value", "valid number")


def test_outcome_unknown_field(client):
    event = new_event(client)
    resp = client.post(f"/v1/events/{event}/outcomes", json={"type": "click", "amount": 3})
    assert_problem(resp, 400, "amount", "not a field of this request")


def test_outcome_body_not_json(client):
    event = new_event(client)
    assert_problem(post_raw(client, f"/v1/events/{event}/outcomes", b"click"), 400, "body", "not valid JSON")


def test_outcome_timestamp_with_system_clock(client):
    event = new_event(client)
    resp = client.post(f"/v1/events/{event}/outcomes", json={"type": "click", "timestamp": T0})
    assert_problem(resp, 400, "timestamp", "--clock request")


def test_outcome_timestamp_before_the_decision(request_client):
    event = new_event(request_client, timestamp=T0)
    resp = request_client.post(f"/v1/events/{event}/outcomes",
                               json={"type": "click", "timestamp": "2024-03-04T09:59:59Z"})
    assert_problem(resp, 400, "timestamp", "before its decision")
    assert request_client.get(f"/v1/events/{event}").get_json()["outcomes"] == []
    # at the decision's own instant it is fine
    resp = request_client.post(f"/v1/events/{event}/outcomes", json={"type": "click", "timestamp": T0})
    assert resp.status_code == 202, resp.get_data(as_text=True)


def test_outcome_id_repeated_with_different_type(client):
    event = new_event(client)
    url = f"/v1/events/{event}/outcomes"
    assert client.post(url, json={"type": "click", "outcome_id": "o-1"}).status_code == 202
    resp = client.post(url, json={"type": "convert", "outcome_id": "o-1"})
    assert_problem(resp, 409, "outcome_id", "'o-1'", "already reported")
    outcomes = client.get(f"/v1/events/{event}").get_json()["outcomes"]
    assert [(o["type"], o["outcome_id"]) for o in outcomes] == [("click", "o-1")]


def test_outcome_id_repeated_with_different_value(client):
    event = new_event(client)
    url = f"/v1/events/{event}/outcomes"
    assert client.post(url, json={"type": "convert", "value": 20.0, "outcome_id": "order-7"}).status_code == 202
    resp = client.post(url, json={"type": "convert", "value": 25.0, "outcome_id": "order-7"})
    assert_problem(resp, 409, "outcome_id", "already reported")


def test_outcome_idempotency(client):
    event = new_event(client)
    url = f"/v1/events/{event}/outcomes"
    first = client.post(url, json={"type": "click", "outcome_id": "o-42"})
    second = client.post(url, json={"type": "click", "outcome_id": "o-42"})
    assert first.status_code == 202 and second.status_code == 202
    assert first.get_json()["duplicate"] is False
    assert first.get_json()["counted"] is True
    assert second.get_json()["duplicate"] is True
    assert second.get_json()["accepted"] is True
    outcomes = client.get(f"/v1/events/{event}").get_json()["outcomes"]
    assert [o["outcome_id"] for o in outcomes] == ["o-42"]
    counts = client.get("/v1/policies/lifecycle").get_json()["counts"]
    assert counts["outcomes"] == 1
    # without an outcome_id every report is a new outcome
    client.post(url, json={"type": "open"})
    client.post(url, json={"type": "open"})
    assert len(client.get(f"/v1/events/{event}").get_json()["outcomes"]) == 3


# -- reads -----------------------------------------------------------------------------------------

def test_get_unknown_event(client):
    assert_problem(client.get("/v1/events/no-such-event"), 404, "event_id", "'no-such-event'")


def test_get_unknown_policy(client):
    assert_problem(client.get("/v1/policies/nope"), 404, "policy", "'nope'", "lifecycle")


@pytest.mark.parametrize("method, path", [
    ("get", "/v2/policies"), ("get", "/nope"), ("post", "/v1/decide"), ("get", "/v1/events/"),
])
def test_unknown_route(client, method, path):
    body = assert_problem(getattr(client, method)(path), 404, None, "no such endpoint")
    assert body["title"] == "Not Found"


@pytest.mark.parametrize("method, path, allowed", [
    ("get", DECIDE, "POST"),
    ("put", "/v1/policies/lifecycle", "GET"),
    ("delete", "/v1/events/abc", "GET"),
    ("post", "/v1/users/u1/consent", "PUT"),
    ("post", "/healthz", "GET"),
])
def test_wrong_method(client, method, path, allowed):
    resp = getattr(client, method)(path)
    assert_problem(resp, 405, None, method.upper(), "not allowed")
    assert allowed in resp.headers.get("Allow", "")


def test_get_event_returns_what_was_decided(client):
    resp = decide(client)
    event = client.get(f"/v1/events/{resp.get_json()['event_id']}")
    assert event.status_code == 200
    body = event.get_json()
    assert body["action"] == resp.get_json()["action"]
    assert body["status"] == "pending" and body["reward"] is None and body["outcomes"] == []


def test_list_policies(client):
    decide(client)
    resp = client.get("/v1/policies")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    (lifecycle,) = resp.get_json()["policies"]
    assert lifecycle["name"] == "lifecycle"
    assert lifecycle["arm_count"] == 70  # 6 contents x 4 channels x 3 timings - 3 excluded + hold
    assert lifecycle["active_model_version"] == 1
    assert lifecycle["counts"]["decisions"] == 1
    assert set(lifecycle["counts"]) >= {"decisions", "learned", "pending", "holds", "outcomes"}


def test_get_policy(client):
    decide(client)
    resp = client.get("/v1/policies/lifecycle")
    assert resp.status_code == 200
    p = resp.get_json()
    arms = {a["arm"] for a in p["arms"]}
    assert "hold" in arms and "spring_sale:email:evening" in arms
    assert "welcome_tips:sms:now" not in arms  # excluded by the policy
    assert p["arm_count"] == len(p["arms"]) == 70
    assert set(p["features"]) == {"segment", "country", "tenure_days"}
    assert p["features"]["segment"]["required"] is True
    assert p["features"]["tenure_days"] == {"type": "number", "min": 0, "description": "days since sign-up"}
    assert {(c["channel"], c["max"], c["window_seconds"]) for c in p["guardrails"]["caps"]} == {
        ("push", 1, 86400), ("email", 3, 7 * 86400), ("*", 5, 7 * 86400)}
    assert p["guardrails"]["consent"]["in_app"] == "opt_out"
    assert p["reward_window_seconds"] == 2 * 86400
    assert p["active_model_version"] == 1
    assert p["counts"]["decisions"] == 1 and p["counts"]["pending"] == 1


def test_healthz(client, request_client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "policies": ["lifecycle"], "clock": "system"}
    assert request_client.get("/healthz").get_json()["clock"] == "request"


def test_openapi(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["openapi"].startswith("3.1")
    decide_req = doc["components"]["schemas"]["DecideRequest"]
    assert "user_id" in decide_req["properties"] and "user_id" in decide_req["required"]
    assert decide_req["additionalProperties"] is False
    op = doc["paths"]["/v1/policies/{policy}/decide"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"] == \
        "#/components/schemas/DecideRequest"
    assert op["parameters"][0]["schema"]["enum"] == ["lifecycle"]
    assert "application/problem+json" in op["responses"]["400"]["content"]
    for ref in _refs(doc):  # every reference resolves
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


# -- consent ---------------------------------------------------------------------------------------------

def test_consent_unknown_channel(client):
    resp = client.put("/v1/users/u1/consent", json={"channels": {"email": True, "fax": True}})
    body = assert_problem(resp, 400, "channels.fax", "'fax'", "not a channel")
    assert "email" in body["detail"] and "in_app" in body["detail"]
    assert client.get("/v1/users/u1").get_json()["consent"] == {}  # nothing was stored


def test_consent_empty_channels(client):
    assert_problem(client.put("/v1/users/u1/consent", json={"channels": {}}), 400, "channels", "at least 1 item")


def test_consent_missing_channels(client):
    assert_problem(client.put("/v1/users/u1/consent", json={"source": "signup"}), 400, "channels", "required")


@pytest.mark.parametrize("value", ["maybe", [True], {"granted": True}, None, 2])
def test_consent_non_boolean_value(client, value):
    resp = client.put("/v1/users/u1/consent", json={"channels": {"email": value}})
    assert_problem(resp, 400, "channels.email", "valid boolean")


def test_consent_timestamp_with_system_clock(client):
    resp = client.put("/v1/users/u1/consent", json={"channels": {"email": True}, "timestamp": T0})
    assert_problem(resp, 400, "timestamp", "--clock request")


def test_consent_is_stored_and_applied(client):
    resp = client.put("/v1/users/u1/consent", json={"channels": {"email": True, "in_app": False}, "source": "form"})
    assert resp.status_code == 200
    assert resp.get_json()["consent"] == {"email": True, "in_app": False}
    event = client.get(f"/v1/events/{new_event(client)}").get_json()
    allowed_channels = {a["arm"].split(":")[1] for a in event["allowed"] if a["arm"] != "hold"}
    assert allowed_channels == {"email"}


# -- fuzzing: nothing a client sends makes a 500 ----------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=12) | st.sampled_from(["", "click", "email", "NaN", T0]))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
edge_timestamps = st.sampled_from([
    "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z",
    "8999-12-31T23:59:59Z", "2024-02-29T02:30:00+05:45", "2024-03-31T02:30:00+02:00"])
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(timezone.utc) | st.timezones())
    .map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no time zone
    st.integers(min_value=-(2**40), max_value=2**45),
    edge_timestamps,
    json_values,
)
contexts = st.dictionaries(
    st.sampled_from(["segment", "country", "tenure_days"]) | st.text(max_size=6),
    json_values | st.text(max_size=250) | st.floats(allow_nan=True, allow_infinity=True),
    max_size=4,
)
good_timestamps = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(8999, 12, 1),
                               timezones=st.just(timezone.utc) | st.timezones()).map(lambda d: d.isoformat()) \
    | edge_timestamps
good_contexts = st.fixed_dictionaries({"segment": st.text(max_size=20)}, optional={
    "country": st.text(max_size=5) | st.none(),
    "tenure_days": st.integers(min_value=0) | st.floats(min_value=0, max_value=1e12) | st.none(),
})
# Nearly valid bodies reach the engine (guardrails, model, store); wild ones probe validation.
decide_bodies = st.fixed_dictionaries(
    {"user_id": st.text(min_size=1, max_size=20), "context": good_contexts},
    optional={"consistency_key": st.text(min_size=1, max_size=5), "timestamp": good_timestamps},
) | st.fixed_dictionaries({}, optional={
    "user_id": st.text(max_size=300) | json_values,
    "context": good_contexts | contexts | json_values,
    "consistency_key": st.text(max_size=5) | json_values,
    "timestamp": timestamps,
    "extra": json_values,
})
outcome_types = st.sampled_from(["click", "open", "convert", "unsubscribe", "complaint", "sent"])
outcome_bodies = st.fixed_dictionaries({"type": outcome_types}, optional={
    "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
    "outcome_id": st.sampled_from(["a", "b", "c"]),
    "timestamp": good_timestamps,
}) | st.fixed_dictionaries({}, optional={
    "type": outcome_types | json_values,
    "value": st.floats(allow_nan=True, allow_infinity=True) | json_values,
    "outcome_id": st.sampled_from(["a", "b", "c"]) | json_values,
    "timestamp": timestamps,
    "junk": json_values,
})
channels = st.sampled_from(["email", "push", "sms", "in_app"])
consent_bodies = st.fixed_dictionaries({"channels": st.dictionaries(channels, st.booleans(), min_size=1)}, optional={
    "source": st.text(max_size=10) | st.none(),
    "timestamp": good_timestamps,
}) | st.fixed_dictionaries({}, optional={
    "channels": st.dictionaries(channels | st.text(max_size=5), json_values, max_size=3) | json_values,
    "source": json_values,
    "timestamp": timestamps,
})


def raw_bodies(objects):
    return st.one_of(
        objects.map(lambda o: json.dumps(o).encode()),
        json_values.map(lambda o: json.dumps(o).encode()),
        st.binary(max_size=40),
    )


def check_response(resp, ok_status: int) -> None:
    text = resp.get_data(as_text=True)
    event(f"status {resp.status_code}")
    assert resp.status_code < 500, text
    if resp.status_code == ok_status:
        assert resp.headers["Content-Type"] == "application/json"
        return
    assert resp.headers["Content-Type"] == PROBLEM, text
    body = json.loads(text)
    assert body["status"] == resp.status_code
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize("which", ["client", "request_client"])
@FUZZ
@given(raw=raw_bodies(decide_bodies))
def test_fuzz_decide(request, which, raw):
    c = request.getfixturevalue(which)
    resp = post_raw(c, DECIDE, raw)
    check_response(resp, 200)
    if resp.status_code == 200:
        body = resp.get_json()
        assert body["event_id"] and 0 < body["probability"] <= 1 and math.isfinite(body["probability"])


@pytest.fixture
def fuzz_event(request_client) -> str:
    """One real decision, made once for all the examples of a fuzz run."""
    return new_event(request_client, timestamp=T0)


@FUZZ
@given(raw=raw_bodies(outcome_bodies), target=st.sampled_from(["event", "event", "event", "missing"]))
def test_fuzz_outcomes(request_client, fuzz_event, raw, target):
    event = fuzz_event if target == "event" else "missing-event"
    resp = post_raw(request_client, f"/v1/events/{event}/outcomes", raw)
    check_response(resp, 202)
    if target == "missing":
        assert resp.status_code in (400, 404)
    assert request_client.get(f"/v1/events/{fuzz_event}").status_code == 200


@FUZZ
@given(raw=raw_bodies(consent_bodies))
def test_fuzz_consent(request_client, raw):
    resp = request_client.put("/v1/users/fuzz/consent", data=raw, content_type="application/json")
    check_response(resp, 200)
    assert request_client.get("/v1/users/fuzz").status_code == 200


def test_consent_values_are_strict_booleans(client):
    r = client.put("/v1/users/u1/consent", json={"channels": {"email": "true"}})
    assert_problem(r, 400, "channels.email")
    r = client.put("/v1/users/u1/consent", json={"channels": {"email": 1}})
    assert_problem(r, 400, "channels.email")


def test_outcome_value_must_be_a_number_not_a_string(client):
    event = decide(client).get_json()["event_id"]
    r = client.post(f"/v1/events/{event}/outcomes", json={"type": "convert", "value": "1.5"})
    assert_problem(r, 400, "value")


def test_json_null_body_is_named_as_not_an_object(client):
    r = client.post("/v1/policies/lifecycle/decide", data="null", content_type="application/json")
    body = assert_problem(r, 400, "body")
    assert "JSON object" in body["detail"]
