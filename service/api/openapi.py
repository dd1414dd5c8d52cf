"""The OpenAPI 3.1 document (`GET /openapi.json`): the request and answer schemas come from the
pydantic models that validate them (schemas.py), so the document and the validators cannot
disagree; each operation carries the scope it needs (auth.py). The core operations, the safety
switches (pause, resume, the circuit breaker, the contents report), what campaign tools use
(delivery reports, reloads, the live catalog) and the API keys."""
from __future__ import annotations

from typing import Any

from service.api.auth import ANY, NAME_PATTERN, PUBLIC
from service.api.schemas import (ArmPatchRequest, BreakerResetRequest, ConsentRequest, ContentRequest, DecideRequest,
                                 DecideResponse, DeliveryRequest, DeliveryResponse, EventResponse, KeyRequest,
                                 OutcomeRequest, OutcomeResponse, PauseRequest, PreferencesRequest, Problem,
                                 ReasonRequest)


def _body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _resp(code: str, name: str, desc: str) -> dict:
    ctype = "application/problem+json" if name == "Problem" else "application/json"
    return {code: {"description": desc, "content": {ctype: {"schema": {"$ref": f"#/components/schemas/{name}"}}}}}


_PLAIN = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
_PROBLEMS = _resp("400", "Problem", "Invalid input: the field and the reason") | _resp("404", "Problem", "Not found")
_TOO_LARGE = _resp("413", "Problem", "The body is over 1 MiB (naming `body`)")
BEARER = {"type": "http", "scheme": "bearer",
          "description": "An API key (`tk_...`) from `tactful keys create` or `POST /v1/keys`, as "
                         "`Authorization: Bearer <key>`. Each operation names the scope it needs in `x-scopes` "
                         "(empty: any valid key) and in its description. A store that has never held a key "
                         "serves without one, and `tactful serve` allows that only on a loopback address."}


def openapi(policies: list[str], scopes: dict[tuple[str, str], str]) -> dict:
    """The OpenAPI 3.1 document; `scopes` gives what each (path, method) needs (service/api/auth.py),
    every operation's is required."""
    models = [DecideRequest, DecideResponse, OutcomeRequest, OutcomeResponse, DeliveryRequest, DeliveryResponse,
              EventResponse, ConsentRequest, PreferencesRequest, ArmPatchRequest, PauseRequest, BreakerResetRequest,
              ReasonRequest, ContentRequest, KeyRequest, Problem]
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


def _paths(policies: list[str]) -> dict:
    body, resp, problems, plain = _body, _resp, _PROBLEMS, _PLAIN
    policy_param = {"name": "policy", "in": "path", "required": True, "schema": {"type": "string", "enum": policies}}
    event_param = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
    user_param = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return _campaign_paths(policy_param, event_param) | {
        "/v1/policies/{policy}/decide": {"post": {
            "operationId": "decide", "requestBody": body("DecideRequest"),
            "parameters": [policy_param, {"name": "Idempotency-Key", "in": "header", "required": False,
                                          "description": "The request id, instead of `request_id` in the body",
                                          "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,128}$"}}],
            "responses": resp("200", "DecideResponse", "The decision (a repeated request id: the same one)")
            | problems | resp("409", "Problem", "The request id was used for another request, or the person's "
                                               "state kept changing") | _TOO_LARGE}},
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


def _campaign_paths(policy_param: dict, event_param: dict) -> dict:
    """What campaign tools use beside decide (docs/integration.md): delivery reports, policy
    reloads, the live content catalog."""
    body, resp, problems, plain = _body, _resp, _PROBLEMS, _PLAIN
    content_param = {"name": "content_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"}}
    return {
        "/v1/events/{event_id}/delivery": {"post": {
            "operationId": "reportDelivery", "parameters": [event_param], "requestBody": body("DeliveryRequest"),
            "responses": resp("202", "DeliveryResponse", "Stored (or acknowledged as a repeat)") | problems
            | resp("409", "Problem", "It contradicts the status reported before, or the decision was a hold")
            | _TOO_LARGE}},
        "/v1/policies/{policy}/reload": {"post": {
            "operationId": "reloadPolicy", "parameters": [policy_param],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/ReasonRequest"}}}},
            "description": "Read the policy's file again: a valid one is served by every worker of every replica "
                           "within about a second; an invalid one is refused (409, naming the key and the reason) "
                           "and the running policy is kept. `tactful serve` does the same for every policy on SIGHUP.",
            "responses": plain | problems | resp("409", "Problem", "The file does not validate: the running "
                                                                    "policy is kept") | _TOO_LARGE}},
        "/v1/policies/{policy}/contents": {"get": {
            "operationId": "listContents", "parameters": [policy_param],
            "description": "The contents the policy offers and the ones it retired, each with its origin (the file, "
                           "or its latest catalog change: when, by whom, why).", "responses": plain | problems}},
        "/v1/policies/{policy}/contents/{content_id}": {
            "put": {"operationId": "putContent", "parameters": [policy_param, content_param],
                    "requestBody": body("ContentRequest"),
                    "description": "Add a content to the policy's live catalog, or change one: every worker offers "
                                   "its arms within about a second, scored from what the model knows of their "
                                   "topic, tags, channel, timing and features. Stored with who, when and why.",
                    "responses": plain | {"201": {"description": "Added", "content": {"application/json": {
                        "schema": {"type": "object"}}}}} | problems | _TOO_LARGE},
            "delete": {"operationId": "retireContent", "parameters": [policy_param, content_param],
                       "requestBody": {"required": False, "content": {"application/json": {"schema": {
                           "$ref": "#/components/schemas/ReasonRequest"}}}},
                       "description": "Retire a content: its arms leave every decision; its history stays (learned "
                                      "and evaluated).",
                       "responses": plain | problems | resp("409", "Problem", "It holds the policy's fallback arm")
                       | _TOO_LARGE}},
    }
