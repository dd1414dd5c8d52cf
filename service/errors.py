"""Errors are values with a name: one exception type per kind of problem, mapped once to
`application/problem+json` (RFC 9457) at the HTTP edge."""
from __future__ import annotations


class Problem(Exception):
    status = 400
    title = "Bad request"
    slug = "bad-request"
    headers: tuple[tuple[str, str], ...] = ()  # what the answer carries besides its content type

    def __init__(self, detail: str, field: str | None = None, errors: list[dict] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.errors = errors if errors is not None else ([{"field": field, "reason": detail}] if field else [])

    def to_dict(self) -> dict:
        body = {"type": f"https://tactful.dev/problems/{self.slug}", "title": self.title,
                "status": self.status, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        if self.errors:
            body["errors"] = self.errors
        return body


class BadRequest(Problem):
    pass


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class TooLarge(Problem):
    """A request larger than the service takes (a batch of too many requests)."""

    status, title, slug = 413, "Request Entity Too Large", "request-entity-too-large"


class UnsupportedMediaType(Problem):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class Unauthorized(Problem):
    """No API key, or one that is unknown or revoked (RFC 6750: `WWW-Authenticate: Bearer`)."""

    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, error: str | None = None):
        super().__init__(detail)
        challenge = 'Bearer realm="tactful"' + (f', error="{error}"' if error else "")
        self.headers = (("WWW-Authenticate", challenge),)


class Forbidden(Problem):
    """A valid API key without the scope the request needs; the document names it (`scope`)."""

    status, title, slug = 403, "Forbidden", "forbidden"

    def __init__(self, detail: str, scope: str, key_name: str | None = None):
        super().__init__(detail)
        self.scope = scope
        self.key_name = key_name  # for the request log, never in the document
        self.headers = (("WWW-Authenticate", f'Bearer realm="tactful", error="insufficient_scope", scope="{scope}"'),)

    def to_dict(self) -> dict:
        return super().to_dict() | {"scope": self.scope}
