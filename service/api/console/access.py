"""Who is looking at the console, and what they may do: sign in with an API key, a signed session
cookie that names the key by its hash (never the key), checked again on every page (a revoked key
is signed out within a second or two), a CSRF token on every form, sign out.

Scopes (service/api/auth.py): the overview, a policy's page and the reports need `admin` or
`people:read`; a person's page needs `people:read`; switching arms and contents, activating and
rolling back model versions need `admin`; erasing a person needs `people:write`. A store that has
never held a key leaves the console open, as it leaves the API open, and every page says so."""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for

from service.api.auth import CONSOLE, SCOPES, KeyRing, requires, token_hash
from service.api.requestlog import KEY

HERE = Path(__file__).parent
console_bp = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates", static_folder=None)

READ = ("admin", "people:read")  # the overview, a policy's page, the reports: either scope


@dataclass(frozen=True)
class Viewer:
    name: str | None        # the key's name; None while the console is open (no key exists)
    scopes: frozenset[str]

    @property
    def open(self) -> bool:
        return self.name is None

    def may(self, *scopes: str) -> bool:
        return any(s in self.scopes for s in scopes)


def ring() -> KeyRing:
    return current_app.extensions["tactful_keys"]


def viewer() -> Viewer | None:
    """Who this request is: everyone while no key exists, else the key the session names if it
    is still valid (the session is cleared when it is not), else nobody."""
    keys = ring()
    if not keys.enforced:
        return Viewer(None, frozenset(SCOPES))
    named = session.get("key")
    key = keys.valid_key(named) if isinstance(named, str) else None
    if key is None:
        session.pop("key", None)
        return None
    return Viewer(key.name, key.scopes)


def csrf_token() -> str:
    """This session's CSRF token, made on first use; every form sends it back."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    sent = request.form.get("csrf", "")
    if not hmac.compare_digest(sent.encode(), csrf_token().encode()):
        abort(400, "the form's CSRF token is missing or stale: reload the page and submit it again")


def page(*scopes: str, action: bool = False) -> Callable:
    """A console view that needs one of `scopes` (any signed-in key when none); an `action` (a
    POST form) also needs the session's CSRF token. Not signed in: to the sign-in page."""
    def wrap(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            if action:
                check_csrf()
            g.viewer = viewer()
            if g.viewer is None:
                return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
            if g.viewer.name is not None:  # the request log names the key, as for an API request
                request.environ[KEY] = g.viewer.name
            if scopes and not g.viewer.may(*scopes):
                abort(403, f"this needs an API key with the scope {' or '.join(repr(s) for s in scopes)}; the key "
                           f"{g.viewer.name!r} has {', '.join(sorted(g.viewer.scopes)) or 'none'}")
            return view(*args, **kwargs)
        return requires(CONSOLE)(guarded)
    return wrap


# no script at all, nothing from elsewhere, never framed (a confirmation box cannot be clicked
# through another site's page); inline style attributes only (the arms' share bars)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
}


@console_bp.after_request
def _headers(response):
    """Every console answer: the security headers; pages (people, keys' names) never cached."""
    response.headers.update(SECURITY_HEADERS)
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def _local(target: str | None) -> str:
    """Where to go after signing in: a console path of this site, nothing else."""
    parts = urlsplit(target or "")
    if target and not parts.scheme and not parts.netloc and parts.path.startswith("/ui") and "\\" not in target:
        return target
    return url_for("console.overview")


@console_bp.route("/sign-in", methods=["GET", "POST"])
@requires(CONSOLE)
def sign_in():
    g.viewer = viewer()
    if request.method == "GET":
        if g.viewer is not None:
            return redirect(_local(request.args.get("next")))
        return render_template("sign_in.html", next=request.args.get("next", "")), 200
    check_csrf()
    token = request.form.get("key", "").strip()
    key = ring().valid_key(token_hash(token)) if token else None
    if key is None:
        return render_template("sign_in.html", next=request.form.get("next", ""),
                               error="This API key is not known or was revoked."), 401
    if not any(s in key.scopes for s in READ):
        return render_template("sign_in.html", next=request.form.get("next", ""),
                               error=f"The key {key.name!r} has neither the scope 'admin' nor 'people:read': "
                                     "the console needs one of them."), 403
    session.clear()  # a fresh session: a new CSRF token, nothing kept from before signing in
    session["key"] = token_hash(token)
    csrf_token()
    return redirect(_local(request.form.get("next")))


@console_bp.post("/sign-out")
@page(action=True)
def sign_out():
    session.clear()
    return redirect(url_for("console.sign_in"))
