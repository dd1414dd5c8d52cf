"""HTTP API v1 for the circuit breaker (service/learning/breaker.py):

    GET  /v1/policies/{policy}/breaker          its configuration, every breaker that ever tripped,
                                                the watched rates now, the latest changes
    POST /v1/policies/{policy}/breaker/reset    {"reason", "target"?} -> what was reset
    GET  /v1/policies/{policy}/contents/report  the latest contents report the learner (or
                                                `tactful report contents --save`) stored

Both need the `admin` scope. (Pause and resume are in routes.py, beside the policy.)"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from service.api import schemas
from service.api.auth import requires
from service.api.requestlog import KEY
from service.api.routes import body
from service.decision.engine import DecisionEngine
from service.errors import BadRequest, Conflict, NotFound
from service.learning.breaker import judge, reset, tally, targets
from service.store.safety import REPORT
from service.times import to_rfc3339

safety_bp = Blueprint("safety", __name__)


def _engine() -> DecisionEngine:
    return current_app.extensions["tactful"]


def _breaker(row: dict) -> dict:
    return {"status": row["status"], "since": to_rfc3339(row["since"]), "probe_from": to_rfc3339(row["probe_from"]),
            "detail": row["detail"]}


@safety_bp.get("/v1/policies/<policy>/breaker")
@requires("admin")
def breaker(policy: str):
    eng = _engine()
    p = eng.policy(policy)
    s = p.spec.safety
    rows = eng.store.breakers(p.name)
    watched = []
    if s is not None:
        now = eng.clock.now()
        per_arm = eng.store.breaker_counts(p.name, now - s.window)
        for what in targets(p, s.levels):
            counts = tally(p, what, per_arm)
            rates = {e["rate"]: {k: e[k] for k in ("events", "point", "lower", "upper", "threshold")}
                     for e in judge(counts, s)}
            watched.append({"target": what, "sends": counts[0], **rates,
                            "breaker": rows[what]["status"] if what in rows else "closed"})
    return jsonify({"policy": p.name, "configured": s.model_dump() if s is not None else None,
                    "breakers": {what: _breaker(row) for what, row in sorted(rows.items())},
                    "watched": watched,
                    "events": [e | {"at": to_rfc3339(e["at"])} for e in eng.store.safety_events(p.name, 20)]})


@safety_bp.post("/v1/policies/<policy>/breaker/reset")
@requires("admin")
def reset_breaker(policy: str):
    eng = _engine()
    p = eng.policy(policy)
    req = schemas.parse(schemas.BreakerResetRequest, body())
    known = targets(p, ("content", "channel", "policy"))
    if req.target is not None and req.target not in known:
        raise BadRequest(f"{req.target!r} is not watched by a breaker of policy {p.name!r} (one of: "
                         f"{', '.join(known)})", "target")
    done = reset(eng.store, p, req.target, req.reason, request.environ.get(KEY), eng.clock.now())
    if req.target is not None and not done:
        raise Conflict(f"the circuit breaker of {req.target} is not open", "target")
    return jsonify({"policy": p.name, "reset": done})


@safety_bp.get("/v1/policies/<policy>/contents/report")
@requires("admin")
def contents_report(policy: str):
    eng = _engine()
    p = eng.policy(policy)
    stored = eng.store.latest_safety_event(p.name, REPORT)
    if stored is None:
        raise NotFound(f"no contents report of policy {p.name!r} yet: the learner writes one every "
                       f"`review_every` of its [safety] table, or run `tactful report contents --policy {p.name} "
                       f"--save`", "policy")
    return jsonify(stored["evidence"] | {"reported_at": to_rfc3339(stored["at"])})
