"""The OpenAPI 3.1 document of HTTP API v1 (`GET /openapi.json`), generated from what validates
requests, so that it says exactly what the service accepts and answers:

- request bodies: the pydantic models of service/api/schemas.py, with what depends on the
  policies served filled in from the same functions the validators call (the context features
  of service/decision/context.py, the channels, outcome types and arms); a `timestamp` only
  where the clock takes one (`--clock request`);
- parameters: the same ranges and lists the routes check (`schemas.VERSION`, `schemas.LIMIT`);
- answers: every status each operation can give, including 401 and 403 (from the scope its view
  declares), 404, 409, 413 (a body over the limit), 415 (a body that is not JSON) and 503 (the
  store unavailable); never 500, which the fuzz test (tests/test_fuzz_api.py) holds to.

With several policies, a body names the union of their channels, outcome types and arms, and a
decide's `context` any policy's features (`anyOf`); with one policy the document is exact.
"""
from __future__ import annotations

from typing import Any, Mapping

from service.api import answers, schemas
from service.api.auth import ANY, PUBLIC
from service.decision.batch import MAX_BATCH
from service.decision.context import context_schema
from service.learning.breaker import targets as breaker_targets
from service.policy import Policy
from service.times import time_zones

BEARER = {"type": "http", "scheme": "bearer",
          "description": "An API key (`tk_...`) from `tactful keys create` or `POST /v1/keys`, as "
                         "`Authorization: Bearer <key>`. Each operation names the scope it needs in `x-scopes` "
                         "(empty: any valid key) and in its description. A store that has never held a key "
                         "serves without one, and `tactful serve` allows that only on a loopback address."}
LEVELS = ("content", "channel", "policy")  # every breaker a reset may name
MODELS = [schemas.DecideRequest, answers.DecideResponse, schemas.OutcomeRequest, answers.OutcomeResponse,
          answers.EventResponse, schemas.ConsentRequest, schemas.PreferencesRequest, schemas.ArmPatchRequest,
          schemas.KeyRequest, schemas.ActivateRequest, answers.Problem, answers.Person, answers.PersonDecisions,
          answers.Erased, answers.PolicyList, answers.ArmState, answers.ModelList, answers.Activation,
          answers.KeyList, answers.KeyCreated, answers.KeyRevoked, answers.Health, answers.Ready,
          schemas.DeliveryRequest, answers.DeliveryResponse, schemas.ReasonRequest, schemas.ContentRequest,
          schemas.PauseRequest, schemas.BreakerResetRequest, schemas.BatchDecideRequest, answers.BatchDecideResponse]
REQUESTS = {"DecideRequest", "OutcomeRequest", "ConsentRequest", "PreferencesRequest", "ArmPatchRequest",
            "KeyRequest", "ActivateRequest", "DeliveryRequest", "ReasonRequest", "ContentRequest", "PauseRequest",
            "BreakerResetRequest", "BatchDecideRequest"}
WHY = {"400": "Invalid input: the field and the reason", "404": "Not found (named in `field`)",
       "409": "Conflict (named in `field`)", "413": "The body is larger than {limit} bytes",
       "415": "The body is not JSON: send `Content-Type: application/json`",
       "405": "Not on this path: `report` names the contents report, not a content",
       "503": "The store is unavailable; try again (`Retry-After`)"}


def document(policies: Mapping[str, Policy], scopes: dict[tuple[str, str], str], accepts_timestamps: bool,
             max_body: int | None) -> dict:
    """The document for an app serving `policies`; `scopes` gives what each (path, method) needs
    (service/api/routes.py `operation_scopes`)."""
    components: dict[str, Any] = {}
    for m in MODELS:
        s = m.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
        components.update(s.pop("$defs", {}))
        components[m.__name__] = s
    _fill_in(components, policies, accepts_timestamps)
    paths = _paths(policies)
    for path, operations in paths.items():
        for method, op in operations.items():
            _answers(op, max_body)
            _secure(op, scopes[(path, method)])
    for name in [*REQUESTS, "QuietHoursIn"]:
        _no_nul(components[name])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tactful", "version": "1",
                 "description": "Decisions for personalized communications: which message, on which channel, "
                                "at what time, or nothing at all."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": BEARER}},
        "security": [{"bearer": []}],
    }


def _fill_in(components: dict, policies: Mapping[str, Policy], accepts_timestamps: bool) -> None:
    """What the request schemas leave open until the policies and the clock are known."""
    contexts = [context_schema(p) for _, p in sorted(policies.items())]
    decide = components["DecideRequest"]
    decide["properties"]["context"] = contexts[0] if len(contexts) == 1 else {"anyOf": contexts}
    if all(c["required"] for c in contexts):  # then an absent context (an empty one) is refused
        decide["required"].append("context")
    else:
        decide["properties"]["context"]["default"] = {}
    decide["properties"]["contents"] = {"anyOf": [{"type": "array", "minItems": 1, "maxItems": 256, "items": {
        "enum": sorted({c for p in policies.values() for c in p.content_index})}}, {"type": "null"}], "default": None,
        "description": decide["properties"]["contents"].get("description", "")}
    decide["properties"]["channels"] = {"anyOf": [{"type": "array", "minItems": 1, "maxItems": 16, "items": {
        "enum": schemas.channel_names(policies)}}, {"type": "null"}], "default": None,
        "description": decide["properties"]["channels"].get("description", "")}
    components["BreakerResetRequest"]["properties"]["target"] = {
        "anyOf": [{"enum": sorted({t for p in policies.values() for t in breaker_targets(p, LEVELS)})},
                  {"type": "null"}], "default": None,
        "description": components["BreakerResetRequest"]["properties"]["target"].get("description", "")}
    components["OutcomeRequest"]["properties"]["type"] = {"enum": schemas.outcome_types(policies),
                                                          "description": "An outcome type of the decision's policy."}
    channels = schemas.channel_names(policies)
    components["ConsentRequest"]["properties"]["channels"]["propertyNames"] = {"enum": channels}
    prefs = components["PreferencesRequest"]["properties"]
    for name in ("preferred_channels", "blocked_channels"):
        prefs[name]["items"] = {"enum": channels}
    prefs["timezone"] = {"anyOf": [{"enum": list(time_zones())}, {"type": "null"}], "default": None,
                         "description": prefs["timezone"].get("description", "")}
    if not accepts_timestamps:  # `--clock system` refuses every timestamp (service/clock.py)
        for name in REQUESTS:
            components[name]["properties"].pop("timestamp", None)


def _no_nul(node: Any) -> None:
    """Give every free text of a request schema, and every free property name, the pattern that
    refuses U+0000 (schemas.NO_NUL): the validators refuse it in every body and path."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list):
            stack.extend(n)
            continue
        if not isinstance(n, dict):
            continue
        kinds = n.get("type")
        if (kinds == "string" or (isinstance(kinds, list) and "string" in kinds)) \
                and not {"enum", "const", "pattern"} & set(n):
            n["pattern"] = schemas.NO_NUL
        if kinds == "object" and n.get("additionalProperties") is not False and "enum" not in n.get("propertyNames", {}):
            n.setdefault("propertyNames", {})["pattern"] = schemas.NO_NUL
        stack.extend(v for k, v in n.items() if k not in ("enum", "const", "default", "examples"))


def _body(name: str, required: bool = True) -> dict:
    return {"required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _ok(code: str, desc: str, name: str | None = None, links: dict | None = None) -> dict:
    schema = {"$ref": f"#/components/schemas/{name}"} if name else {"type": "object"}
    out = {"description": desc, "content": {"application/json": {"schema": schema}}}
    if links:
        out["links"] = {k: {"operationId": op, "parameters": params} for k, (op, params) in links.items()}
    return {code: out}


def _problem(desc: str, headers: dict | None = None) -> dict:
    out = {"description": desc,
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    if headers:
        out["headers"] = headers
    return out


def _answers(op: dict, max_body: int | None) -> None:
    """Turn the operation's `x-fails` (the problem statuses it can answer) into responses; a body
    may also be too large (413) or not JSON (415)."""
    fails = op.pop("x-fails")
    why = WHY | op.pop("x-why", {})
    if "requestBody" in op:
        fails = {*fails, "415"} | ({"413"} if max_body is not None else set())
    for code in sorted(fails):
        op["responses"][code] = _problem(why[code].format(limit=max_body))


def _secure(op: dict, scope: str) -> None:
    """Mark an operation with what it needs: no key, any key, or a key with a scope."""
    if scope == PUBLIC:
        op["security"] = []
        return
    op["x-scopes"] = [] if scope == ANY else [scope]
    need = "any valid API key" if scope == ANY else f"an API key with the scope `{scope}`"
    op["description"] = f"Needs {need}. {op.get('description', '')}".strip()
    challenge = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                                      "description": "`Bearer`, with the error (RFC 6750)"}}
    op["responses"]["401"] = _problem("No API key, or one unknown or revoked", challenge)
    if scope != ANY:
        op["responses"]["403"] = _problem(f"The API key lacks the scope `{scope}` (named in `scope`)", challenge)


def _param(name: str, schema: dict, where: str = "path", description: str | None = None) -> dict:
    out = {"name": name, "in": where, "required": where == "path", "schema": schema}
    return out | ({"description": description} if description else {})


def _paths(policies: Mapping[str, Policy]) -> dict:
    policy = _param("policy", {"type": "string", "enum": sorted(policies)})
    event = _param("event_id", {"type": "string"})
    user = _param("user_id", {"type": "string", "pattern": schemas.NO_NUL})
    event_link = {"event_id": "$response.body#/event_id"}
    user_link = {"user_id": "$response.body#/user_id"}
    return {
        "/v1/policies/{policy}/decide": {"post": {
            "operationId": "decide", "parameters": [policy], "requestBody": _body("DecideRequest"),
            "responses": _ok("200", "The decision", "DecideResponse", {
                "GetEvent": ("getEvent", event_link), "ReportOutcome": ("reportOutcome", event_link)}),
            "x-fails": ["400", "404", "409", "503"]}},
        "/v1/policies/{policy}/decide/batch": {"post": {
            "operationId": "decideBatch", "parameters": [policy], "requestBody": _body("BatchDecideRequest"),
            "description": f"Up to {MAX_BATCH} decides of the policy in one request, written in one store transaction; "
                           "the answers in the requests' order, an invalid request's problem (with its `index`) in "
                           "its place. Within the batch, guardrails hold as between single decides (two requests "
                           "for one person respect the caps and the minimum gap between them).",
            "responses": _ok("200", "One answer per request", "BatchDecideResponse"),
            "x-fails": ["400", "404", "409", "413", "503"],
            "x-why": {"413": f"The body is larger than {{limit}} bytes, or holds more than {MAX_BATCH} requests "
                             "(named in `field`: `requests`)"}}},
        "/v1/events/{event_id}/outcomes": {"post": {
            "operationId": "reportOutcome", "parameters": [event], "requestBody": _body("OutcomeRequest"),
            "responses": _ok("202", "Stored (or acknowledged as a repeat)", "OutcomeResponse",
                             {"GetEvent": ("getEvent", event_link)}),
            "x-fails": ["400", "404", "409", "503"]}},
        "/v1/events/{event_id}": {"get": {
            "operationId": "getEvent", "parameters": [event],
            "responses": _ok("200", "The decision, its outcomes and reward", "EventResponse"),
            "x-fails": ["404", "503"]}},
        "/v1/policies": {"get": {"operationId": "listPolicies", "responses": _ok("200", "The policies", "PolicyList"),
                                 "x-fails": ["503"]}},
        "/v1/policies/{policy}": {"get": {"operationId": "getPolicy", "parameters": [policy],
                                          "responses": _ok("200", "The policy's configuration and counts"),
                                          "x-fails": ["404", "503"]}},
        "/v1/users/{user_id}/consent": {"put": {
            "operationId": "setConsent", "parameters": [user], "requestBody": _body("ConsentRequest"),
            "responses": _ok("200", "The person's state", "Person", {
                "GetUser": ("getUser", user_link), "UserDecisions": ("userDecisions", user_link)}),
            "x-fails": ["400", "503"]}},
        "/v1/users/{user_id}": {
            "get": {"operationId": "getUser", "parameters": [user], "responses": _ok("200", "The person's state", "Person"),
                    "x-fails": ["503"]},
            "delete": {"operationId": "eraseUser", "parameters": [user],
                       "description": "Erase the person's state and contact history; their past decisions "
                                      "stay, unlinked and anonymous, for learning.",
                       "responses": _ok("200", "What was erased", "Erased"), "x-fails": ["503"]}},
        "/v1/users/{user_id}/preferences": {"put": {
            "operationId": "setPreferences", "parameters": [user], "requestBody": _body("PreferencesRequest"),
            "responses": _ok("200", "The person's state", "Person"), "x-fails": ["400", "503"]}},
        "/v1/users/{user_id}/decisions": {"get": {
            "operationId": "userDecisions", "parameters": [user, _param("limit", schemas.LIMIT, "query")],
            "responses": _ok("200", "The person's recent decisions", "PersonDecisions"), "x-fails": ["400", "503"]}},
        "/v1/policies/{policy}/arms/{arm}": {"patch": {
            "operationId": "patchArm",
            "parameters": [policy, _param("arm", {"type": "string", "enum": schemas.arm_targets(policies)},
                                          description="An arm id (content:channel:timing) or a content id")],
            "requestBody": _body("ArmPatchRequest"), "responses": _ok("200", "The arm's new state", "ArmState"),
            "x-fails": ["400", "404", "503"]}},
        **_model_paths(policy),
        **_safety_paths(policy),
        **_campaign_paths(policy, event),
    }


def _model_paths(policy: dict) -> dict:
    return {
        "/v1/policies/{policy}/models": {"get": {
            "operationId": "listModels", "parameters": [policy],
            "description": "Every model version of the policy, which is active, and every activation with its reason.",
            "responses": _ok("200", "The versions", "ModelList", {"Activate": ("activateModel", {
                "policy": "$response.body#/policy", "version": "$response.body#/versions/0/version"})}),
            "x-fails": ["404", "503"]}},
        "/v1/policies/{policy}/models/{version}/activate": {"post": {
            "operationId": "activateModel", "parameters": [policy, _param("version", schemas.VERSION)],
            "requestBody": _body("ActivateRequest", required=False),
            "description": "Make a version active (a rollback is activating an older one); workers serve it "
                           "within seconds. The activation is recorded with its reason.",
            "responses": _ok("200", "The activation", "Activation"), "x-fails": ["400", "404", "409", "503"]}},
        "/v1/keys": {
            "get": {"operationId": "listKeys", "description": "The API keys not revoked (never a key itself).",
                    "responses": _ok("200", "The keys", "KeyList"), "x-fails": ["503"]},
            "post": {"operationId": "createKey", "requestBody": _body("KeyRequest"),
                     "description": "A new API key; the answer's `key` is shown this once, only its hash is kept.",
                     "responses": _ok("201", "Created, with `key`", "KeyCreated",
                                      {"Revoke": ("revokeKey", {"name": "$response.body#/name"})}),
                     "x-fails": ["400", "409", "503"]}},
        "/v1/keys/{name}": {"delete": {
            "operationId": "revokeKey", "parameters": [_param("name", {"type": "string"})],
            "description": "Revoke a key: every worker refuses it within a second or two.",
            "responses": _ok("200", "Revoked", "KeyRevoked"), "x-fails": ["404", "503"]}},
        "/healthz": {"get": {"operationId": "health", "responses": _ok("200", "This replica answers", "Health"),
                             "x-fails": ["503"]}},
        "/readyz": {"get": {"operationId": "ready", "description": "200 when the store answers, each policy's "
                            "active model version loads and a learner's heartbeat is fresh; otherwise 503 "
                            "naming every reason.", "responses": _ok("200", "Ready", "Ready"), "x-fails": ["503"]}},
        "/openapi.json": {"get": {"operationId": "openapi", "description": "This document.",
                                  "responses": _ok("200", "This document"), "x-fails": []}},
        "/metrics": {"get": {"operationId": "metrics", "description": "Prometheus' text format: every process of "
                             "the replica added up, and what the store says of each policy's learning.",
                             "responses": {"200": {"description": "The metrics", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}}, "x-fails": []}},
    }


def _safety_paths(policy: dict) -> dict:
    """Pause and resume, the circuit breaker and the contents report (service/api/safety.py)."""
    return {
        "/v1/policies/{policy}/pause": {"post": {
            "operationId": "pausePolicy", "parameters": [policy], "requestBody": _body("PauseRequest"),
            "description": "Hold every decision of the policy (reason `paused`, with this reason) until it is "
                           "resumed, from the next decision in every worker. Pausing a paused policy changes "
                           "nothing (`changed`: false).",
            "responses": _ok("200", "The policy's pause"), "x-fails": ["400", "404", "503"]}},
        "/v1/policies/{policy}/resume": {"post": {
            "operationId": "resumePolicy", "parameters": [policy], "requestBody": _body("PauseRequest"),
            "description": "Serve the policy again, from the next decision in every worker.",
            "responses": _ok("200", "The policy's pause"), "x-fails": ["400", "404", "503"]}},
        "/v1/policies/{policy}/breaker": {"get": {
            "operationId": "getBreaker", "parameters": [policy],
            "description": "The circuit breaker: the policy's `[safety]` configuration, every breaker that ever "
                           "tripped (open or closed, with its detail), each watched rate now with its bounds, and "
                           "the latest pauses, trips and resets.",
            "responses": _ok("200", "The circuit breaker"), "x-fails": ["404", "503"]}},
        "/v1/policies/{policy}/breaker/reset": {"post": {
            "operationId": "resetBreaker", "parameters": [policy], "requestBody": _body("BreakerResetRequest"),
            "description": "Close an open breaker (or every open one), with a reason; only sends made from now on "
                           "count for it again.",
            "responses": _ok("200", "What was reset"), "x-fails": ["400", "404", "409", "503"]}},
        "/v1/policies/{policy}/contents/report": {"get": {
            "operationId": "contentsReport", "parameters": [policy],
            "description": "The latest contents report (stored by the learner every `review_every` of the policy's "
                           "[safety] table, or by `tactful report contents --save`): each content's estimated shaped "
                           "reward against the best content and holding, and the candidates to retire. 404 until "
                           "one was written.",
            "responses": _ok("200", "The latest contents report"), "x-fails": ["404", "503"]}},
    }


def _campaign_paths(policy: dict, event: dict) -> dict:
    """What campaign tools use beside decide (docs/integration.md): delivery reports, policy
    reloads, the live content catalog."""
    content = _param("content_id", {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "not": {"const": "report"}},
                     description="A content id; `report` names the contents report")
    reason = _body("ReasonRequest", required=False)
    return {
        "/v1/events/{event_id}/delivery": {"post": {
            "operationId": "reportDelivery", "parameters": [event], "requestBody": _body("DeliveryRequest"),
            "responses": _ok("202", "Stored (or acknowledged as a repeat)", "DeliveryResponse"),
            "x-fails": ["400", "404", "409", "503"]}},
        "/v1/policies/{policy}/reload": {"post": {
            "operationId": "reloadPolicy", "parameters": [policy], "requestBody": reason,
            "description": "Read the policy's file again: a valid one is served by every worker of every replica "
                           "within about a second; an invalid one is refused (409, naming the key and the reason) "
                           "and the running policy is kept. `tactful serve` does the same for every policy on SIGHUP.",
            "responses": _ok("200", "What was published"), "x-fails": ["400", "404", "409", "503"]}},
        "/v1/policies/{policy}/contents": {"get": {
            "operationId": "listContents", "parameters": [policy],
            "description": "The contents the policy offers and the ones it retired, each with its origin (the file, "
                           "or its latest catalog change: when, by whom, why).",
            "responses": _ok("200", "The catalog"), "x-fails": ["404", "503"]}},
        "/v1/policies/{policy}/contents/{content_id}": {
            "put": {"operationId": "putContent", "parameters": [policy, content], "requestBody": _body("ContentRequest"),
                    "description": "Add a content to the policy's live catalog, or change one: every worker offers its "
                                   "arms within about a second. Stored with who, when and why.",
                    "responses": _ok("200", "Changed") | _ok("201", "Added"),
                    "x-fails": ["400", "404", "405", "409", "503"]},
            "delete": {"operationId": "retireContent", "parameters": [policy, content], "requestBody": reason,
                       "description": "Retire a content: its arms leave every decision; its history stays (learned "
                                      "and evaluated).",
                       "responses": _ok("200", "Retired"), "x-fails": ["400", "404", "405", "409", "503"]}},
    }
