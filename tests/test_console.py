"""The operator's console (service/api/console/) through Flask's test client, on a real app and a
real SQLite store: who may see and do what, the session cookie, CSRF, the actions acting through
the same code as the API, the reports directory and its limits, labels and contrast. The same
story in a real browser against a real `tactful serve` is tests/test_console_browser.py."""
from __future__ import annotations

import re
import time
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import POLICIES_DIR, REPO_ROOT
from service.api.app import create_app
from service.api.auth import CONSOLE as CONSOLE_SCOPE, create_key
from service.api.console import charts
from service.api.routes import operation_scopes
from service.learning.registry import VersionRegistry

CONSOLE = REPO_ROOT / "service" / "api" / "console"


@pytest.fixture
def app(tmp_path):
    reports = tmp_path / "reports"
    (reports / "evaluation-lifecycle").mkdir(parents=True)
    (reports / "evaluation-lifecycle" / "report.md").write_text(
        "# Evaluation\n\n<script>alert(1)</script>\n\n| a | b |\n| - | - |\n| 1 | 2 |\n\n![fig](estimates.png)\n"
        "\n[x](javascript:alert(1))\n")
    (reports / "evaluation-lifecycle" / "estimates.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "secret.md").write_text("# not a report")
    (reports / "link.md").symlink_to(tmp_path / "secret.md")
    app = create_app({"DB": str(tmp_path / "c.db"), "POLICIES": str(POLICIES_DIR), "ACCESS_LOG": False,
                      "REPORTS": str(reports)})
    yield app
    app.extensions["tactful"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


def add_key(app, name: str, scopes: list[str]) -> str:
    token = create_key(app.extensions["tactful"].store, name, scopes, time.time())
    app.extensions["tactful_keys"].refresh()
    return token


def csrf(page: bytes) -> str:
    return re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()


def sign_in(client, token: str):
    form = client.get("/ui/sign-in")
    return client.post("/ui/sign-in", data={"key": token, "csrf": csrf(form.data), "next": "/ui/"})


def text(r) -> str:
    return r.get_data(as_text=True)


def test_without_any_key_the_console_is_open_and_says_so(client):
    r = client.get("/ui/")
    assert r.status_code == 200 and 'id="open-banner"' in text(r) and "lifecycle" in text(r)
    assert client.get("/ui/policies/lifecycle").status_code == 200
    assert client.get("/ui/people?user_id=u1").status_code == 200


def test_signing_in_needs_a_valid_key_with_a_read_scope(app, client):
    add_key(app, "ops", ["admin"])
    decide_only = add_key(app, "sender", ["decide"])
    bare = client.get("/ui")  # no API key is asked for on the way to signing in
    assert bare.status_code == 302 and bare.headers["Location"] == "/ui/"
    r = client.get("/ui/policies/lifecycle")
    assert r.status_code == 302 and r.headers["Location"].startswith("/ui/sign-in?next=/ui/policies/lifecycle")
    assert sign_in(client, "tk_" + "x" * 43).status_code == 401
    refused = sign_in(client, decide_only)
    assert refused.status_code == 403 and "neither the scope" in text(refused)
    assert client.get("/ui/").status_code == 302


def test_the_session_cookie_is_httponly_strict_and_holds_no_key(app, client):
    token = add_key(app, "ops", ["admin"])
    r = sign_in(client, token)
    assert r.status_code == 302 and r.headers["Location"] == "/ui/"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("tactful_console=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie and token not in cookie and token[3:20] not in cookie
    page = client.get("/ui/")
    assert page.status_code == 200 and "Signed in with the key <strong>ops</strong>" in text(page)
    assert "open-banner" not in text(page)
    out = client.post("/ui/sign-out", data={"csrf": csrf(page.data)})
    assert out.status_code == 302 and client.get("/ui/").status_code == 302


def test_a_revoked_key_is_signed_out_on_its_next_page(app, client):
    sign_in(client, add_key(app, "ops", ["admin"]))
    assert client.get("/ui/").status_code == 200
    app.extensions["tactful"].store.revoke_api_key("ops", time.time())
    app.extensions["tactful_keys"].refresh()
    assert client.get("/ui/").status_code == 302


def test_scopes_decide_pages_and_actions(app, client):
    sign_in(client, add_key(app, "reader", ["people:read"]))
    assert client.get("/ui/").status_code == 200 and client.get("/ui/people?user_id=u1").status_code == 200
    page = client.get("/ui/policies/lifecycle")
    assert page.status_code == 200 and "Switch</button>" not in text(page) and "id=\"rollback\"" not in text(page)
    r = client.post("/ui/policies/lifecycle/switch", data={"csrf": csrf(page.data), "target": "win_back",
                                                          "status": "retired", "reason": "test"})
    assert r.status_code == 403 and "the scope &#39;admin&#39;" in text(r)
    person = client.get("/ui/people?user_id=u1")
    assert "id=\"erase\"" not in text(person)  # erasing needs people:write


def test_the_person_page_needs_people_read(app, client):
    sign_in(client, add_key(app, "ops", ["admin"]))
    assert client.get("/ui/people?user_id=u1").status_code == 403


def test_every_action_needs_the_sessions_csrf_token(app, client):
    sign_in(client, add_key(app, "ops", ["admin", "people:read", "people:write"]))
    form = {"target": "win_back", "status": "retired", "reason": "test"}
    for token in (None, "forged"):
        r = client.post("/ui/policies/lifecycle/switch", data=form | ({"csrf": token} if token else {}))
        assert r.status_code == 400 and "CSRF" in text(r)
    assert app.extensions["tactful"].store.arm_states("lifecycle") == {}
    page = client.get("/ui/policies/lifecycle")
    r = client.post("/ui/policies/lifecycle/switch", data=form | {"csrf": csrf(page.data)})
    assert r.status_code == 302
    state = app.extensions["tactful"].store.arm_states("lifecycle")["win_back"]
    assert state["status"] == "retired" and state["reason"] == "console (key ops): test"
    arm = "welcome_tips:email:now"
    r = client.post("/ui/policies/lifecycle/switch", data={"csrf": csrf(page.data), "target": arm,
                                                          "status": "retired", "reason": "typo in subject"})
    assert r.status_code == 302
    row = text(client.get("/ui/policies/lifecycle")).split(f'id="arm-{arm}"')[1].split("</tr>")[0]
    assert "retired" in row and "console (key ops): typo in subject" in row  # who switched it, and why


def test_a_content_switched_off_from_the_console_is_never_chosen(app, client):
    page = client.get("/ui/policies/lifecycle")
    r = client.post("/ui/policies/lifecycle/switch", data={"csrf": csrf(page.data), "target": "spring_sale",
                                                          "status": "out_of_stock", "reason": "sold out"})
    assert r.status_code == 302 and r.headers["Location"].endswith("#contents")
    assert "out of stock" in text(client.get("/ui/policies/lifecycle"))
    sends = 0
    for i in range(30):
        client.put(f"/v1/users/u{i}/consent", json={"channels": {"email": True, "push": True}, "source": "t"})
        d = client.post("/v1/policies/lifecycle/decide", json={"user_id": f"u{i}", "context": {"segment": "s"}}).json
        assert d["action"]["content"] != "spring_sale"
        sends += not d["action"]["hold"]
    assert sends > 0


def test_a_paused_policy_says_so_on_its_page(client):
    assert 'id="paused"' not in text(client.get("/ui/policies/lifecycle"))
    client.post("/v1/policies/lifecycle/pause", json={"reason": "bad copy in the spring sale"})
    page = text(client.get("/ui/policies/lifecycle"))
    assert 'id="paused"' in page and "bad copy in the spring sale" in page
    assert "paused</span>" in text(client.get("/ui/"))


def test_an_action_without_a_reason_or_confirmation_is_refused(app, client):
    page = client.get("/ui/policies/lifecycle")
    r = client.post("/ui/policies/lifecycle/switch", data={"csrf": csrf(page.data), "target": "win_back",
                                                          "status": "retired", "reason": " "})
    assert r.status_code == 400 and "reason" in text(r)
    r = client.post("/ui/policies/lifecycle/rollback", data={"csrf": csrf(page.data), "reason": "bad"})
    assert r.status_code == 400 and "confirm" in text(r)
    r = client.post("/ui/policies/lifecycle/switch", data={"csrf": csrf(page.data), "target": "nothing",
                                                          "status": "retired", "reason": "x"})
    assert r.status_code == 404 and "nothing" in text(r) and r.mimetype == "text/html"


def test_rolling_back_from_the_console_serves_the_older_version(app, client):
    eng = app.extensions["tactful"]
    registry = VersionRegistry(eng.store)
    one = eng.store.model("lifecycle", 1)
    two = registry.add_version("lifecycle", one["model"], one["vw_args"], "import", time.time())
    registry.activate("lifecycle", two, "test", time.time(), watch=False)
    page = client.get("/ui/policies/lifecycle")
    assert "Roll back to version 1" in text(page)
    r = client.post("/ui/policies/lifecycle/rollback", data={"csrf": csrf(page.data), "reason": "bad version",
                                                            "confirm": "yes"})
    assert r.status_code == 302
    assert client.get("/v1/policies/lifecycle").json["active_model_version"] == 1
    assert "Rolled back: version 1 is active (was 2)" in text(client.get("/ui/policies/lifecycle"))
    r = client.post("/ui/policies/lifecycle/versions/2/activate",
                    data={"csrf": csrf(page.data), "reason": "again", "confirm": "yes"})
    assert r.status_code == 302 and client.get("/v1/policies/lifecycle").json["active_model_version"] == 2


def test_the_overview_shows_the_numbers_the_api_gives(app, client):
    client.put("/v1/users/u1/consent", json={"channels": {"email": True, "push": True}, "source": "t"})
    for i in range(12):
        client.post("/v1/policies/lifecycle/decide", json={"user_id": f"u{i % 3}", "context": {"segment": "s"}})
    counts = client.get("/v1/policies").json["policies"][0]
    page = text(client.get("/ui/"))

    def figure(name: str) -> str:
        return re.search(rf'data-figure="{name}">([^<]*)<', page).group(1).strip()

    assert figure("total-decisions") == str(counts["counts"]["decisions"]) == "12"
    assert figure("total-holds") == str(counts["counts"]["holds"])
    assert figure("active-version") == str(counts["active_model_version"])
    holds = counts["counts"]["holds"]
    assert figure("hold-share") == f"{100 * holds / 12:.1f}%" and figure("per-hour") == f"{12 / 24:.1f}"


def test_a_person_is_looked_up_and_erased(app, client):
    client.put("/v1/users/ann/consent", json={"channels": {"email": True}, "source": "signup form"})
    client.post("/v1/policies/lifecycle/decide", json={"user_id": "ann", "context": {"segment": "s"}})
    page = client.get("/ui/people?user_id=ann")
    assert "signup form" in text(page) and "granted" in text(page) and "lifecycle" in text(page)
    r = client.post("/ui/people/erase", data={"csrf": csrf(page.data), "user_id": "ann"})
    assert r.status_code == 400  # not confirmed
    r = client.post("/ui/people/erase", data={"csrf": csrf(page.data), "user_id": "ann", "confirm": "yes"})
    assert r.status_code == 302
    assert client.get("/v1/users/ann").json["consent"] == {}
    assert "Erased ann" in text(client.get(r.headers["Location"]))


def test_reports_are_listed_rendered_safely_and_confined_to_their_directory(client):
    listed = text(client.get("/ui/reports"))
    assert "evaluation-lifecycle/report.md" in listed and "evaluation-lifecycle/estimates.png" in listed
    md = text(client.get("/ui/reports/evaluation-lifecycle/report.md"))
    assert "<h1>Evaluation</h1>" in md and "<script>alert" not in md and "&lt;script&gt;" in md
    assert "<table>" in md and 'src="estimates.png"' in md and 'href="javascript:' not in md
    png = client.get("/ui/reports/evaluation-lifecycle/estimates.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    for bad in ["../secret.md", "..%2Fsecret.md", "link.md", "evaluation-lifecycle/../../secret.md", "/etc/passwd",
                "evaluation-lifecycle/nothing.md", "evaluation-lifecycle"]:
        r = client.get(f"/ui/reports/{bad}")
        assert r.status_code == 404 and "not a report" not in text(r), bad


def test_console_pages_are_html_and_stay_out_of_the_openapi_document(client):
    assert client.get("/ui/nowhere").status_code == 404 and client.get("/ui/nowhere").mimetype == "text/html"
    assert client.get("/ui/policies/nothing").status_code == 404
    assert client.get("/ui/?window=1y").status_code == 400
    assert not [p for p in client.get("/openapi.json").json["paths"] if p.startswith("/ui")]
    assert client.get("/v1/policies").headers.get("Set-Cookie") is None  # the API sets no cookie


def test_console_answers_forbid_scripts_framing_and_caching(client):
    page = client.get("/ui/people?user_id=u1")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script" not in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.get_data(as_text=True)
    assert client.get("/ui/nowhere").headers["X-Frame-Options"] == "DENY"


def test_sign_in_goes_back_only_to_a_console_page(app, client):
    token = add_key(app, "ops", ["admin"])
    for target, expected in [("/ui/reports", "/ui/reports"), ("https://evil.example/ui", "/ui/"),
                             ("//evil.example/ui", "/ui/"), ("/v1/keys", "/ui/")]:
        client = app.test_client()
        form = client.get("/ui/sign-in")
        r = client.post("/ui/sign-in", data={"key": token, "csrf": csrf(form.data), "next": target})
        assert r.headers["Location"] == expected, target


class Inputs(HTMLParser):
    """Every form control (not hidden) and every label's `for`."""

    def __init__(self):
        super().__init__()
        self.controls, self.labelled, self._in_label = [], set(), 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self._in_label += 1
            if a.get("for"):
                self.labelled.add(a["for"])
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append((a.get("id"), self._in_label > 0))

    def handle_endtag(self, tag):
        if tag == "label":
            self._in_label -= 1


def test_every_input_has_a_label(app, client):
    client.put("/v1/users/ann/consent", json={"channels": {"email": True}, "source": "t"})
    pages = ["/ui/", "/ui/policies/lifecycle", "/ui/people", "/ui/people?user_id=ann"]
    seen = 0
    for path in pages:
        parser = Inputs()
        parser.feed(text(client.get(path)))
        for control_id, inside in parser.controls:
            assert inside or control_id in parser.labelled, (path, control_id)
            seen += 1
    add_key(app, "ops", ["admin"])
    parser = Inputs()
    parser.feed(text(client.get("/ui/sign-in")))
    assert parser.controls == [("key", False)] and "key" in parser.labelled
    assert seen > 20


def test_colours_have_a_contrast_of_at_least_4_5_to_1():
    css = (CONSOLE / "static" / "console.css").read_text()
    ink = dict(re.findall(r"--([a-z-]+): (#[0-9a-f]{6})", css))
    pairs = [(ink["ink"], ink["bg"]), (ink["muted"], ink["bg"]), (ink["accent"], ink["bg"]),
             (ink["muted"], ink["soft"]),
             (ink["warn-ink"], ink["warn-bg"]), (ink["ok-ink"], ink["ok-bg"]), (ink["bad"], "#fde8e7"),
             ("#ffffff", ink["accent"]), ("#ffffff", ink["bad"])]
    pairs += [(c, "#ffffff") for c in charts.PALETTE]
    for fg, bg in pairs:
        assert charts.contrast(fg, bg) >= 4.5, (fg, bg)


def test_the_templates_and_the_stylesheet_ship_with_the_package():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["service.api.console"]
    files = [p.relative_to(CONSOLE) for p in CONSOLE.rglob("*") if p.is_file() and p.suffix != ".py"
             and "__pycache__" not in p.parts]
    assert files and all(any(Path(f).match(pat) for pat in patterns) for f in files), files


def test_the_console_is_every_route_under_ui_and_nothing_else(app):
    """What operation_scopes (so the OpenAPI document and tests/test_auth_api.py's table) leaves
    out is exactly the console: every route under /ui, each checking its own session."""
    with app.test_request_context():
        declared = {path for path, _ in operation_scopes()}
    rules = list(app.url_map.iter_rules())
    console = {r.rule for r in rules if app.view_functions[r.endpoint].scope == CONSOLE_SCOPE}
    assert console and all(r == "/ui" or r.startswith("/ui/") for r in console)
    assert {r.rule for r in rules if r.rule.startswith("/ui")} == console
    assert not [p for p in declared if p.startswith("/ui")]
