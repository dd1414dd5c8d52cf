"""The operator's console: HTML pages under /ui, served by the same app as the API (`tactful serve`).
Server-rendered (Flask templates), charts as inline SVG drawn on the server, no JavaScript. It
reads through the store and the code the API uses and acts through the same code as the API's
routes; docs/console.md says what each page shows and who may see it.

access.py: signing in, the session, CSRF and scopes; pages.py: the pages; actions.py: the forms;
figures.py: what the pages compute; charts.py: the SVG."""
from __future__ import annotations

import re

from flask import Flask

from service.api.console import actions, pages  # noqa: F401 -- their routes join the blueprint
from service.api.console.access import console_bp, csrf_token
from service.times import to_rfc3339

COOKIE = "tactful_console"


def init_app(app: Flask) -> None:
    """Serve the console under /ui. Its session cookie is signed with a key derived from the
    store's secret (every worker and replica agrees), HttpOnly, SameSite=Strict, for /ui only."""
    store = app.extensions["tactful"].store
    app.secret_key = store.console_secret()
    app.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_PATH="/ui")
    app.jinja_env.globals.update(csrf_token=csrf_token, rfc3339=when, duration=duration, pct=pct, num=num)
    app.jinja_env.filters["seconds"] = to_the_second
    app.register_blueprint(console_bp)


def when(seconds: float | None) -> str | None:
    """A time as RFC 3339 text to the second (the API's keeps the microseconds)."""
    return to_rfc3339(float(round(seconds))) if seconds is not None else None


def to_the_second(text: str | None) -> str | None:
    """RFC 3339 text from the API without its fraction of a second."""
    return re.sub(r"\.\d+Z$", "Z", text) if text else text


def duration(seconds: float | None) -> str:
    """`3 h 05 min`, `2 d 4 h`, `42 s`."""
    if seconds is None:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"
