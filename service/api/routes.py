"""HTTP API v1: one blueprint per resource, each a thin adapter over the engine. Every view says
what it needs with `requires` (service/api/auth.py): a scope, any key, or none."""
from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from service.api import openapi as document, schemas
from service.api.auth import ANY, CONSOLE, PUBLIC, requires
from service.api.problems import problem_response
from service.api.requestlog import KEY
from service.decision.engine import DecideInput, DecisionEngine, DeliveryInput, OutcomeInput
from service.errors import BadRequest, Conflict, Problem, UnsupportedMediaType
from service.metrics import OUTCOMES, count_decision
from service.learning.learner import LEASE
from service.policy import PolicyError
from service.store import StoreUnavailable
from service.times import parse_time, to_rfc3339

decisions = Blueprint("decisions", __name__)
policies_bp = Blueprint("policies", __name__)
users = Blueprint("users", __name__)
meta = Blueprint("meta", __name__)


def engine() -> DecisionEngine:
    return current_app.extensions["tactful"]


def is_json(mimetype: str) -> bool:
    """Whether a body of this media type (lower case, no parameters; "" when none is given) is
    read as JSON: application/json, any `+json` type, or none named."""
    return mimetype in ("", "application/json") or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def body(optional: bool = False) -> object:
    """The request's JSON body; None for an empty one when it is `optional`."""
    if not is_json(request.mimetype):
        raise UnsupportedMediaType(f"the request body must be JSON: send Content-Type: application/json, "
                                   f"not {request.mimetype}", "Content-Type")
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return None
        raise BadRequest("the request body is empty: send a JSON object", "body")
    try:
        return current_app.json.loads(raw)
    except ValueError as exc:  # the parser's reason says where: "line 1 column 9 (char 8)"
        raise BadRequest(f"the request body is not valid JSON: {exc}", "body") from None


def _ts(dt) -> float | None:
    return dt.timestamp() if dt is not None else None


def decide_input(payload: object, idempotency_key: str | None = None) -> DecideInput:
    """A decide request's JSON body and its `Idempotency-Key` header, validated (BadRequest naming
    the field), as the engine's input. Also what the WSGI fast path in front of this route uses
    (service/api/fastpath.py)."""
    req = schemas.parse(schemas.DecideRequest, payload)
    request_id = req.request_id
    if idempotency_key is not None:
        try:
            schemas.request_id(idempotency_key)
        except ValueError as exc:
            raise BadRequest(f"Idempotency-Key: {exc}", "Idempotency-Key") from None
        if request_id is not None and request_id != idempotency_key:
            raise BadRequest("the Idempotency-Key header and request_id differ: send one, or both alike",
                             "request_id")
        request_id = idempotency_key
    return DecideInput(req.user_id, req.context, req.consistency_key, _ts(req.timestamp), request_id,
                       req.contents, req.channels)


@decisions.post("/v1/policies/<policy>/decide")
@requires("decide")
def decide(policy: str):
    eng = engine()
    eng.policy(policy)  # 404 before 400: an unknown policy is the first thing to fix
    answer = eng.decide(policy, decide_input(body(), request.headers.get("Idempotency-Key")))
    count_decision(answer)
    return jsonify(answer)


@decisions.post("/v1/policies/<policy>/decide/batch")
@requires("decide")
def decide_batch(policy: str):
    """Many decides in one request and one store transaction (service/decision/batch.py): each
    answer in its request's place, an invalid request's problem among them: the single decide's
    problem document (its `field` named as in a single decide's body) with the request's `index`."""
    eng = engine()
    eng.policy(policy)
    if request.headers.get("Idempotency-Key") is not None:
        raise BadRequest("a batch takes no Idempotency-Key header: give each request its own request_id",
                         "Idempotency-Key")
    reqs: list = []
    for item in schemas.batch_requests(body()):
        try:
            reqs.append(decide_input(item))
        except Problem as p:
            reqs.append(p)
    out = []
    for i, answer in enumerate(eng.decide_batch(policy, reqs)):
        if isinstance(answer, Problem):
            out.append(answer.to_dict() | {"index": i})
        else:
            count_decision(answer)
            out.append(answer)
    return jsonify({"policy": policy, "decisions": out})


@decisions.post("/v1/events/<event_id>/outcomes")
@requires("decide")
def outcome(event_id: str):
    req = schemas.parse(schemas.OutcomeRequest, body())
    result = engine().record_outcome(event_id, OutcomeInput(req.type, req.value, req.outcome_id, _ts(req.timestamp)))
    if not result["duplicate"]:
        OUTCOMES.labels(req.type).inc()
    return jsonify(result), 202


@decisions.post("/v1/events/<event_id>/delivery")
@requires("decide")
def delivery(event_id: str):
    req = schemas.parse(schemas.DeliveryRequest, body())
    return jsonify(engine().record_delivery(event_id, DeliveryInput(req.status, req.reason, _ts(req.timestamp)))), 202


@decisions.get("/v1/events/<event_id>")
@requires("decide")
def event(event_id: str):
    return jsonify(engine().event(event_id))


@policies_bp.get("/v1/policies")
@requires(ANY)
def list_policies():
    eng = engine()
    now = eng.clock.now()
    return jsonify({"policies": [
        {"name": p.name, "description": p.spec.description, "arm_count": len(p.arms),
         "active_model_version": eng.store.active_version(p.name), "counts": eng.store.policy_counts(p.name, now)}
        for p in eng.policies.values()]})


@policies_bp.get("/v1/policies/<policy>")
@requires(ANY)
def get_policy(policy: str):
    eng = engine()
    p = eng.policy(policy)
    pause = eng.pause.state(p.name)
    reloaded = eng.store.published_policies().get(p.name)
    if reloaded is not None:
        reloaded = {k: v for k, v in reloaded.items() if k != "text"} | {"at": to_rfc3339(reloaded["at"])}
    return jsonify(p.summary() | {"active_model_version": eng.store.active_version(p.name),
                                  "counts": eng.store.policy_counts(p.name, eng.clock.now()), "reloaded": reloaded,
                                  "paused": {k: pause[k] for k in ("reason", "since")} if pause["paused"] else None,
                                  "open_breakers": sorted(t for t, b in eng.store.breakers(p.name).items()
                                                          if b["status"] == "open"),
                                  "safety_events": pause["events"]})


@users.put("/v1/users/<user_id>/consent")
@requires("people:write")
def put_consent(user_id: str):
    req = schemas.parse(schemas.ConsentRequest, body())
    for ch in req.channels:
        if reason := schemas.unknown_channel(ch, engine().policies):
            raise BadRequest(reason, f"channels.{ch}")
    return jsonify(engine().people.set_consent(user_id, req.channels, req.source, _ts(req.timestamp)))


@users.get("/v1/users/<user_id>")
@requires("people:read")
def get_user(user_id: str):
    return jsonify(engine().people.person(user_id))


@users.put("/v1/users/<user_id>/preferences")
@requires("people:write")
def put_preferences(user_id: str):
    req = schemas.parse(schemas.PreferencesRequest, body())
    for name in ("preferred_channels", "blocked_channels"):
        for i, ch in enumerate(getattr(req, name)):
            if reason := schemas.unknown_channel(ch, engine().policies):
                raise BadRequest(reason, f"{name}[{i}]")
    prefs = req.model_dump(exclude={"timestamp"}, exclude_none=True)
    return jsonify(engine().people.set_preferences(user_id, prefs, _ts(req.timestamp)))


@users.get("/v1/users/<user_id>/decisions")
@requires("people:read")
def get_user_decisions(user_id: str):
    limit = schemas.whole_number(request.args.get("limit", str(schemas.LIMIT["default"])), "limit", schemas.LIMIT)
    return jsonify(engine().people.person_decisions(user_id, limit))


@users.delete("/v1/users/<user_id>")
@requires("people:write")
def delete_user(user_id: str):
    return jsonify(engine().people.erase(user_id))


@policies_bp.post("/v1/policies/<policy>/pause")
@requires("admin")
def pause(policy: str):
    return _pause(policy, True)


@policies_bp.post("/v1/policies/<policy>/resume")
@requires("admin")
def resume(policy: str):
    return _pause(policy, False)


def _pause(policy: str, paused: bool):
    eng = engine()
    eng.policy(policy)
    req = schemas.parse(schemas.PauseRequest, body())
    return jsonify(eng.pause.set(policy, paused, req.reason, request.environ.get(KEY)))


@policies_bp.post("/v1/policies/<policy>/reload")
@requires("admin")
def reload_policy(policy: str):
    """Validate the policy's file again and serve it in every worker; an invalid file is a 409
    naming the key and the reason, and the running policy is kept."""
    eng = engine()
    eng.policy(policy)
    raw = request.get_data(cache=True)
    req = schemas.parse(schemas.ReasonRequest, body() if raw.strip() else {})
    source = "http" + (f" (key {request.environ[KEY]})" if request.environ.get(KEY) else "")
    try:
        record = current_app.extensions["tactful_reloads"].reload(policy, eng.clock.now(), source, req.reason)
    except PolicyError as exc:
        raise Conflict(f"the policy file does not validate, so the running policy is kept: {exc}",
                       exc.key or "file", [{"field": exc.key or "file", "reason": exc.reason, "file": exc.path}]) from None
    return jsonify({"policy": policy} | record | {"at": to_rfc3339(record["at"])})


@policies_bp.patch("/v1/policies/<policy>/arms/<path:arm>")
@requires("admin")
def patch_arm(policy: str, arm: str):
    eng = engine()
    eng.policy(policy)
    payload = body()
    req = schemas.parse(schemas.ArmPatchRequest, payload)
    current = eng.arms.state(policy, arm) if arm in eng.policies[policy].arm_index or \
        arm in eng.policies[policy].content_index else None
    if current is None:
        eng.arms.set_state(policy, arm, "active", None, None, None)  # raises the 404 naming the arm
    given = req.model_fields_set

    def keep(name, value):
        if name in given:
            return _ts(value) if name.startswith("valid") else value
        old = current.get(name)
        if name.startswith("valid") and old is not None:
            return parse_time(old)
        return old

    return jsonify(eng.arms.set_state(policy, arm, keep("status", req.status) or "active",
                                     keep("valid_from", req.valid_from), keep("valid_until", req.valid_until),
                                     keep("reason", req.reason)))


@meta.get("/healthz")
@requires(PUBLIC)
def healthz():
    eng = engine()
    eng.store.ping()
    return jsonify({"status": "ok", "policies": sorted(eng.policies),
                    "clock": "request" if eng.clock.accepts_timestamps else "system"})


@meta.get("/readyz")
@requires(PUBLIC)
def readyz():
    """Ready to serve: the store answers, each policy's active model version loads, and a
    learner's heartbeat (its lease, renewed every 2 s by whichever replica leads) is fresh.
    Otherwise 503, naming every reason."""
    eng = engine()
    reasons = []
    try:
        eng.store.ping()
        for name in sorted(eng.policies):
            version, model = eng.models.get(name)
            if model is None:
                reasons.append({"field": f"policies.{name}",
                                "reason": f"its active model version {version} cannot be loaded"})
        lease = eng.store.lease_left(LEASE)
    except StoreUnavailable as exc:
        reasons.append({"field": "store", "reason": str(exc)})
        lease = ()
    if lease is None:
        reasons.append({"field": "learner", "reason": "no learner holds the lease: none runs on any replica "
                                                     "(`tactful serve` starts one; `tactful learn` runs one alone)"})
    elif lease and lease[1] <= 0:
        reasons.append({"field": "learner", "reason": f"the learner's heartbeat stopped {-lease[1]:.0f}s ago "
                                                     f"(last held by {lease[0]})"})
    if reasons:
        p = Problem("not ready: " + "; ".join(f"{r['field']}: {r['reason']}" for r in reasons), errors=reasons)
        p.status, p.title, p.slug = 503, "Not ready", "not-ready"
        return problem_response(p)
    return jsonify({"status": "ready", "policies": sorted(eng.policies), "learner": lease[0]})


@meta.get("/openapi.json")
@requires(PUBLIC)
def openapi():
    eng = engine()
    return jsonify(document.document(eng.policies, operation_scopes(), eng.clock.accepts_timestamps,
                                     current_app.config["MAX_CONTENT_LENGTH"]))


def operation_scopes(compat: bool = False) -> dict[tuple[str, str], str]:
    """What each route needs, by its OpenAPI path and method (`/v1/users/{user_id}`, `get`); with
    `compat`, the routes of the Personalizer compatibility surface, which follow Personalizer's own
    specification and are left out of Tactful's OpenAPI document (service/api/personalizer.py). The
    console's HTML pages (scope CONSOLE, under /ui) are not part of either API: left out of both."""
    out = {}
    for rule in current_app.url_map.iter_rules():
        if rule.rule.startswith("/personalizer/") != compat:
            continue
        scope = getattr(current_app.view_functions[rule.endpoint], "scope", None)
        if scope == CONSOLE:
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            out[(path, method.lower())] = scope
    return out
