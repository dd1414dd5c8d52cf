"""The HTTP edge's answers: JSON through orjson, and every `Problem` as application/problem+json
(RFC 9457). The Flask app and the decide fast path answer through these."""
from __future__ import annotations

import orjson
from flask import Response, json
from flask.json.provider import DefaultJSONProvider

from service.errors import Problem


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
    return Response(json.dumps(p.to_dict()), status=p.status, mimetype="application/problem+json",
                    headers=list(p.headers))


def internal_problem() -> Problem:
    p = Problem("an unexpected error occurred; it has been logged")
    p.status, p.title, p.slug = 500, "Internal server error", "internal"
    return p


def unavailable_problem(exc: Exception) -> Problem:
    """The store could not answer (down, restarting, a lock not granted in time): 503, try again."""
    p = Problem(f"the store is unavailable; try again shortly ({exc})")
    p.status, p.title, p.slug = 503, "Service unavailable", "unavailable"
    return p
