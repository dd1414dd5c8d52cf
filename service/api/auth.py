"""API keys and scopes: who may call what. No Flask here: the Flask app (app.py), the decide fast
path (fastpath.py) and `tactful keys` all go through these functions, so they cannot disagree.

A key is `tk_` and 43 URL-safe characters (32 random bytes), shown once when it is created; the
store keeps only its SHA-256 hash (service/store/keys.py). A request carries it as
`Authorization: Bearer <key>`. Every route declares what it needs with `requires`: a scope of
`SCOPES`, `ANY` (any valid key: the policies' configuration) or `PUBLIC` (no key: /healthz,
/openapi.json). Scopes do not imply each other.

When keys are enforced: as soon as the store holds a key, revoked ones included. A store that has
never held one serves without authentication (development on one's own machine: `tactful serve`
allows that on a loopback address only, service/cli/serve.py); creating the first key protects
every worker within a second or two, and revoking every key leaves nobody in rather than everybody.

Each worker keeps the key table in memory (`KeyRing`) and reads it again once a second, so a new
or revoked key takes effect within about `refresh_seconds` without a restart and without a query
per request. When to record a key's last use is decided at those reads too: at most one write per
key and worker per minute (`LAST_USED_EVERY`).
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from service.errors import Forbidden, Unauthorized
from service.store import Store

log = logging.getLogger("tactful.auth")

SCOPES: dict[str, str] = {
    "decide": "decide, report outcomes, read an event",
    "people:read": "read a person's state and recent decisions",
    "people:write": "set consent and preferences, erase a person",
    "admin": "switch arms, list and activate model versions, manage API keys",
    "metrics": "read GET /metrics (a Prometheus scraper's key; unless the service serves it without a key)",
}
PUBLIC = "public"  # no key needed
ANY = "any"        # any valid key, whatever its scopes
# a page of the operator's console (service/api/console/): no Authorization header, it checks the
# key its signed session cookie names itself; not part of the JSON API nor of its OpenAPI document
CONSOLE = "console"

TOKEN_PREFIX = "tk_"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
LAST_USED_EVERY = 60.0  # seconds: a key's stored last use is at most this much behind


def requires(scope: str) -> Callable:
    """Mark a view function with what it needs: a scope of SCOPES, ANY or PUBLIC."""
    if scope not in SCOPES and scope not in (ANY, PUBLIC, CONSOLE):
        raise ValueError(f"unknown scope {scope!r}")

    def mark(view):
        view.scope = scope
        return view
    return mark


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """SHA-256 of the key, in hex: a key is 256 random bits, so no slow hash or salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a key name: 1 to 64 letters, digits, '.', '_' or '-', "
                         f"starting with a letter or a digit")
    return name


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """Scopes from `decide,people:read` (or a list), in SCOPES' order; ValueError naming an unknown one."""
    given = [s.strip() for s in (scopes.split(",") if isinstance(scopes, str) else scopes) if s.strip()]
    unknown = [s for s in given if s not in SCOPES]
    if unknown or not given:
        raise ValueError(f"{', '.join(unknown) or 'no scope'}: name one or more of {', '.join(SCOPES)}")
    return [s for s in SCOPES if s in given]


def create_key(store: Store, name: str, scopes: str | Iterable[str], at: float) -> str:
    """A new key under `name` with `scopes`, stored as its hash; the key itself, to show once.
    ValueError for a bad name or scope, KeyNameTaken when an active key has that name."""
    token = new_token()
    store.add_api_key(check_name(name), token_hash(token), parse_scopes(scopes), at)
    return token


@dataclass(frozen=True)
class Key:
    name: str
    scopes: frozenset[str]
    revoked: bool
    last_used_at: float | None


class KeyRing:
    """One process's copy of the key table, read again every `refresh_seconds` (of `monotonic`
    time) when a request needs it; `authorize` is the one rule every entry point applies."""

    def __init__(self, store: Store, refresh_seconds: float = 1.0, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.store, self.refresh_seconds = store, refresh_seconds
        self.monotonic, self.now = monotonic, wall
        self._keys: dict[str, Key] = {}
        self._used: set[str] = set()
        self._next = 0.0
        self._failing = False
        self.refresh()  # the first read fails loudly (the store is away: the worker waits for it)

    @property
    def enforced(self) -> bool:
        """Whether requests need a key: the store holds one, revoked ones included."""
        self._current()
        return bool(self._keys)

    def refresh(self) -> None:
        """Read the key table now (and record the last uses that are due)."""
        rows = self.store.api_key_table()
        self._keys = {r["key_hash"]: Key(r["name"], frozenset(r["scopes"]), r["revoked_at"] is not None,
                                         r["last_used_at"]) for r in rows}
        self._next = self.monotonic() + self.refresh_seconds
        self._record_use()

    def _record_use(self) -> None:
        """Store the last use of the keys used since the previous read, where the stored one is
        more than LAST_USED_EVERY old; a failure costs only that record."""
        used, self._used = self._used, set()
        now = self.now()
        due = [h for h in used if h in self._keys and (self._keys[h].last_used_at or 0.0) < now - LAST_USED_EVERY]
        if due:
            try:
                self.store.api_keys_used(due, now)
            except Exception as exc:
                log.warning("could not record when API keys were last used (%s)", exc)

    def _current(self) -> None:
        if self.monotonic() < self._next:
            return
        try:
            self.refresh()
        except Exception as exc:  # the store away: keep the table read last, try again in a moment
            self._next = self.monotonic() + self.refresh_seconds
            if not self._failing:
                log.warning("could not read the API keys (%s); using the ones read before", exc)
            self._failing = True
        else:
            self._failing = False

    def valid_key(self, key_hash: str) -> Key | None:
        """The key with this hash if it is known and not revoked (as read at most `refresh_seconds`
        ago), its use recorded as a request's is; None otherwise. What the console's session
        names, checked again on every page."""
        self._current()
        key = self._keys.get(key_hash)
        if key is None or key.revoked:
            return None
        self._used.add(key_hash)
        return key

    def authorize(self, header: str | None, scope: str) -> Key | None:
        """The key an `Authorization` header carries, if the route needs one (None when it does
        not, or when the store holds no key); Unauthorized (401) without a valid key, Forbidden
        (403, naming the scope) when the key lacks `scope`."""
        if scope in (PUBLIC, CONSOLE) or not self.enforced:
            return None
        if not header:
            raise Unauthorized("this request needs an API key: send `Authorization: Bearer <key>` (an operator "
                               "creates keys with `tactful keys create`)")
        kind, _, token = header.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be `Bearer <key>`", "invalid_request")
        h = token_hash(token.strip())
        key = self._keys.get(h)
        if key is None or key.revoked:
            raise Unauthorized(f"this API key ({key.name!r}) was revoked" if key else "this API key is not known",
                               "invalid_token")
        self._used.add(h)
        if scope != ANY and scope not in key.scopes:
            has = ", ".join(s for s in SCOPES if s in key.scopes)
            raise Forbidden(f"this request needs an API key with the scope {scope!r}; the key {key.name!r} has "
                            f"{has}", scope, key.name)
        return key
