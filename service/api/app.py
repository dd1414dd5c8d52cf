"""The Flask app factory. Nothing is built at import time: `create_app(config)` makes the store,
the clock, the policies, the engine and the key ring, so tests build a fresh app on a temp SQLite
file.

Authentication (service/api/auth.py) is on as soon as the store holds an API key, whatever
address the app serves on: an app on a store that has never held one answers every request,
which is what the tests and `tactful serve` on a loopback address rely on; `tactful serve`
refuses to bind any other address in that state (service/cli/serve.py)."""
from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from service.api import catalog, console, keys, metrics, personalizer, routes, safety, versions
from service.api.auth import ANY, CONSOLE, PUBLIC, KeyRing
from service.api.fastpath import DecideFastPath
from service.api.requestlog import KEY, POLICY, ROUTE, RequestLog, stderr_lines
from service.api.schemas import NUL_REASON
from service.api.problems import OrjsonProvider, internal_problem, problem_response, unavailable_problem
from service.clock import make_clock
from service.metrics import STORE_ERRORS, count_request
from service.errors import BadRequest, Forbidden, NotFound, Problem
from service.policy import Policy, load_policies
from service.policy.reload import PolicyReloads
from service.runtime import build_engine
from service.store import StoreUnavailable, open_store

DEFAULTS = {
    "DB": "tactful.db",
    "POLICIES": "examples/policies",
    "CLOCK": "system",
    "SECRET": None,
    "MODEL_REFRESH_SECONDS": 1.0,
    "ACCESS_LOG": True,  # one JSON line per request on stderr (service/api/requestlog.py)
    # how often each worker reads the API keys again: a new or revoked key counts within about this
    "KEYS_REFRESH_SECONDS": 1.0,
    # how often each worker looks for policy files reloaded and catalog changes made elsewhere
    # (service/policy/reload.py)
    "POLICY_REFRESH_SECONDS": 1.0,
    # a request body larger than this is refused (413, naming `body`) before it is read: a decide
    # or an outcome is a few hundred bytes, so 1 MiB leaves room for large contexts
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    # GET /metrics without a key (a port only the monitoring network reaches); otherwise it needs
    # a key with the scope `metrics`
    "METRICS_PUBLIC": False,
    # where the console finds the written reports (Markdown and PNG) it lists: where `tactful
    # evaluate` and `tactful simulate` write by default (docs/console.md)
    "REPORTS": "out",
    # seconds between a served worker's WAL checkpoints, taken in a thread of its own rather than
    # in the decide whose commit fills the WAL (SQLite only; 0: SQLite's automatic checkpoints).
    # `tactful serve` sets 1.0 (service/cli/serve.py); an app built in a test keeps 0
    "CHECKPOINT_SECONDS": 0.0,
    # a served worker moves what it loaded (modules, policies, models, the app: some 150,000
    # objects) out of the garbage collector's way once the app is built, so that a full
    # collection walks only what serving made since: walking them all took 100-200 ms on the
    # benchmark machine, a stall for every request queued behind it. `tactful serve` sets it
    "FREEZE_HEAP": False,
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask("tactful", static_folder=None)  # no files served: every route is one of ours
    app.json = OrjsonProvider(app)
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    app.json.sort_keys = False

    store = open_store(str(app.config["DB"]), secret=app.config["SECRET"])
    if app.config["CHECKPOINT_SECONDS"]:
        store.checkpoint_in_background(float(app.config["CHECKPOINT_SECONDS"]))
    policies = app.config["POLICIES"]
    if isinstance(policies, (str, Path)):
        policies = load_policies(policies)
    policies: dict[str, Policy] = dict(policies)
    clock = app.config["CLOCK"]
    if isinstance(clock, str):
        clock = make_clock(clock, store)
    engine = build_engine(store, policies, clock, refresh_seconds=float(app.config["MODEL_REFRESH_SECONDS"]))
    engine.ensure_models()
    app.extensions["tactful"] = engine
    reloads = PolicyReloads(store, policies, engine.use_policy, float(app.config["POLICY_REFRESH_SECONDS"]))
    app.extensions["tactful_reloads"] = reloads

    app.register_blueprint(routes.decisions)
    app.register_blueprint(routes.policies_bp)
    app.register_blueprint(routes.users)
    app.register_blueprint(routes.meta)
    app.register_blueprint(safety.safety_bp)
    versions.init_app(app, engine)
    metrics.init_app(app, engine)
    catalog.init_app(app)
    personalizer.init_app(app, engine)
    ring = KeyRing(store, refresh_seconds=float(app.config["KEYS_REFRESH_SECONDS"]))
    keys.init_app(app, ring)
    console.init_app(app)
    _authorize_requests(app, ring)
    _handle_errors(app)
    app.wsgi_app = DecideFastPath(app, engine, ring, follow_reloads(reloads))
    sink = app.config["ACCESS_LOG"]  # True: JSON lines on stderr; a callable (tests): each line to it
    app.wsgi_app = RequestLog(app.wsgi_app, (sink if callable(sink) else stderr_lines()) if sink else None,
                              count_request)
    if app.config["FREEZE_HEAP"]:
        gc.collect()  # what startup left as garbage is freed, not kept for the worker's life
        gc.freeze()
    return app


def follow_reloads(reloads: PolicyReloads):
    """What runs before each request (the fast path is the app's outermost layer): policy files
    reloaded and catalog changes made anywhere, looked for at most once a second, so every worker
    serves them within about a second of its next request."""
    def follow() -> None:
        try:
            reloads.follow()
        except StoreUnavailable as exc:  # the request says so itself if it needs the store
            logging.getLogger("tactful").warning("could not look for reloaded policies: %s", exc)
    return follow


def _authorize_requests(app: Flask, ring: KeyRing) -> None:
    """Every request is authorized before its view runs, for the scope its view declares (any
    valid key for a path no route matches); a view that declares none stops the app here."""
    undeclared = sorted(e for e, view in app.view_functions.items() if not hasattr(view, "scope"))
    if undeclared:
        raise RuntimeError(f"routes without a declared scope (service/api/auth.py `requires`): {undeclared}")

    @app.before_request
    def _authorize():
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if request.url_rule is not None:  # for the request log: the route's template, never the path
            request.environ[ROUTE] = request.url_rule.rule
            request.environ[POLICY] = (request.view_args or {}).get("policy")
        scope = view.scope if view is not None else _unrouted_scope(app)
        try:
            key = ring.authorize(request.headers.get("Authorization") or personalizer.subscription_key(), scope)
        except Forbidden as exc:  # the log names the key that lacked the scope
            request.environ[KEY] = exc.key_name
            raise
        if key is not None:
            request.environ[KEY] = key.name
        _no_nul_in_path(request.view_args or {})


def _no_nul_in_path(params: dict) -> None:
    """No stored text holds U+0000 (schemas.NO_NUL): a path naming an event, a key, an arm or a
    policy with it names nothing (404, before a store that cannot even compare it); a person's
    id with it is refused as in a body (400), since any other id names a person."""
    for name, value in params.items():
        if isinstance(value, str) and "\x00" in value:
            if name == "user_id":
                raise BadRequest(f"{name}: {NUL_REASON}", name, [{"field": name, "reason": NUL_REASON}])
            raise NotFound(f"no {name} {value!r}: no name holds the NUL character (U+0000)", name)


def _unrouted_scope(app: Flask) -> str:
    """What a request no view answers needs before it learns why: a method a public path does not
    allow (or a console page's: it needs no Authorization header) is a 405 for anyone (as for
    `TRACE /healthz`); anything else needs a valid key first."""
    error = request.routing_exception
    if not isinstance(error, MethodNotAllowed) or not error.valid_methods:
        return ANY
    adapter = app.url_map.bind_to_environ(request.environ)
    scopes = {app.view_functions[adapter.match(method=m)[0]].scope for m in error.valid_methods}
    return PUBLIC if scopes <= {PUBLIC, CONSOLE} else ANY


def _handle_errors(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(p: Problem):
        return problem_response(p)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        p = Problem(e.description or e.name)
        p.status, p.title, p.slug = e.code or 500, e.name, e.name.lower().replace(" ", "-")
        if e.code == 405:
            p.detail = f"{request.method} is not allowed on {request.path}"
        elif e.code == 404:
            p.detail = f"no such endpoint: {request.path}"
        elif e.code == 413:
            p.detail = f"the request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"
            p.field, p.errors = "body", [{"field": "body", "reason": p.detail}]
        resp = problem_response(p)
        for name, value in e.get_headers():  # e.g. Allow, which a 405 must carry
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp

    @app.errorhandler(StoreUnavailable)
    def _unavailable(e: StoreUnavailable):
        logging.getLogger("tactful").warning("%s %s: %s", request.method, request.path, e)
        STORE_ERRORS.labels("api").inc()
        resp = problem_response(unavailable_problem(e))
        resp.headers["Retry-After"] = "1"
        return resp

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        logging.getLogger("tactful").exception("unexpected error on %s %s", request.method, request.path)
        return problem_response(internal_problem())

