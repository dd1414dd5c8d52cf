"""The one hot endpoint, `POST /v1/policies/<policy>/decide`, answered as WSGI middleware in
front of the Flask app."""
from __future__ import annotations

import io
import logging
from typing import Callable

import orjson
from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from service.api.auth import KeyRing
from service.api.problems import OrjsonProvider, internal_problem, unavailable_problem
from service.api.requestlog import KEY, POLICY, ROUTE
from service.api.routes import decide, decide_input
from service.decision.engine import DecisionEngine
from service.errors import Problem
from service.metrics import STORE_ERRORS, count_decision
from service.store import StoreUnavailable


class DecideFastPath:
    """WSGI middleware for `POST /v1/policies/<policy>/decide`, the one hot endpoint: a valid
    request for a known policy is parsed, validated by the same pydantic model and answered with
    the same JSON, without Flask's request and response machinery (about a fifth of a served
    decide's CPU). Everything else -- other endpoints, an unknown policy, a body that is not a
    valid request, a chunked or too large body -- goes to the Flask app untouched (the body already read is
    handed on), so every error keeps its single source: the Flask error handlers. A problem the
    engine raises while deciding (a conflict, a context the policy refuses) is answered here with
    the same problem document; nothing the engine raises comes after its decision is logged.

    The API key is checked first, by the rule and for the scope the Flask route declares (the
    same `KeyRing.authorize`): a request without a valid key, or with one that lacks the scope,
    is answered here with the problem document the Flask app would send, its body unread."""

    PREFIX, SUFFIX = "/v1/policies/", "/decide"
    ROUTE = "/v1/policies/<policy>/decide"  # the Flask route's template, for the request log

    def __init__(self, app: Flask, engine: DecisionEngine, keys: KeyRing, before: Callable[[], None] = lambda: None):
        self.wsgi_app, self.engine, self.keys, self.before = app.wsgi_app, engine, keys, before
        self.scope = decide.scope
        self.max_length = app.config["MAX_CONTENT_LENGTH"]
        self.options = OrjsonProvider._options

    def __call__(self, environ, start_response):
        self.before()  # before every request, this path's or Flask's (the app follows policy reloads)
        path = environ.get("PATH_INFO", "")
        if (environ.get("REQUEST_METHOD") != "POST" or not path.startswith(self.PREFIX)
                or not path.endswith(self.SUFFIX)):
            return self.wsgi_app(environ, start_response)
        name = path[len(self.PREFIX):-len(self.SUFFIX)]
        if not name or "/" in name:  # not the decide route: whatever Flask makes of it
            return self.wsgi_app(environ, start_response)
        environ[ROUTE], environ[POLICY] = self.ROUTE, name
        try:
            key = self.keys.authorize(environ.get("HTTP_AUTHORIZATION"), self.scope)
            if key is not None:
                environ[KEY] = key.name
        except Problem as p:
            environ[KEY] = getattr(p, "key_name", None)  # a 403's: the key that lacked the scope
            return self._send(start_response, p.status, "application/problem+json", p.to_dict(), p.headers)
        length = environ.get("CONTENT_LENGTH")
        if (name not in self.engine.policies or not length or not length.isdigit()
                or (self.max_length is not None and int(length) > self.max_length)):
            return self.wsgi_app(environ, start_response)
        raw = environ["wsgi.input"].read(int(length))
        try:
            req = decide_input(orjson.loads(raw), environ.get("HTTP_IDEMPOTENCY_KEY"))
        except (ValueError, Problem):  # the Flask route says what is wrong, as for any request
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.wsgi_app(environ, start_response)
        try:
            result = self.engine.decide(name, req)
        except Problem as p:
            return self._send(start_response, p.status, "application/problem+json", p.to_dict())
        except StoreUnavailable as exc:
            logging.getLogger("tactful").warning("POST %s: %s", path, exc)
            STORE_ERRORS.labels("api").inc()
            return self._send(start_response, 503, "application/problem+json", unavailable_problem(exc).to_dict(),
                              [("Retry-After", "1")])
        except Exception:
            # logged and answered as the Flask app's handler does for any other endpoint
            logging.getLogger("tactful").exception("unexpected error on POST %s", path)
            return self._send(start_response, 500, "application/problem+json", internal_problem().to_dict())
        count_decision(result)
        return self._send(start_response, 200, "application/json", result)

    def _send(self, start_response, status: int, mimetype: str, obj, headers=()) -> list[bytes]:
        data = orjson.dumps(obj, option=self.options)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, '').upper()}",  # as werkzeug writes it
                       [("Content-Type", mimetype), ("Content-Length", str(len(data))), *headers])
        return [data]
