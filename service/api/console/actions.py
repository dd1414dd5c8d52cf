"""The console's actions (POST forms, each with the session's CSRF token and a reason): switch an arm
or a content (active, retired, out of stock), activate a model version or roll back, erase a
person. Each goes through the same code as its API route (service/decision/arms.py,
service/learning/registry.py, service/decision/people.py), records the signed-in key's name with
the reason, and comes back to its page with what was done."""
from __future__ import annotations

from flask import abort, current_app, flash, g, redirect, request, url_for

from service.api.console.access import console_bp, page
from service.api.console.pages import USER_ID_MAX, engine
from service.learning.registry import VersionRegistry
from service.times import parse_time

REASON_MAX = 256  # as the API's reasons (service/api/schemas.py)
STATUSES = ("active", "retired", "out_of_stock")


def _reason() -> str:
    """The form's reason, with who gave it: `console (key ops): <reason>`."""
    reason = request.form.get("reason", "").strip()
    if not reason:
        abort(400, "reason: say why (it is recorded with the change)")
    if len(reason) > REASON_MAX:
        abort(400, f"reason: at most {REASON_MAX} characters")
    who = "console" + (f" (key {g.viewer.name})" if g.viewer.name else "")
    return f"{who}: {reason}"


def _confirmed(what: str) -> None:
    if request.form.get("confirm") != "yes":
        abort(400, f"confirm: tick the box to confirm {what}")


def _registry() -> VersionRegistry:
    return current_app.extensions["tactful_versions"]


@console_bp.post("/policies/<policy>/switch")
@page("admin", action=True)
def switch(policy: str):
    eng = engine()
    p = eng.policy(policy)
    target, status = request.form.get("target", ""), request.form.get("status", "")
    if status not in STATUSES:
        abort(400, f"status: one of {', '.join(STATUSES)}, not {status!r}")
    reason = _reason()
    current = eng.arms.state(p.name, target) if target in p.arm_index or target in p.content_index else {}
    keep = {k: current.get(k) for k in ("valid_from", "valid_until")}
    state = eng.arms.set_state(p.name, target, status, *(_seconds(keep[k]) for k in ("valid_from", "valid_until")),
                               reason)
    flash(f"{state['kind'].capitalize()} {target} is now {status} ({len(state['arms'])} arm"
          f"{'s' if len(state['arms']) != 1 else ''}).")
    return redirect(url_for("console.policy", policy=p.name) + ("#contents" if state["kind"] == "content" else "#arms"))


def _seconds(rfc3339: str | None) -> float | None:
    return parse_time(rfc3339) if rfc3339 else None


@console_bp.post("/policies/<policy>/versions/<int:version>/activate")
@page("admin", action=True)
def activate(policy: str, version: int):
    eng = engine()
    p = eng.policy(policy)
    _confirmed(f"activating version {version}")
    done = _registry().activate(p.name, version, _reason(), eng.clock.now())
    flash(f"Version {done['version']} is active (was {done['previous']}): every worker serves it within a second "
          f"or two.")
    return redirect(url_for("console.policy", policy=p.name) + "#versions")


@console_bp.post("/policies/<policy>/rollback")
@page("admin", action=True)
def rollback(policy: str):
    eng = engine()
    p = eng.policy(policy)
    _confirmed("the rollback")
    done = _registry().rollback(p.name, eng.clock.now(), reason=_reason())
    flash(f"Rolled back: version {done['version']} is active (was {done['previous']}).")
    return redirect(url_for("console.policy", policy=p.name) + "#versions")


@console_bp.post("/people/erase")
@page("people:write", action=True)
def erase():
    user_id = request.form.get("user_id", "").strip()
    if not user_id or len(user_id) > USER_ID_MAX or "\x00" in user_id:
        abort(400, f"user_id: 1 to {USER_ID_MAX} characters, without the NUL character")
    _confirmed(f"erasing {user_id!r}")
    done = engine().people.erase(user_id)
    flash(f"Erased {user_id}: " + ", ".join(f"{n} {table}" for table, n in done["deleted"].items()) + ".")
    return redirect(url_for("console.person", user_id=user_id))
