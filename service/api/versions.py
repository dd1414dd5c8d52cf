"""HTTP API v1 for model versions: a thin adapter over service/learning/registry.py.

    GET  /v1/policies/{policy}/models                       versions, the active one, the shadow, recent activations
    POST /v1/policies/{policy}/models/{version}/activate    {"reason"?} -> the activation

Both need the `admin` scope. Errors are problem+json naming the field: an unknown policy (404,
`policy`), a version that is not a number (400, `version`) or does not exist (404, `version`) or
is already active (409, `version`), a reason that is not text (400, `reason`).

Times are RFC 3339 text, as everywhere in the API: a version's `created_at`, an activation's
`at`, a stored evaluation's count beside it.
"""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify, request

from service.api.auth import requires
from service.decision.engine import DecisionEngine
from service.errors import BadRequest
from service.learning.registry import VersionRegistry
from service.times import to_rfc3339

models_bp = Blueprint("models", __name__)


def init_app(app: Flask, engine: DecisionEngine) -> None:
    app.extensions["tactful_versions"] = VersionRegistry(engine.store)
    app.register_blueprint(models_bp)


def _engine() -> DecisionEngine:
    return current_app.extensions["tactful"]


def _registry() -> VersionRegistry:
    return current_app.extensions["tactful_versions"]


def _public(v: dict) -> dict:
    return {"version": v["version"], "parent": v["parent"], "source": v["source"],
            "created_at": to_rfc3339(v["created_at"]),
            "active": v["active"], "n_learned": v["n_learned"], "vw_args": v["vw_args"],
            "evaluations": v["evaluations"], "note": v["note"]}


@models_bp.get("/v1/policies/<policy>/models")
@requires("admin")
def list_models(policy: str):
    p = _engine().policy(policy)
    ops = _registry()
    return jsonify({"policy": p.name, "active_version": ops.store.active_version(p.name),
                    "shadow_version": ops.shadow_version(p.name),
                    "versions": [_public(v) for v in ops.versions(p.name)],
                    "activations": [_activation(a) for a in ops.activations(p.name, 20)]})


def _activation(a: dict) -> dict:
    return a | {"at": to_rfc3339(a["at"])}


@models_bp.post("/v1/policies/<policy>/models/<version>/activate")
@requires("admin")
def activate(policy: str, version: str):
    eng = _engine()
    p = eng.policy(policy)
    if not version.isdigit():
        raise BadRequest(f"{version!r} is not a model version number", "version")
    raw = request.get_data(cache=True)
    data = request.get_json(silent=True, force=True) if raw.strip() else {}
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object such as {\"reason\": \"...\"}", "body")
    reason = data.get("reason", "activated over HTTP")
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason must be a non-empty string", "reason")
    result = _registry().activate(p.name, int(version), reason, eng.clock.now())
    return jsonify(_activation(result))
