"""HTTP API v1 for model versions: a thin adapter over service/learning/registry.py.

    GET  /v1/policies/{policy}/models                       versions, the active one, the shadow, recent activations
    POST /v1/policies/{policy}/models/{version}/activate    {"reason"?} -> the activation

Both need the `admin` scope. Errors are problem+json naming the field: an unknown policy (404,
`policy`), a version that is not a whole number from 1 to 2^63-1 (400, `version`) or does not
exist (404, `version`) or is already active (409, `version`), a reason that is not text or is
blank (400, `reason`).

Times are RFC 3339 text, as everywhere in the API: a version's `created_at`, an activation's
`at`, a stored evaluation's count beside it.
"""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify

from service.api import schemas
from service.api.auth import requires
from service.api.routes import body
from service.decision.engine import DecisionEngine
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
    number = schemas.whole_number(version, "version", schemas.VERSION)
    payload = body(optional=True)
    req = schemas.parse(schemas.ActivateRequest, {} if payload is None else payload)
    return jsonify(_activation(_registry().activate(p.name, number, req.reason, eng.clock.now())))
