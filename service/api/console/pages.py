"""The console's pages (GET): the overview, a policy, a person, the written reports; its stylesheet;
and its own HTML answers to errors (a 404 under /ui is a page, not problem+json)."""
from __future__ import annotations

import os
from pathlib import Path

from flask import abort, current_app, g, redirect, render_template, request, send_file, url_for
from markdown_it import MarkdownIt
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from service.api.auth import CONSOLE, requires
from service.api.console import charts, figures
from service.api.console.access import HERE, READ, console_bp, page, viewer
from service.decision.engine import DecisionEngine
from service.errors import Problem
from service.learning.registry import VersionRegistry
from service.times import to_rfc3339

REPORT_FILES = (".md", ".png")
REPORTS_LISTED = 500
USER_ID_MAX = 256  # as the API's (service/api/schemas.py)
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in a report is shown as text


def engine() -> DecisionEngine:
    return current_app.extensions["tactful"]


def _span() -> str:
    span = request.args.get("window", "24h")
    if span not in figures.SPANS:
        abort(400, f"window: {span!r} is not one of {', '.join(figures.SPANS)}")
    return span


def _labels(w: figures.Window) -> list[str]:
    """Each bucket's start: its time of day (UTC) for hours, with its date for longer ones."""
    times = [to_rfc3339(w.start + i * w.width) for i in range(w.count)]
    return [t[11:16] if w.count * w.width <= 86400 else f"{t[5:10]} {t[11:13]}h" for t in times]


@console_bp.get("/")
@page(*READ)
def overview():
    eng = engine()
    span = _span()
    cards = []
    for p in eng.policies.values():
        w = figures.window(eng, p.name, span)
        o = figures.overview(eng, p, w)
        labels = _labels(w)
        b = o["buckets"]
        o["window"] = w
        o["volume_chart"] = charts.stacked_bars(f"{p.name}: sends and holds per {w.width / 3600:g} h", labels,
                                                [("sends", [x["sends"] for x in b]),
                                                 ("holds", [x["holds"] for x in b])])
        o["reward_chart"] = charts.lines(f"{p.name}: mean shaped reward of final decisions", labels,
                                         [("policy", o["reward_series"]), ("holdout group", o["holdout_series"])])
        o["removed_chart"] = charts.hbars(f"{p.name}: removed arms by reason",
                                          list(o["removed"]["reasons"].items()))
        cards.append(o)
    return render_template("overview.html", cards=cards, span=span, spans=list(figures.SPANS))


@console_bp.get("/policies/<policy>")
@page(*READ)
def policy(policy: str):
    eng = engine()
    p = eng.policy(policy)  # NotFound naming the policy: the error page
    span = _span()
    w = figures.window(eng, p.name, span)
    registry: VersionRegistry = current_app.extensions["tactful_versions"]
    arms = figures.arms(eng, p, w)
    open_breakers = {t: b for t, b in eng.store.breakers(p.name).items() if b["status"] == "open"}
    return render_template("policy.html", p=p, w=w, span=span, spans=list(figures.SPANS), arms=arms,
                           contents=figures.contents(eng, p), models=figures.versions(registry, eng, p, w),
                           statuses=["active", "retired", "out_of_stock"], paused=eng.store.pause_state(p.name),
                           open_breakers=open_breakers)


@console_bp.get("/people")
@page("people:read")
def person():
    user_id = request.args.get("user_id", "").strip()
    if not user_id:
        return render_template("person.html", user_id="", person=None)
    if len(user_id) > USER_ID_MAX or "\x00" in user_id:
        abort(400, f"user_id: 1 to {USER_ID_MAX} characters, without the NUL character")
    eng = engine()
    return render_template("person.html", user_id=user_id, person=eng.people.person(user_id),
                           decisions=eng.people.person_decisions(user_id, 20)["decisions"])


def reports_root() -> Path:
    return Path(current_app.config["REPORTS"]).resolve()


def report_files(root: Path) -> list[str]:
    """The Markdown and PNG files under `root` (relative paths, sorted; at most REPORTS_LISTED)."""
    found: list[str] = []
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(REPORT_FILES):
                found.append(str((Path(folder) / name).relative_to(root)))
                if len(found) >= REPORTS_LISTED:
                    return found
    return found


@console_bp.get("/reports")
@page(*READ)
def reports():
    root = reports_root()
    return render_template("reports.html", root=current_app.config["REPORTS"], exists=root.is_dir(),
                           files=report_files(root), limit=REPORTS_LISTED)


@console_bp.get("/reports/<path:name>")
@page(*READ)
def report(name: str):
    """One report: Markdown rendered (raw HTML escaped), a PNG as it is. Nothing outside the
    reports directory, whatever the path says (.., symbolic links): 404."""
    root = reports_root()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path.suffix not in REPORT_FILES or not path.is_file():
        abort(404, f"no report {name!r} under the reports directory")
    if path.suffix == ".png":
        return send_file(path, mimetype="image/png", max_age=0)
    html = Markup(_markdown.render(path.read_text(encoding="utf-8", errors="replace")))
    return render_template("report.html", name=name, html=html)


@console_bp.get("")
@requires(CONSOLE)
def root():
    """/ui without its slash: to the overview (rather than Flask's redirect, which would answer
    before any view, so for the API's rules: a key first)."""
    return redirect(url_for("console.overview"))


@console_bp.get("/static/<name>")
@requires(CONSOLE)
def static(name: str):
    if name not in ("console.css",):
        abort(404, f"no console file {name!r}")
    return send_file(HERE / "static" / name, mimetype="text/css", max_age=300)


@console_bp.get("/<path:rest>")
@requires(CONSOLE)
def nowhere(rest: str):
    abort(404, f"no console page /ui/{rest}")


def _error_page(status: int, title: str, detail: str):
    if not hasattr(g, "viewer"):
        g.viewer = viewer()
    return render_template("error.html", status=status, title=title, detail=detail), status


@console_bp.errorhandler(Problem)
def _problem(p: Problem):
    return _error_page(p.status, p.title, p.detail)


@console_bp.errorhandler(HTTPException)
def _http(e: HTTPException):
    return _error_page(e.code or 500, e.name, e.description or e.name)
