"""Azure Personalizer's REST API on Tactful (docs/personalizer.md): a compatibility surface under
`/personalizer`, in both forms the official clients send,

    /personalizer/rank?api-version=2022-09-01-preview    (azure-ai-personalizer 1.0.0b1)
    /personalizer/v1.0/rank                               (azure-cognitiveservices-personalizer 0.1.1)

served by the one policy of `kind = "personalizer"` (the first by name when there are several).
The key travels in `Ocp-Apim-Subscription-Key` (a Tactful API key; `Authorization: Bearer` works
too): Rank, Reward and Activate need the `decide` scope, everything else `admin`. Errors take
Personalizer's shape, `{"error": {"code", "message", "target"}}`, with its status codes.

These routes follow Personalizer's published specification, not Tactful's: they are left out of
Tactful's OpenAPI document (service/api/openapi.py), and tests/test_auth_api.py checks their
keys and scopes apart from the table of Tactful's own routes.
"""
from __future__ import annotations

import json

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from service.api.auth import requires
from service.api.routes import body
from service.decision.engine import DecisionEngine
from service.decision.personalizer import Action, RankInput, RankLoop, Slot
from service.errors import BadRequest, NotFound, Problem
from service.learning.personalizer import LoopAdmin
from service.policy import Policy

PREFIX = "/personalizer"
HEADER = "Ocp-Apim-Subscription-Key"
MODEL_MAX_BYTES = 256 * 1024 * 1024  # a model file imported with PUT /model (other bodies: MAX_CONTENT_LENGTH)
personalizer_bp = Blueprint("personalizer", __name__, url_prefix=PREFIX)

# Personalizer's error codes, by status
CODES = {400: "BadArgument", 401: "Unauthorized", 403: "PermissionDenied", 404: "ResourceNotFound",
         405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
         501: "NotSupported", 503: "ServiceUnavailable"}


class NotSupported(Problem):
    status, title, slug = 501, "Not supported", "not-supported"


def route(rule: str, **options):
    """A view under both URL forms: `/personalizer{rule}` and `/personalizer/v1.0{rule}`."""
    def register(view):
        personalizer_bp.add_url_rule(rule, view.__name__, view, **options)
        personalizer_bp.add_url_rule("/v1.0" + rule, view.__name__ + "_v1", view, **options)
        return view
    return register


def init_app(app: Flask, engine: DecisionEngine) -> None:
    app.register_blueprint(personalizer_bp)
    app.extensions["tactful_personalizer"] = RankLoop(engine.store, lambda: _policy(engine), engine.clock,
                                                      engine.models, engine.new_id, engine.observers)
    app.after_request(_personalizer_errors)
    app.wsgi_app = MergeSlashes(app.wsgi_app)


class MergeSlashes:
    """`https://host//personalizer/...`: an endpoint given with a trailing slash, which the clients
    join with their own; served as `/personalizer/...`."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("//"):
            stripped = "/" + path.lstrip("/")
            if stripped.startswith(PREFIX + "/"):
                environ["PATH_INFO"] = stripped
        return self.app(environ, start_response)


def applies(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def subscription_key() -> str | None:
    """The key of a Personalizer request, as an Authorization header value."""
    key = request.headers.get(HEADER)
    return f"Bearer {key}" if key and applies(request.path) else None


def _personalizer_errors(resp: Response) -> Response:
    """Every problem+json answer on a /personalizer path, in Personalizer's error shape."""
    if not applies(request.path) or resp.mimetype != "application/problem+json":
        return resp
    problem = json.loads(resp.get_data())
    error = {"code": CODES.get(resp.status_code, "InternalError" if resp.status_code >= 500 else "BadRequest"),
             "message": problem.get("detail") or problem.get("title")}
    if problem.get("field"):
        error["target"] = problem["field"]
    resp.set_data(json.dumps({"error": error}))
    resp.mimetype = "application/json"
    return resp


def _policy(engine: DecisionEngine) -> Policy:
    loops = sorted(name for name, p in engine.policies.items() if p.spec.kind == "personalizer")
    if not loops:
        raise NotFound("no policy of kind \"personalizer\" is served here: add one to the policy directory "
                       "(examples/personalizer/personalizer.toml, docs/personalizer.md)", "policy")
    return engine.policies[loops[0]]


def _loop() -> RankLoop:
    return current_app.extensions["tactful_personalizer"]


def _admin() -> LoopAdmin:
    engine = current_app.extensions["tactful"]
    return LoopAdmin(engine.store, _policy(engine), engine.clock)


def _no_content() -> Response:
    return Response(status=204)


# parsing ------------------------------------------------------------------------------------


def _object(value: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{field}: must be a JSON object", field)
    return value


def _features(value: object, field: str) -> list[dict]:
    """A feature list: a list of JSON objects (a single object is taken as a list of one)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadRequest(f"{field}: must be a list of JSON objects", field)
    return value


def _ids(value: object, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{field}: must be a list of action ids (text)", field)
    return value


def _id(value: object, field: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 256 or "\x00" in value:
        raise BadRequest(f"{field}: must be text of 1 to 256 characters", field)
    return value


def rank_input(payload: object, multislot: bool = False) -> RankInput:
    data = _object(payload, "body")
    actions_raw = data.get("actions")
    if not isinstance(actions_raw, list) or not actions_raw:
        raise BadRequest("actions: must be a non-empty list of {id, features}", "actions")
    actions, seen = [], set()
    for i, a in enumerate(actions_raw):
        a = _object(a, f"actions[{i}]")
        aid = _id(a.get("id"), f"actions[{i}].id")
        if aid in seen:
            raise BadRequest(f"actions[{i}].id: {aid!r} is listed twice", f"actions[{i}].id")
        seen.add(aid)
        actions.append(Action(aid, _features(a.get("features"), f"actions[{i}].features")))
    deferred = data.get("deferActivation", False)
    if not isinstance(deferred, bool):
        raise BadRequest("deferActivation: must be true or false", "deferActivation")
    req = RankInput(context=_features(data.get("contextFeatures"), "contextFeatures"), actions=actions,
                    excluded=_ids(data.get("excludedActions"), "excludedActions"),
                    event_id=_id(data.get("eventId"), "eventId", required=False), deferred=deferred)
    if multislot:
        slots_raw = data.get("slots")
        if not isinstance(slots_raw, list) or not slots_raw:
            raise BadRequest("slots: must be a non-empty list of {id, baselineAction, features}", "slots")
        req.slots = []
        for i, s in enumerate(slots_raw):
            s = _object(s, f"slots[{i}]")
            req.slots.append(Slot(_id(s.get("id"), f"slots[{i}].id"),
                                  _id(s.get("baselineAction"), f"slots[{i}].baselineAction", required=False),
                                  _features(s.get("features") or s.get("positionFeatures"), f"slots[{i}].features"),
                                  _ids(s.get("excludedActions"), f"slots[{i}].excludedActions")))
        if len({s.id for s in req.slots}) != len(req.slots):
            raise BadRequest("slots: a slot id is listed twice", "slots")
    return req


def reward_value(payload: object, field: str = "value") -> float:
    value = _object(payload, "body").get("value") if field == "value" else payload
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise BadRequest(f"{field}: a reward is a number in [-1, 1]", field)
    return float(value)


# rank, reward, activate ---------------------------------------------------------------------


@route("/rank", methods=["POST"])
@requires("decide")
def rank():
    return jsonify(_loop().rank(rank_input(body()))), 201


@route("/events/<event_id>/reward", methods=["POST"])
@requires("decide")
def reward(event_id: str):
    _loop().reward(event_id, reward_value(body()))
    return _no_content()


@route("/events/<event_id>/activate", methods=["POST"])
@requires("decide")
def activate(event_id: str):
    _loop().activate(event_id)
    return _no_content()


@route("/multislot/rank", methods=["POST"])
@requires("decide")
def rank_multislot():
    return jsonify(_loop().rank_slots(rank_input(body(), multislot=True))), 201


@route("/multislot/events/<event_id>/reward", methods=["POST"])
@requires("decide")
def reward_multislot(event_id: str):
    rewards = _object(body(), "body").get("reward")
    if not isinstance(rewards, list) or not rewards:
        raise BadRequest("reward: must be a non-empty list of {slotId, value}", "reward")
    pairs = []
    for i, r in enumerate(rewards):
        r = _object(r, f"reward[{i}]")
        pairs.append((_id(r.get("slotId"), f"reward[{i}].slotId"), reward_value(r.get("value"), f"reward[{i}].value")))
    _loop().reward_slots(event_id, pairs)
    return _no_content()


@route("/multislot/events/<event_id>/activate", methods=["POST"])
@requires("decide")
def activate_multislot(event_id: str):
    _loop().activate_slots(event_id)
    return _no_content()


# configuration, model, logs, evaluations ----------------------------------------------------


@route("/configurations/service", methods=["GET"])
@requires("admin")
def get_service():
    return jsonify(_admin().service_configuration())


@route("/configurations/service", methods=["PUT"])
@requires("admin")
def put_service():
    return jsonify(_admin().update_service(body()))


@route("/configurations/policy", methods=["GET"])
@requires("admin")
def get_policy():
    return jsonify(_admin().learning_policy())


@route("/configurations/policy", methods=["PUT"])
@requires("admin")
def put_policy():
    return jsonify(_admin().update_policy(body()))


@route("/configurations/policy", methods=["DELETE"])
@requires("admin")
def reset_policy():
    return jsonify(_admin().reset_policy())


@route("/model", methods=["GET"])
@requires("admin")
def get_model():
    return Response(_admin().export_model(), mimetype="application/octet-stream")


@route("/model", methods=["PUT"])
@requires("admin")
def put_model():
    request.max_content_length = MODEL_MAX_BYTES
    _admin().import_model(request.get_data())
    return _no_content()


@route("/model", methods=["DELETE"])
@requires("admin")
def reset_model():
    _admin().reset_model()
    return _no_content()


@route("/model/properties", methods=["GET"])
@requires("admin")
def model_properties():
    return jsonify(_admin().model_properties())


@route("/logs/properties", methods=["GET"])
@requires("admin")
def log_properties():
    return jsonify(_admin().log_properties())


@route("/evaluations", methods=["GET"])
@requires("admin")
def list_evaluations():
    return jsonify({"value": _admin().evaluations()})


@route("/evaluations", methods=["POST"])
@requires("admin")
def post_evaluation():
    doc = _admin().create_evaluation(None, body())
    return jsonify(doc), 201, {"Location": f"{PREFIX}/evaluations/{doc['id']}"}


@route("/evaluations/<evaluation_id>", methods=["PUT"])
@requires("admin")
def create_evaluation(evaluation_id: str):
    return jsonify(_admin().create_evaluation(_id(evaluation_id, "evaluationId"), body()))


@route("/evaluations/<evaluation_id>", methods=["GET"])
@requires("admin")
def get_evaluation(evaluation_id: str):
    return jsonify(_admin().evaluation(evaluation_id))


@route("/evaluations/<evaluation_id>", methods=["DELETE"])
@requires("admin")
def delete_evaluation(evaluation_id: str):
    _admin().delete_evaluation(evaluation_id)
    return _no_content()


@route("/logs", methods=["DELETE"])
@route("/configurations/applyFromEvaluation", methods=["POST"])
@route("/featureImportances", methods=["GET"])
@route("/featureImportances/<feature_importance_id>", methods=["GET", "PUT", "DELETE"])
@requires("admin")
def not_supported(feature_importance_id: str | None = None):
    raise NotSupported(f"{request.method} {request.path.split('?')[0]} is not supported by Tactful's Personalizer "
                       "surface (docs/personalizer.md says why and what to use instead)", "path")
