"""One structured log line per request, and its request id.

The outermost WSGI layer: it takes the request's `X-Request-Id` (or makes one), echoes it in the
answer, and when the answer is ready writes one JSON line: time, request id, method, route (the
route's template, such as `/v1/users/<user_id>`: never a path, which may hold a user id), status,
duration, policy and the API key's name. Never a user id, a body or a key. The inner layers (the
decide fast path, Flask's request hooks) say which route, policy and key in the WSGI environ.

The same layer hands each request to `observe` (method, route, policy, status, seconds): the
Prometheus counters (service/metrics.py), which count whether or not the log is written."""
from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import Callable

import orjson

from service.times import to_rfc3339

ROUTE, POLICY, KEY = "tactful.route", "tactful.policy", "tactful.key"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def stderr_lines() -> Callable[[str], None]:
    """The default sink: the `tactful.access` logger, one JSON line per record on stderr."""
    log = logging.getLogger("tactful.access")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log.info


class RequestLog:
    """WSGI middleware: X-Request-Id in and out, one JSON line per request to `write` (none when
    it is None), and each request to `observe`."""

    def __init__(self, app, write: Callable[[str], None] | None,
                 observe: Callable[[str, str | None, str | None, int, float], None] | None = None):
        self.app = app
        self.write = write
        self.observe = observe

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        seen: dict = {}

        def respond(status, headers, exc_info=None):
            seen["status"] = int(status.split(" ", 1)[0])
            return start_response(status, [*headers, ("X-Request-Id", request_id)], exc_info)

        body = self.app(environ, respond)
        seconds = time.perf_counter() - started
        method, route, policy, status = (environ.get("REQUEST_METHOD"), environ.get(ROUTE), environ.get(POLICY),
                                         seen.get("status"))
        if self.observe is not None:
            self.observe(method, route, policy, status, seconds)
        if self.write is not None:
            self.write(orjson.dumps({
                "time": to_rfc3339(time.time()), "request_id": request_id, "method": method, "route": route,
                "status": status, "duration_ms": round(seconds * 1000, 2), "policy": policy,
                "key": environ.get(KEY)}).decode())
        return body
