"""The PostgreSQL backend of the store: psycopg 3 and one `psycopg_pool` pool per process, opened
when the store is (so in each gunicorn worker, after the fork). Connections are in autocommit;
a write transaction takes the advisory lock its caller names (`Store.write`), so what SQLite
makes atomic with its one writer is atomic here across every worker of every replica:

- a decision for a person re-checks what it was decided on and reserves its contact under that
  person's lock, in one round trip (`tactful_commit_decision`, pg_schema.py): caps, the minimum
  gap and the daily budget hold across replicas, while decisions for other people go on;
- publishing a model version, activating one and the learner's lease serialise on one lock, as
  they do on SQLite;
- the learner reads only decisions below the learning horizon (`learning_horizon`): identities
  are handed out before commit, so without it a decision committed late could fall behind the
  learner's cursor and never be learned.

The shared queries use SQLite's placeholders (`?`, `:name`); they are translated once per text.
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import weakref
from collections import defaultdict
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from service.store import pg_schema, schema
from service.store.base import GLOBAL, Store, pending
from service.store.decisions import (INSERT_DECISION, INSERT_OUTCOME, LEARNING_SELECT, decision_values,
                                     outcome_values)
from service.store.records import (Decision, DuplicateRequest, Outcome, OutcomeConflict, RequestClaim, StoreError,
                                   StoreUnavailable)

log = logging.getLogger("tactful.store")

_PLACEHOLDER = re.compile(r"\?|(?<!:):(\w+)|%")  # `::type` casts are not placeholders


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's placeholders as psycopg's (`?` -> `%s`, `:name` -> `%(name)s`, `%` -> `%%`); a
    PostgreSQL cast (`::float8`) stays as it is."""
    return _PLACEHOLDER.sub(lambda m: "%s" if m[0] == "?" else "%%" if m[0] == "%" else f"%({m[1]})s", sql)


def safe_location(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Row:
    """A row that answers `row[0]`, `row["column"]` and `dict(row)`, as sqlite3.Row does."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence, index: dict[str, int]):
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key):
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def keys(self):
        return self._index.keys()

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values))!r})"


def _rows(cursor):
    index = {c.name: i for i, c in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


# A dead peer is noticed within about 25 s on both sides of a connection (a replica's machine
# gone in the middle of a transaction releases its locks; a half-open connection fails).
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
IDLE_CHECK = 10.0  # seconds a pooled connection may sit unused before it is checked on the way out


def _configure(conn) -> None:
    """Settings of every connection of the store.

    plan_cache_mode: each connection plans a statement once and keeps the plan (psycopg prepares
    a statement on its fifth use). PostgreSQL would otherwise go on planning every execution
    whenever the generic plan's estimate looks dearer than the custom ones', as it does for the
    person's state (a six-part UNION: 2 ms to plan, 0.1 ms to run) while the tables are small or
    unanalysed. Every statement of the store is an index lookup whose plan does not depend on its
    values.

    lock_timeout: a lock not granted within 5 s fails the statement (the API answers 503) rather
    than a worker hanging behind a stuck transaction; idle_in_transaction_session_timeout ends a
    transaction whose client stopped in the middle (a machine gone), releasing its locks;
    tcp_keepalives_*: the server notices a vanished client."""
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute("SET lock_timeout = '5s'")
    conn.execute("SET idle_in_transaction_session_timeout = '30s'")
    conn.execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")


_LAST_USED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _check(conn) -> None:
    """A connection unused for a while (the server may have restarted since) answers a round
    trip before it is handed out; the pool replaces it if not. Busy ones are not checked: that
    would cost a round trip per query."""
    if time.monotonic() - _LAST_USED.get(conn, 0.0) > IDLE_CHECK:
        conn.execute("")


class _Conn:
    """A connection inside a write transaction, taking the shared (SQLite-placeholder) SQL."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql: str, params: Sequence | dict = ()):
        return self._conn.execute(translate(sql), params)

    def executemany(self, sql: str, seq):
        cur = self._conn.cursor()
        cur.executemany(translate(sql), list(seq))
        return cur


_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_ADD_OUTCOME = ("SELECT * FROM tactful_add_outcome(%s::text, %s::text, %s::text, %s::float8, %s::float8, %s::float8,"
                " %s::integer, %s::text, %s::text, %s::text, %s::boolean)")
_COMMIT = ("SELECT tactful_commit_decision(%s::text, %s::text, %s::text, %s::float8, %s::float8, %s::bigint,"
           " %s::text, %s::text, %s::float8, %s::float8, %s::text, %s::text, %s::text, %s::text, %s::text,"
           " %s::text, %s::text, %s::boolean, %s::float8, %s::float8, %s::bigint, %s::bigint, %s::bigint,"
           " %s::bigint, %s::text, %s::bigint, %s::text, %s::text, %s::text, %s::float8)")


# the learning barrier (shared) and every person of a batch, locked at once, in the order the
# commit function takes them (the barrier first) and in the order of the people's keys
_LOCK_PEOPLE = (f"SELECT pg_advisory_xact_lock_shared({pg_schema.BARRIER[0]}, {pg_schema.BARRIER[1]}),"
                " (SELECT count(pg_advisory_xact_lock(hashtextextended('person:' || k, 0)))"
                " FROM (SELECT unnest(%s::text[]) AS k ORDER BY 1) AS people)")


class _Stale(Exception):
    """A decision of a batch found its person's state or the budget changed."""


def _commit_params(d: Decision, expected_marker: tuple | None, budget: tuple[str, int] | None,
                   claim: RequestClaim | None) -> tuple:
    """The parameters of `_COMMIT` for one decision."""
    check = bool(d.person_key is not None and expected_marker)
    marker = tuple(expected_marker) if check else (None,) * 6
    day, limit = budget if budget is not None else (None, None)
    request = (claim.request_id, claim.request_hash, claim.response, claim.since) if claim else (None,) * 4
    return decision_values(d) + (check,) + marker + (day, limit) + request


class PostgresStore(Store):
    """The store in a PostgreSQL database (or the schema its URL's search_path names)."""

    kind = "postgresql"
    # a cast to integer rounds here (SQLite's truncates): floor first (service/store/console.py)
    bucket_sql = "CAST(floor((decided_at - ?::float8) / ?::float8) AS INTEGER)"

    def __init__(self, url: str, secret: str | None = None, migrate: bool = True, max_connections: int = 4,
                 timeout: float = 30.0, wait: bool = True):
        self.url = url
        self.location = safe_location(url)
        self._secret = secret.encode() if secret else None
        given = conninfo_to_dict(url)
        self._connect_args = {k: v for k, v in (KEEPALIVES | {"application_name": "tactful"}).items() if k not in given}
        self.pool = ConnectionPool(url, min_size=1, max_size=max_connections, timeout=timeout, open=False,
                                   kwargs={"autocommit": True, "row_factory": _rows, **self._connect_args},
                                   configure=_configure, check=_check, name="tactful")
        try:
            self.pool.open(wait=wait, timeout=timeout)
        except Exception as exc:
            self.pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.location}: {exc}") from None
        self._generations: defaultdict[str, int] = defaultdict(int)
        self._listening = False
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        if migrate:
            self.migrate()

    @contextmanager
    def connection(self):
        """A pooled connection; the database being away (down, restarting, a lock not granted in
        time) is StoreUnavailable."""
        try:
            with self.pool.connection() as conn:
                yield conn
                _LAST_USED[conn] = time.monotonic()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"the store at {self.location} is unavailable: {str(exc).strip()}") from exc

    def query(self, sql: str, params: Sequence | dict = ()) -> list[Row]:
        with self.connection() as conn:
            return conn.execute(translate(sql), params).fetchall()

    @contextmanager
    def write(self, lock: str | None = GLOBAL) -> Iterator[_Conn]:
        with self.connection() as conn, conn.transaction():
            if lock is not None:
                conn.execute(_LOCK, (lock,))
            yield _Conn(conn)

    def close(self) -> None:
        self._closed.set()  # the listener, if any, ends within a second
        self.pool.close()

    # -- changes pushed to every worker --------------------------------------------------------

    def model_generation(self, policy: str) -> int | None:
        """Counts the notifications about the policy's versions this process received (LISTEN on
        a connection of its own, started on first use: in a gunicorn worker, after the fork);
        None while that connection is down, so that callers fall back to polling."""
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="tactful-listen", daemon=True)
            self._listener.start()
        return self._generations[policy] if self._listening else None

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **self._connect_args) as conn:
                    conn.execute(f"LISTEN {pg_schema.NOTIFY_CHANNEL}")
                    self._listening = True
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=2.0):
                            self._generations[note.payload] += 1
                        conn.execute("SELECT 1")  # a connection that went half-open fails here
            except (psycopg.Error, OSError) as exc:
                if not self._closed.is_set():
                    log.warning("listening for model changes failed (%s); polling until it is back", exc)
            finally:
                self._listening = False
                for policy in list(self._generations):  # what was missed meanwhile: look again
                    self._generations[policy] += 1
            self._closed.wait(2.0)

    # -- what PostgreSQL does its own way ------------------------------------------------------

    def commit_decision(self, d: Decision, expected_marker: tuple | None,
                        budget: tuple[str, int] | None = None, claim: RequestClaim | None = None) -> bool:
        with self.connection() as conn:
            try:
                seq = conn.execute(_COMMIT, _commit_params(d, expected_marker, budget, claim)).fetchone()[0]
            except psycopg.Error as exc:
                if exc.sqlstate == pg_schema.DUPLICATE_REQUEST:
                    raise DuplicateRequest(claim.request_id) from None
                raise
        if seq is None:
            return False
        d.seq = seq
        return True

    def commit_decisions(self, batch: list[tuple[Decision, tuple | None, tuple[str, int] | None,
                                                  RequestClaim | None]]) -> bool:
        """Many decisions in one transaction: the learning barrier and the people's locks taken
        first, in the order single decides take them and in one order of people for every batch
        (two batches naming the same people cannot deadlock, nor a batch and a single decide),
        then each decision through `tactful_commit_decision`, pipelined (one flush, not a round
        trip each)."""
        keys = sorted({d.person_key for d, *_ in batch if d.person_key is not None})
        params = [_commit_params(d, marker, budget, claim) for d, marker, budget, claim in batch]
        try:
            with self.connection() as conn, conn.transaction():
                conn.execute(_LOCK_PEOPLE, (keys,))
                cur = conn.cursor()
                cur.executemany(_COMMIT, params, returning=True)
                seqs = []
                while True:
                    seqs.append(cur.fetchone()[0])
                    if not cur.nextset():
                        break
                if any(seq is None for seq in seqs):
                    raise _Stale
        except _Stale:
            return False
        except psycopg.Error as exc:
            if exc.sqlstate == pg_schema.DUPLICATE_REQUEST:
                raise DuplicateRequest(str(exc)) from None
            raise
        for (d, *_), seq in zip(batch, seqs):
            d.seq = seq
        return True

    def add_outcome(self, o: Outcome, person_key: str | None = None, signal: tuple[str, str | None] | None = None,
                    engaged: bool = False) -> bool:
        """As `DecisionLog.add_outcome`, in one round trip (`tactful_add_outcome`, pg_schema.py)."""
        kind, channel = signal if person_key is not None and signal is not None else (None, None)
        with self.connection() as conn:
            status, stored_type, stored_value = conn.execute(
                _ADD_OUTCOME, (o.event_id, o.outcome_id, o.type, o.value, o.at, o.received_at, int(o.counted),
                               person_key, kind, channel, engaged)).fetchone()
        if status == "conflict":
            raise OutcomeConflict(f"outcome {o.outcome_id!r} was already reported as {stored_type!r} "
                                  f"with value {stored_value}")
        return status == "stored"

    def learning_horizon(self, policy: str) -> int | None:
        """The highest seq of the store once every transaction that could still add a decision
        below it has ended: the barrier is taken exclusively for as long as one read takes."""
        with self.connection() as conn, conn.transaction():
            # decisions queue behind a waiting exclusive request: never for more than a moment
            # (a stuck transaction holding the barrier fails this read, which is tried again)
            conn.execute("SET LOCAL lock_timeout = '1s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", pg_schema.BARRIER)
            return conn.execute("SELECT coalesce(max(seq), 0) FROM decisions").fetchone()[0]

    def import_logged(self, decisions: list[Decision], outcomes: list[Outcome]) -> None:
        with self.write(lock=None) as conn:
            conn._conn.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", pg_schema.BARRIER)
            conn.executemany(INSERT_DECISION + " ON CONFLICT DO NOTHING", [decision_values(d) for d in decisions])
            conn.executemany(INSERT_OUTCOME + " ON CONFLICT DO NOTHING", [outcome_values(o) for o in outcomes])

    def _mark_learned(self, conn: _Conn, version: int | None, learned: list[tuple[int, float]]) -> int:
        """One statement over two arrays instead of a statement per decision (8x faster). The
        arrays go in PostgreSQL's binary format: psycopg writes a list as text in Python, an
        element at a time (60 ms for 25,000 decisions, against 20 ms), and a float's binary
        value is the float itself."""
        seqs, rewards = [s for s, _ in learned], [r for _, r in learned]
        return conn._conn.execute(
            "INSERT INTO decision_rewards(seq, reward, learned_version) SELECT v.seq, v.reward, %s::bigint"
            " FROM unnest(%b::bigint[], %b::float8[]) AS v(seq, reward) JOIN decisions d ON d.seq = v.seq"
            " ON CONFLICT (seq) DO UPDATE SET reward = excluded.reward, learned_version = excluded.learned_version"
            " WHERE decision_rewards.learned_version IS NULL", (version, seqs, rewards)).rowcount

    def learning_rows(self, policy: str, cursor: int, limit: int, closed_by: float | None = None) -> list:
        """As every store's (decisions.py), as plain tuples: a Row per decision costs a
        microsecond of Python, and the learner unpacks them."""
        return self._after(LEARNING_SELECT, policy, cursor, limit, closed_by, self._tuples)

    def _tuples(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.connection() as conn:
            return conn.cursor(row_factory=tuple_row).execute(translate(sql), params).fetchall()

    def outcomes_for(self, event_ids: list[str]) -> dict[str, list[Outcome]]:
        """One query over an array of event ids (the base class sends lists of 500), in binary:
        as text, psycopg quotes each id in Python (35 ms for 20,000 ids, against 14)."""
        out: dict[str, list[Outcome]] = {e: [] for e in event_ids}
        with self.connection() as conn:
            for r in conn.execute("SELECT * FROM outcomes WHERE event_id = ANY(%b) ORDER BY id", (event_ids,)):
                out[r["event_id"]].append(Outcome.from_row(r))
        return out

    def lease_now(self, conn) -> float:
        """The database server's clock: replicas on several machines measure every lease by the
        same clock, however far apart their own are."""
        return conn.execute("SELECT CAST(extract(epoch FROM clock_timestamp()) AS double precision)").fetchone()[0]

    def backup(self, out: str) -> None:
        raise StoreError("a PostgreSQL store is backed up with PostgreSQL's own tools: "
                         f"pg_dump --format=custom --file {out} '{self.location}' (docs/deploy.md)")

    # -- schema --------------------------------------------------------------------------------

    def _stored_secret(self) -> bytes:
        rows = self.query("SELECT value FROM meta WHERE key='secret'")
        if not rows:
            raise StoreError(f"the store at {self.location} has no schema yet: run `tactful db upgrade`")
        return rows[0][0].encode()

    def migrate(self) -> tuple[int, int]:
        """Apply the migrations the database lacks, in one transaction, while replicas starting
        at the same moment wait; refuse a schema newer than the code."""
        with self.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL lock_timeout = 0")  # a replica migrating a large table takes its time
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", pg_schema.MIGRATE_LOCK)
            found = 0
            if conn.execute("SELECT to_regclass('meta')").fetchone()[0] is not None:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                found = int(row[0]) if row else 0
            for statements in pending(pg_schema.MIGRATIONS, found, schema.SCHEMA_VERSION, self.location):
                for statement in statements:
                    conn.execute(statement)
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                         "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(schema.SCHEMA_VERSION),))
            if self._secret is None:
                conn.execute("INSERT INTO meta(key, value) VALUES ('secret', %s) ON CONFLICT DO NOTHING",
                             (secrets.token_hex(32),))
        if self._secret is None:
            self._secret = self._stored_secret()
        return found, schema.SCHEMA_VERSION
