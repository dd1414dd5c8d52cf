"""The Flask app factory. Nothing is built at import time: `create_app(config)` makes the store,
the clock, the policies and the engine, so tests build a fresh app on a temp SQLite file."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Mapping

import orjson
from flask import Flask, Response, current_app, json, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from service.api import decide_input
from service.clock import Clock, make_clock
from service.engine import DecisionEngine, ModelCache
from service.errors import Problem
from service.policy import Policy, load_policies
from service.store import Store

DEFAULTS = {
    "DB": "tactful.db",
    "POLICIES": "examples/policies",
    "CLOCK": "system",
    "SECRET": None,
    "MODEL_REFRESH_SECONDS": 1.0,
    # a request body larger than this is refused (413, naming `body`) before it is read: a decide
    # or an outcome is a few hundred bytes, so 1 MiB leaves room for large contexts
    "MAX_CONTENT_LENGTH": 1024 * 1024,
}


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON through orjson: responses and request bodies encode and decode several times
    faster than with the standard library, a visible share of a decide's cost. Anything orjson
    cannot encode natively falls back to Flask's own conversions (dates, dataclasses, ...)."""

    _options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

    def dumps(self, obj, **kwargs) -> str:
        if kwargs:  # explicit json.dumps options (indent, ...): the standard library honours them
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=self.default, option=self._options).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s) if not kwargs else super().loads(s, **kwargs)

    def response(self, *args, **kwargs) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj, default=self.default, option=self._options),
                                        mimetype=self.mimetype)


def problem_response(p: Problem) -> Response:
    return Response(json.dumps(p.to_dict()), status=p.status, mimetype="application/problem+json")


def internal_problem() -> Problem:
    p = Problem("an unexpected error occurred; it has been logged")
    p.status, p.title, p.slug = 500, "Internal server error", "internal"
    return p


class DecideFastPath:
    """WSGI middleware for `POST /v1/policies/<policy>/decide`, the one hot endpoint: a valid
    request for a known policy is parsed, validated by the same pydantic model and answered with
    the same JSON, without Flask's request and response machinery (about a fifth of a served
    decide's CPU). Everything else -- other endpoints, an unknown policy, a body that is not a
    valid request, a chunked or too large body -- goes to the Flask app untouched (the body already read is
    handed on), so every error keeps its single source: the Flask error handlers. A problem the
    engine raises while deciding (a conflict, a context the policy refuses) is answered here with
    the same problem document; nothing the engine raises comes after its decision is logged."""

    PREFIX, SUFFIX = "/v1/policies/", "/decide"

    def __init__(self, app: Flask, engine: DecisionEngine):
        self.wsgi_app, self.engine = app.wsgi_app, engine
        self.max_length = app.config["MAX_CONTENT_LENGTH"]
        self.options = OrjsonProvider._options

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if (environ.get("REQUEST_METHOD") != "POST" or not path.startswith(self.PREFIX)
                or not path.endswith(self.SUFFIX)):
            return self.wsgi_app(environ, start_response)
        name = path[len(self.PREFIX):-len(self.SUFFIX)]
        length = environ.get("CONTENT_LENGTH")
        if (name not in self.engine.policies or not length or not length.isdigit()
                or (self.max_length is not None and int(length) > self.max_length)):
            return self.wsgi_app(environ, start_response)
        raw = environ["wsgi.input"].read(int(length))
        try:
            req = decide_input(orjson.loads(raw))
        except (ValueError, Problem):  # the Flask route says what is wrong, as for any request
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.wsgi_app(environ, start_response)
        try:
            result = self.engine.decide(name, req)
        except Problem as p:
            return self._send(start_response, p.status, "application/problem+json", p.to_dict())
        except Exception:
            # logged and answered as the Flask app's handler does for any other endpoint
            logging.getLogger("tactful").exception("unexpected error on POST %s", path)
            return self._send(start_response, 500, "application/problem+json", internal_problem().to_dict())
        return self._send(start_response, 200, "application/json", result)

    def _send(self, start_response, status: int, mimetype: str, obj) -> list[bytes]:
        data = orjson.dumps(obj, option=self.options)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, '').upper()}",  # as werkzeug writes it
                       [("Content-Type", mimetype), ("Content-Length", str(len(data)))])
        return [data]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask("tactful")
    app.json = OrjsonProvider(app)
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    app.json.sort_keys = False

    store = Store(str(app.config["DB"]), secret=app.config["SECRET"])
    policies = app.config["POLICIES"]
    if isinstance(policies, (str, Path)):
        policies = load_policies(policies)
    policies: dict[str, Policy] = dict(policies)
    clock = app.config["CLOCK"]
    if isinstance(clock, str):
        clock = make_clock(clock, store)
    engine = DecisionEngine(store, policies, clock,
                            ModelCache(store, policies, float(app.config["MODEL_REFRESH_SECONDS"])))
    engine.ensure_models()
    app.extensions["tactful"] = engine

    from service import api
    app.register_blueprint(api.decisions)
    app.register_blueprint(api.policies_bp)
    app.register_blueprint(api.users)
    app.register_blueprint(api.meta)
    from service import api_models  # model versions over HTTP, and shadow scoring of live decisions
    api_models.init_app(app, engine)

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

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        logging.getLogger("tactful").exception("unexpected error on %s %s", request.method, request.path)
        return problem_response(internal_problem())

    app.wsgi_app = DecideFastPath(app, engine)
    return app
