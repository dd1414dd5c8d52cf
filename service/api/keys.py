"""HTTP API v1 for API keys, with the `admin` scope: what `tactful keys` does, over HTTP.

    GET    /v1/keys           the keys not revoked: name, scopes, created, last used (never a key)
    POST   /v1/keys           {"name", "scopes"} -> 201 with the key, shown this once
    DELETE /v1/keys/{name}    revoke it: refused within a second or two by every worker

A name an active key has is a 409 naming `name`; revoking a name no active key has, a 404.
"""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify

from service.api import schemas
from service.api.auth import KeyRing, create_key, requires
from service.api.routes import body
from service.errors import Conflict, NotFound
from service.store import KeyNameTaken
from service.times import to_rfc3339

keys_bp = Blueprint("keys", __name__)


def init_app(app: Flask, ring: KeyRing) -> None:
    app.extensions["tactful_keys"] = ring
    app.register_blueprint(keys_bp)


def _ring() -> KeyRing:
    return current_app.extensions["tactful_keys"]


def _public(k: dict) -> dict:
    return {"name": k["name"], "scopes": k["scopes"], "created_at": to_rfc3339(k["created_at"]),
            "last_used_at": to_rfc3339(k["last_used_at"])}


@keys_bp.get("/v1/keys")
@requires("admin")
def list_keys():
    return jsonify({"keys": [_public(k) for k in _ring().store.api_keys()]})


@keys_bp.post("/v1/keys")
@requires("admin")
def add_key():
    req = schemas.parse(schemas.KeyRequest, body())
    ring = _ring()
    try:
        token = create_key(ring.store, req.name, req.scopes, ring.now())
    except KeyNameTaken as exc:
        raise Conflict(str(exc), "name") from None
    ring.refresh()  # this worker at once; the others within a second or two
    key = next(k for k in ring.store.api_keys() if k["name"] == req.name)
    return jsonify(_public(key) | {"key": token}), 201


@keys_bp.delete("/v1/keys/<name>")
@requires("admin")
def revoke_key(name: str):
    ring = _ring()
    at = ring.now()
    if not ring.store.revoke_api_key(name, at):
        raise NotFound(f"no API key named {name!r} (revoked ones cannot be revoked again)", "name")
    ring.refresh()
    return jsonify({"name": name, "revoked_at": to_rfc3339(at)})
