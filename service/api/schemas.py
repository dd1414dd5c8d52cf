"""Request and response schemas of HTTP API v1.

The same pydantic models validate requests and generate the OpenAPI 3.1 document
(`GET /openapi.json`), so the documentation cannot drift from what the service accepts.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      ValidationError, field_validator)

from service.api.auth import ANY, NAME_PATTERN, PUBLIC, SCOPES
from service.errors import BadRequest
from service.times import iana_zone


_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def _in_range(v: datetime) -> datetime:
    # Timestamps become the request clock (which only moves forward) and stored times. Near the
    # ends of the calendar they overflow it (send times, reward windows, RFC 3339 rendering),
    # which would fail every later request, so they are refused here.
    if not _EARLIEST <= v < _LATEST:
        raise ValueError("must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z")
    return v


Timestamp = Annotated[AwareDatetime, AfterValidator(_in_range)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecideRequest(_Request):
    user_id: str = Field(min_length=1, max_length=256, description="The caller's opaque id of the person.")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="Context features, as the policy declares them.")
    consistency_key: str | None = Field(default=None, min_length=1, max_length=256,
                                        description="Decisions sharing this key keep the same content.")
    timestamp: Timestamp | None = Field(default=None,
                                        description="RFC 3339; only with `tactful serve --clock request`.")


class OutcomeRequest(_Request):
    type: str = Field(min_length=1, max_length=64, description="An outcome type of the policy (click, ...).")
    value: StrictFloat = Field(default=1.0, description="Size of the outcome (1 by default; order value, ...).")
    outcome_id: str | None = Field(default=None, min_length=1, max_length=256,
                                   description="Idempotency key: a repeat is acknowledged and counted once.")
    timestamp: Timestamp | None = Field(default=None, description="RFC 3339; only with --clock request.")

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class ConsentRequest(_Request):
    channels: dict[str, StrictBool] = Field(min_length=1, description="Channel -> granted (true) or refused (false).")
    source: str | None = Field(default=None, max_length=256, description="Where the consent was collected.")
    timestamp: Timestamp | None = None


def _hhmm(v: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
        raise ValueError("must be a local time HH:MM, such as 21:00")
    return v


def _iana(v: str | None) -> str | None:
    return None if v is None else iana_zone(v)


class QuietHoursIn(_Request):
    start: Annotated[str, AfterValidator(_hhmm)] = Field(description="Local time HH:MM quiet hours begin.")
    end: Annotated[str, AfterValidator(_hhmm)] = Field(description="Local time HH:MM they end (may wrap midnight).")

    @field_validator("end")
    @classmethod
    def _differs(cls, v: str, info) -> str:
        if info.data.get("start") == v:
            raise ValueError("must differ from start: quiet hours would be empty")
        return v


Name = Annotated[str, Field(min_length=1, max_length=64)]


class PreferencesRequest(_Request):
    """The person's own preferences; a PUT replaces them all."""

    preferred_channels: list[Name] = Field(default_factory=list, max_length=16,
                                           description="Channels the person prefers (a soft signal for the learner).")
    blocked_channels: list[Name] = Field(default_factory=list, max_length=16,
                                         description="Channels never to use for this person.")
    blocked_topics: list[Name] = Field(default_factory=list, max_length=64, description="Topics never to send.")
    max_contacts_per_week: StrictInt | None = Field(default=None, ge=0, le=1000,
                                                   description="The person's own limit, on every channel.")
    quiet_hours: QuietHoursIn | None = Field(default=None, description="No sends in these local hours.")
    timezone: Annotated[str | None, AfterValidator(_iana)] = Field(default=None, description="IANA time zone.")
    timestamp: Timestamp | None = None


class ArmPatchRequest(_Request):
    """Switch an arm, or every arm of a content, at runtime; fields left out keep their value."""

    status: Literal["active", "retired", "out_of_stock"] | None = None
    valid_from: Timestamp | None = Field(default=None, description="Not sent before (RFC 3339); null clears.")
    valid_until: Timestamp | None = Field(default=None, description="Not sent from (RFC 3339); null clears.")
    reason: str | None = Field(default=None, max_length=256)


class PauseRequest(_Request):
    """Pause or resume a whole policy (`admin`): why, recorded with the change."""

    reason: str = Field(min_length=1, max_length=500, pattern=r"\S",
                        description="Why: shown in every decision while the policy is paused, and kept.")


class BreakerResetRequest(_Request):
    """Close a tripped circuit breaker (`admin`): one (`target`) or every open one of the policy."""

    reason: str = Field(min_length=1, max_length=500, pattern=r"\S", description="Why: kept with the reset.")
    target: str | None = Field(default=None, max_length=200, description="What the breaker watches: "
                               "`content:<id>`, `channel:<name>` or `policy`; every open one when left out.")


class KeyRequest(_Request):
    """A new API key (`admin`): the answer shows the key once."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique among the keys not revoked.")
    scopes: list[Literal[tuple(SCOPES)]] = Field(min_length=1, max_length=len(SCOPES),
                                                 description="What the key may do: " + "; ".join(
                                                     f"`{k}`: {v}" for k, v in SCOPES.items()) + ".")


class Action(BaseModel):
    arm: str
    content: str | None
    channel: str | None
    timing: str | None
    send_at: str | None
    hold: bool


class Removed(BaseModel):
    count: int
    reasons: dict[str, int]


class DecideResponse(BaseModel):
    event_id: str
    policy: str
    model_version: int | None
    mode: Literal["explore", "exploit", "holdout", "fallback", "consistent"]
    action: Action
    probability: float
    removed: Removed
    explanation: dict[str, Any]


class OutcomeResponse(BaseModel):
    event_id: str
    outcome_id: str | None
    type: str
    value: float
    accepted: bool
    duplicate: bool
    counted: bool | None
    note: str | None


class EventResponse(DecideResponse):
    status: Literal["pending", "final", "learned"]
    reward: float | None
    reward_window_closes_at: str
    learned_in_version: int | None
    outcomes: list[dict[str, Any]]
    allowed: list[dict[str, Any]]


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] = []
    scope: str | None = Field(default=None, description="A 403's: the scope the request needs.")


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "body"


def parse(model: type[_Request], payload: Any) -> _Request:
    """Validate a JSON body; every problem becomes a BadRequest naming its field."""
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", "body")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            reason = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                reason = "is not a field of this request"
            errors.append({"field": _field(e["loc"]), "reason": reason})
        raise BadRequest(f"{errors[0]['field']}: {errors[0]['reason']}", errors[0]["field"], errors) from None


def _body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _resp(code: str, name: str, desc: str) -> dict:
    ctype = "application/problem+json" if name == "Problem" else "application/json"
    return {code: {"description": desc, "content": {ctype: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


_PLAIN = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
_PROBLEMS = _resp("400", "Problem", "Invalid input: the field and the reason") | _resp("404", "Problem", "Not found")
BEARER = {"type": "http", "scheme": "bearer",
          "description": "An API key (`tk_...`) from `tactful keys create` or `POST /v1/keys`, as "
                         "`Authorization: Bearer <key>`. Each operation names the scope it needs in `x-scopes` "
                         "(empty: any valid key) and in its description. A store that has never held a key "
                         "serves without one, and `tactful serve` allows that only on a loopback address."}


def openapi(policies: list[str], scopes: dict[tuple[str, str], str]) -> dict:
    """The OpenAPI 3.1 document; `scopes` gives what each (path, method) needs (service/api/auth.py),
    every operation's is required."""
    models = [DecideRequest, DecideResponse, OutcomeRequest, OutcomeResponse, EventResponse, ConsentRequest,
              PreferencesRequest, ArmPatchRequest, PauseRequest, BreakerResetRequest, KeyRequest, Problem]
    schemas: dict[str, Any] = {}
    for m in models:
        s = m.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        schemas.update(s.pop("$defs", {}))
        schemas[m.__name__] = s
    paths = _paths(policies) | _safety_paths(policies) | _key_paths()
    for path, operations in paths.items():
        for method, op in operations.items():
            _secure(op, scopes[(path, method)])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tactful", "version": "1",
                 "description": "Decisions for personalized communications: which message, on which channel, "
                                "at what time, or nothing at all."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": BEARER}},
        "security": [{"bearer": []}],
    }


def _secure(op: dict, scope: str) -> None:
    """Mark an operation with what it needs: no key, any key, or a key with a scope."""
    if scope == PUBLIC:
        op["security"] = []
        return
    op["x-scopes"] = [] if scope == ANY else [scope]
    need = "any valid API key" if scope == ANY else f"an API key with the scope `{scope}`"
    op["description"] = f"Needs {need}. {op.get('description', '')}".strip()
    op["responses"] = op["responses"] | _resp("401", "Problem", "No API key, or one unknown or revoked")
    if scope != ANY:
        op["responses"] |= _resp("403", "Problem", f"The API key lacks the scope `{scope}` (named in `scope`)")


def _key_paths() -> dict:
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_PATTERN}}
    return {
        "/v1/keys": {
            "get": {"operationId": "listKeys", "description": "The API keys not revoked (never a key itself).",
                    "responses": _PLAIN},
            "post": {"operationId": "createKey", "requestBody": _body("KeyRequest"),
                     "description": "A new API key; the answer's `key` is shown this once, only its hash is kept.",
                     "responses": {"201": {"description": "Created, with `key`", "content": {"application/json": {
                         "schema": {"type": "object"}}}}} | _PROBLEMS
                     | _resp("409", "Problem", "An active key has that name")}},
        "/v1/keys/{name}": {"delete": {
            "operationId": "revokeKey", "parameters": [name_param],
            "description": "Revoke a key: every worker refuses it within a second or two.",
            "responses": _PLAIN | _PROBLEMS}},
    }


def _safety_paths(policies: list[str]) -> dict:
    """Pause and resume, and the circuit breaker (service/api/safety.py)."""
    body, resp, problems, plain = _body, _resp, _PROBLEMS, _PLAIN
    policy_param = {"name": "policy", "in": "path", "required": True, "schema": {"type": "string", "enum": policies}}
    return {
        "/v1/policies/{policy}/pause": {"post": {
            "operationId": "pausePolicy", "parameters": [policy_param], "requestBody": body("PauseRequest"),
            "description": "Hold every decision of the policy (reason `paused`, with this reason) until it is "
                           "resumed, from the next decision in every worker. Pausing a paused policy changes "
                           "nothing (`changed`: false).", "responses": plain | problems}},
        "/v1/policies/{policy}/resume": {"post": {
            "operationId": "resumePolicy", "parameters": [policy_param], "requestBody": body("PauseRequest"),
            "description": "Serve the policy again, from the next decision in every worker.",
            "responses": plain | problems}},
        "/v1/policies/{policy}/breaker": {"get": {
            "operationId": "getBreaker", "parameters": [policy_param],
            "description": "The circuit breaker: the policy's `[safety]` configuration, every breaker that "
                           "ever tripped (open or closed, with its detail), each watched rate now with its "
                           "bounds, and the latest pauses, trips and resets.", "responses": plain | problems}},
        "/v1/policies/{policy}/breaker/reset": {"post": {
            "operationId": "resetBreaker", "parameters": [policy_param], "requestBody": body("BreakerResetRequest"),
            "description": "Close an open breaker (or every open one), with a reason; only sends made from "
                           "now on count for it again.",
            "responses": plain | problems | resp("409", "Problem", "That breaker is not open")}},
        "/v1/policies/{policy}/contents/report": {"get": {
            "operationId": "contentsReport", "parameters": [policy_param],
            "description": "The latest contents report (stored by the learner every `review_every` of the "
                           "policy's [safety] table, or by `tactful report contents --save`): each content's "
                           "estimated shaped reward against the best content and holding, and the candidates "
                           "to retire. 404 until one was written.", "responses": plain | problems}},
    }


def _paths(policies: list[str]) -> dict:
    body, resp, problems, plain = _body, _resp, _PROBLEMS, _PLAIN
    policy_param = {"name": "policy", "in": "path", "required": True, "schema": {"type": "string", "enum": policies}}
    event_param = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
    user_param = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/policies/{policy}/decide": {"post": {
            "operationId": "decide", "parameters": [policy_param], "requestBody": body("DecideRequest"),
            "responses": resp("200", "DecideResponse", "The decision") | problems}},
        "/v1/events/{event_id}/outcomes": {"post": {
            "operationId": "reportOutcome", "parameters": [event_param], "requestBody": body("OutcomeRequest"),
            "responses": resp("202", "OutcomeResponse", "Stored (or acknowledged as a repeat)")
            | problems | resp("409", "Problem", "The outcome_id was reported with another type or value")}},
        "/v1/events/{event_id}": {"get": {
            "operationId": "getEvent", "parameters": [event_param],
            "responses": resp("200", "EventResponse", "The decision, its outcomes and reward") | problems}},
        "/v1/policies": {"get": {"operationId": "listPolicies", "responses": plain}},
        "/v1/policies/{policy}": {"get": {"operationId": "getPolicy", "parameters": [policy_param],
                                          "responses": plain | problems}},
        "/v1/users/{user_id}/consent": {"put": {
            "operationId": "setConsent", "parameters": [user_param], "requestBody": body("ConsentRequest"),
            "responses": plain | problems}},
        "/v1/users/{user_id}": {
            "get": {"operationId": "getUser", "parameters": [user_param], "responses": plain},
            "delete": {"operationId": "eraseUser", "parameters": [user_param],
                       "description": "Erase the person's state and contact history; their past decisions "
                                      "stay, unlinked and anonymous, for learning.", "responses": plain}},
        "/v1/users/{user_id}/preferences": {"put": {
            "operationId": "setPreferences", "parameters": [user_param], "requestBody": body("PreferencesRequest"),
            "responses": plain | problems}},
        "/v1/users/{user_id}/decisions": {"get": {
            "operationId": "userDecisions",
            "parameters": [user_param, {"name": "limit", "in": "query", "required": False,
                                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}}],
            "responses": plain | problems}},
        "/v1/policies/{policy}/arms/{arm}": {"patch": {
            "operationId": "patchArm",
            "parameters": [policy_param, {"name": "arm", "in": "path", "required": True,
                                          "description": "An arm id (content:channel:timing) or a content id",
                                          "schema": {"type": "string"}}],
            "requestBody": body("ArmPatchRequest"), "responses": plain | problems}},
        "/v1/policies/{policy}/models": {"get": {
            "operationId": "listModels", "parameters": [policy_param],
            "description": "Every model version of the policy, which is active, and every activation with its reason.",
            "responses": plain | problems}},
        "/v1/policies/{policy}/models/{version}/activate": {"post": {
            "operationId": "activateModel",
            "parameters": [policy_param, {"name": "version", "in": "path", "required": True,
                                          "schema": {"type": "integer", "minimum": 1}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": {"type": "string", "minLength": 1}},
                "additionalProperties": False}}}},
            "description": "Make a version active (a rollback is activating an older one); workers serve it "
                           "within seconds. The activation is recorded with its reason.",
            "responses": plain | problems}},
        "/healthz": {"get": {"operationId": "health", "responses": plain}},
        "/readyz": {"get": {"operationId": "ready", "description": "200 when the store answers, each policy's "
                            "active model version loads and a learner's heartbeat is fresh; otherwise 503 "
                            "naming every reason.", "responses": plain | {"503": {"description": "not ready"}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "description": "This document.", "responses": plain}},
        "/metrics": {"get": {"operationId": "metrics", "description": "Prometheus' text format: every process of "
                             "the replica added up, and what the store says of each policy's learning.",
                             "responses": {"200": {"description": "The metrics", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}}}},
    }
