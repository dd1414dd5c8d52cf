"""HTTP API v1 for a policy's live content catalog: a thin adapter over service/policy/catalog.py
and service/policy/reload.py.

    GET    /v1/policies/{policy}/contents               the contents offered and retired, with their origin
    PUT    /v1/policies/{policy}/contents/{content_id}  {"topic", "tags"?, "features"?, "valid_from"?,
                                                        "valid_until"?, "reason"?} -> the content, added or changed
    DELETE /v1/policies/{policy}/contents/{content_id}  {"reason"?} -> retired: its arms leave every decision

Reading needs any key, changing needs `admin`. Every change is stored with who (the API key's
name), when and why, and every worker serves it within about a second. Errors are problem+json
naming the field: an unknown policy (404, `policy`) or content (404, `content_id`), a field that
is not valid (400), a change that would leave no policy (409: the fallback arm's content retired).
"""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify, request

from service.api import schemas
from service.api.auth import ANY, requires
from service.api.requestlog import KEY
from service.api.routes import body
from service.decision.engine import DecisionEngine
from service.errors import BadRequest, Conflict, NotFound
from service.policy import PolicyError
from service.policy.catalog import catalog_view
from service.policy.reload import PolicyReloads
from service.times import to_rfc3339

catalog_bp = Blueprint("catalog", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(catalog_bp)


def _engine() -> DecisionEngine:
    return current_app.extensions["tactful"]


def _reloads() -> PolicyReloads:
    return current_app.extensions["tactful_reloads"]


def _source() -> str:
    return "http" + (f" (key {request.environ[KEY]})" if request.environ.get(KEY) else "")


def _optional_body() -> dict:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        return current_app.json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", "body") from None


@catalog_bp.get("/v1/policies/<policy>/contents")
@requires(ANY)
def list_contents(policy: str):
    eng = _engine()
    p = eng.policy(policy)
    return jsonify(catalog_view(p, eng.store.catalog_changes(p.name), to_rfc3339))


@catalog_bp.put("/v1/policies/<policy>/contents/<content_id>")
@requires("admin")
def put_content(policy: str, content_id: str):
    eng = _engine()
    existed = content_id in eng.policy(policy).content_index
    req = schemas.parse(schemas.ContentRequest, body())
    fields = req.model_dump(mode="json", exclude={"reason"}, exclude_none=True)
    try:
        served = _reloads().change_content(policy, content_id, fields, eng.clock.now(), _source(), req.reason)
    except PolicyError as exc:
        field = "content_id" if exc.key == "id" else exc.key
        raise BadRequest(f"{field}: {exc.reason}", field, [{"field": field, "reason": exc.reason}]) from None
    entry = next(c for c in catalog_view(served, eng.store.catalog_changes(policy), to_rfc3339)["contents"]
                 if c["id"] == content_id)
    return jsonify(entry | {"created": not existed, "arm_count": len(served.arms)}), 200 if existed else 201


@catalog_bp.delete("/v1/policies/<policy>/contents/<content_id>")
@requires("admin")
def delete_content(policy: str, content_id: str):
    eng = _engine()
    if content_id not in eng.policy(policy).content_index:
        raise NotFound(f"policy {policy!r} offers no content {content_id!r}", "content_id")
    req = schemas.parse(schemas.ReasonRequest, _optional_body())
    try:
        served = _reloads().change_content(policy, content_id, None, eng.clock.now(), _source(), req.reason)
    except PolicyError as exc:
        reason = exc.reason
        if exc.key == "learner.fallback_arm":
            reason = f"it holds the policy's fallback arm ({reason}): change learner.fallback_arm first"
        raise Conflict(f"content {content_id!r} cannot be retired: {reason}", "content_id") from None
    return jsonify({"policy": policy, "content_id": content_id, "retired": True, "arm_count": len(served.arms)})
