"""The SQLite backend of the store (sqlite-utils, WAL mode): the embedded default that serves every
gunicorn worker and the learner of one machine through one file. Each thread gets its own
connection. Every write transaction takes SQLite's one write lock at once (`BEGIN IMMEDIATE`),
so check-and-reserve of a contact and publishing a model version with the learner's cursor are
atomic whatever `lock` a caller names.

People are stored under a key, HMAC-SHA256(server secret, user_id), never under their user id.
The secret is created on first use and kept in the `meta` table unless the operator supplies one.
Every connection deletes with `secure_delete` on, and an erasure ends with a TRUNCATE checkpoint,
so that an erased person leaves no byte in the file or its WAL (`leave_no_trace`).
"""
from __future__ import annotations

import ctypes
import logging
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import sqlite_utils

from service.store import schema
from service.store.base import GLOBAL, Store, pending
from service.store.decisions import (DECISION_COLUMNS, INSERT_DECISION, LEARNING_COLUMNS, LEARNING_SELECT,
                                     decision_values)
from service.store.records import Decision, DuplicateRequest, RequestClaim, StoreUnavailable

_CLOSES_AT = LEARNING_COLUMNS.index("closes_at")
log = logging.getLogger("tactful.store")

try:  # Linux's syncfs(2), for _Checkpointer._flush; None where the C library has none
    _syncfs = ctypes.CDLL(None, use_errno=True).syncfs
except (AttributeError, OSError, TypeError):
    _syncfs = None

# Checkpoint every 8000 WAL pages (32 MB) rather than SQLite's 1000: every decision rewrites the
# same few B-tree pages, and a checkpoint copies each page once however often it changed, so rarer
# checkpoints copy (and fsync) far less.
AUTOCHECKPOINT_PAGES = 8000
RESTART_TRIES = 200  # about 0.2 s of 1 ms pauses
# A served worker's checkpoints start the WAL over only once it holds this many pages (256 MB): a
# RESTART syncs the WAL and the database file while it holds writers back (see
# `_Checkpointer._restart`), so it should come seldom (every few seconds at full load)
RESTART_PAGES = 64000

# ... only if the person's state still matches the marker it was decided on (person_state)
INSERT_DECISION_IF_UNCHANGED = (
    f"INSERT INTO decisions({DECISION_COLUMNS}) SELECT {','.join('?' * 17)} WHERE"
    " (SELECT coalesce(max(id + 0), 0) FROM contacts WHERE person_key=? AND at>=?)=?"
    " AND (SELECT coalesce(max(id + 0), 0) FROM consent WHERE person_key=?)=?"
    " AND (SELECT coalesce(max(id + 0), 0) FROM signals WHERE person_key=? AND at>=?)=?"
    " AND (SELECT coalesce(max(rev), 0) FROM people WHERE person_key=?)=?")


# a decide's request id, or the take-over of one older than the idempotency window (campaign.py)
CLAIM_REQUEST = ("INSERT INTO requests(request_id, policy, person_key, event_id, request_hash, response, at)"
                 " VALUES (?,?,?,?,?,?,?) ON CONFLICT(request_id) DO UPDATE SET policy=excluded.policy,"
                 " person_key=excluded.person_key, event_id=excluded.event_id, request_hash=excluded.request_hash,"
                 " response=excluded.response, at=excluded.at WHERE requests.at<?")


class _Stale(Exception):
    """The person's state changed between reading it and reserving a contact."""


class SQLiteStore(Store):
    """The SQLite store: one file, a connection per thread."""

    kind = "sqlite"

    def __init__(self, path: str, secret: str | None = None, timeout: float = 30.0, migrate: bool = True):
        self.path = self.location = path
        self.timeout = timeout
        self._local = threading.local()
        self._secret = secret.encode() if secret else None
        self._autocheckpoint = AUTOCHECKPOINT_PAGES
        self._checkpointer: _Checkpointer | None = None
        if migrate:
            self.migrate()

    # -- connections -------------------------------------------------------------------------

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted content is overwritten with zeros, in b-tree pages and in pages freed: no byte
        # of an erased person stays behind in unused space (leave_no_trace, docs/reliability.md).
        # The pages are written anyway; zeroing them costs a memset.
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint}")
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection for reads (SQLite's busy handler waits up to the timeout)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(int(self.timeout * 1000))
        return conn

    @property
    def wconn(self) -> sqlite3.Connection:
        """This thread's connection for write transactions: no busy handler, see `write`."""
        conn = getattr(self._local, "wconn", None)
        if conn is None:
            conn = self._local.wconn = self._connect(0)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.wconn)  # for schema changes, inside `write`

    def checkpoint_in_background(self, every: float, restart_pages: int = RESTART_PAGES) -> None:
        """Checkpoint the WAL in a thread of this store's own, every `every` seconds, instead of in
        whichever commit crosses `AUTOCHECKPOINT_PAGES`: that commit's caller (a decide, in a
        served worker) would wait for the whole checkpoint, 30-40 ms for 32 MB of WAL, about once
        a second under load (docs/benchmarks.md). The checkpoints are PASSIVE, as automatic ones
        are: they copy what no reader still needs and never block a writer; when another
        connection is checkpointing, this one skips its turn. Once the WAL holds `restart_pages`,
        it is made to start over (see `_Checkpointer.run`). Connections this thread opened
        before stop checkpointing on their own too. `close` (from any thread) stops it."""
        if self._checkpointer is not None:
            return
        self._autocheckpoint = 0
        for name in ("conn", "wconn"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = _Checkpointer(self, every, restart_pages)
        self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for name in ("conn", "wconn"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.close()
                setattr(self._local, name, None)

    @contextmanager
    def write(self, lock: str | None = GLOBAL) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database's write lock at once.

        SQLite's own busy handler sleeps in steps of 1, 2, 5, 10... ms while another connection
        holds the lock, far longer than our write transactions last (a decision's takes about a
        tenth of a millisecond), so gunicorn workers would idle behind each other. The lock is
        taken here instead, retrying after short, growing pauses (0.1 ms up to 2 ms) until the
        store's timeout.
        """
        conn = self.wconn
        self._locked(conn, "BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _locked(self, conn: sqlite3.Connection, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        """Run a statement that takes the write lock (`write`'s BEGIN IMMEDIATE, a decision
        written alone), retrying while another connection holds it: after short, growing pauses
        (0.1 ms up to 2 ms) until the store's timeout. A statement refused for a busy file did
        nothing."""
        pause, deadline = 0.0001, None
        while True:
            try:
                return conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.timeout
                if now > deadline:
                    raise StoreUnavailable(f"{self.path}: the write lock was not granted within "
                                           f"{self.timeout:g}s") from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def learning_rows(self, policy: str, cursor: int, limit: int, closed_by: float | None = None) -> list:
        """As every store's (decisions.py), in one statement: SQLite makes a row only as it is
        fetched, so reading stops at the first decision still open, where a query looking for it
        first would walk every row once more when all are closed (2 us a decision, of a learner
        catching up). Plain tuples: the learner unpacks them."""
        if closed_by is None:
            return super().learning_rows(policy, cursor, limit)
        cur = self.conn.cursor()
        cur.row_factory = None
        try:
            cur.execute(f"SELECT {LEARNING_SELECT} FROM decisions WHERE policy=? AND seq>? ORDER BY seq LIMIT ?",
                        (policy, cursor, limit))
            rows = []
            for row in cur:
                if row[_CLOSES_AT] > closed_by:
                    break
                rows.append(row)
            return rows
        finally:
            cur.close()  # ends the statement, and the read it holds open, at the first open decision

    def query_before_write(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """On the write connection: its page cache still holds the pages this thread's last write
        changed, where the read connection's cache is dropped at every commit of another
        connection (a decide reads its person's state about 17 us faster, a twelfth of it: docs/
        benchmarks.md). It reads the last committed state as `query` does (autocommit, a snapshot
        per statement). Inside this thread's write transaction, or when SQLite reports the file
        busy (the write connection has no busy handler, see `write`), the read connection reads."""
        conn = self.wconn
        if not conn.in_transaction:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
        return self.conn.execute(sql, params).fetchall()

    def migrate(self) -> tuple[int, int]:
        """Apply the schema migrations this file lacks, in one transaction; refuse a file whose
        schema is newer than the code. Returns (version found, version now)."""
        db = self.db
        with self.write() as conn:
            found = 0
            if "meta" in db.table_names():
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                found = int(row[0]) if row else 1
            for step in pending(schema.MIGRATIONS, found, schema.SCHEMA_VERSION, self.path):
                step(db)
            db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(schema.SCHEMA_VERSION),))
            if self._secret is None:
                db.execute("INSERT INTO meta(key, value) VALUES ('secret', ?) ON CONFLICT DO NOTHING",
                           (secrets.token_hex(32),))
        if self._secret is None:
            self._secret = self.query("SELECT value FROM meta WHERE key='secret'")[0][0].encode()
        return found, schema.SCHEMA_VERSION

    def commit_decision(self, d: Decision, expected_marker: tuple | None,
                        budget: tuple[str, int] | None = None, claim: RequestClaim | None = None) -> bool:
        """Log a decision and reserve its contact in one transaction (see `DecisionLog`).

        The decision row is inserted only if the marker still holds (one INSERT ... SELECT ...
        WHERE), and the `decision_reserves_contact` trigger adds the contact and counts it
        towards suppression in the same statement: a decision is one write.
        """
        if budget is None and claim is None and d.person_key is not None and expected_marker:
            return self._commit_alone(d, expected_marker)
        try:
            with self.write() as conn:
                _commit(conn, d, expected_marker, budget, claim)
        except _Stale:
            return False
        return True

    def _commit_alone(self, d: Decision, marker: tuple) -> bool:
        """A decision without a budget or a request id to claim is one statement (the insert,
        if the marker holds, and the trigger's contact): run on its own, with no BEGIN and
        COMMIT around it, it is its own transaction, atomic as one. The write lock is waited for
        as `write` waits for it (a statement refused for a busy file wrote nothing)."""
        since, ssince, contact, consent, signal, rev = marker
        key = d.person_key
        params = decision_values(d) + (key, since, contact, key, consent, key, ssince, signal, key, rev)
        cur = self._locked(self.wconn, INSERT_DECISION_IF_UNCHANGED, params)
        if cur.rowcount != 1:
            return False
        d.seq = cur.lastrowid
        return True

    def commit_decisions(self, batch: list[tuple[Decision, tuple | None, tuple[str, int] | None,
                                                  RequestClaim | None]]) -> bool:
        """Many decisions in one write transaction, each written as `commit_decision` writes one."""
        try:
            with self.write() as conn:
                for d, marker, budget, claim in batch:
                    _commit(conn, d, marker, budget, claim)
        except _Stale:
            return False
        return True

    def leave_no_trace(self) -> None:
        """After an erasure: every connection deletes with `secure_delete` on, so the newest copy
        of each page holds no erased byte; a TRUNCATE checkpoint then writes those pages over the
        older copies in the database file and empties the WAL, which still held them. It waits
        (up to the store's timeout) for a moment with no writer and no reader of an older
        snapshot, and holds off writers while it copies; if it cannot complete, StoreUnavailable
        (the erasure itself is committed: asking again finishes it)."""
        # another connection's checkpoint (a served worker's background one, every second) makes
        # SQLite answer busy at once, without waiting: try again until the store's timeout
        deadline = time.monotonic() + self.timeout
        while True:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if busy:
            raise StoreUnavailable(f"{self.path}: the person is erased, but the checkpoint that removes the "
                                   f"erased bytes from the WAL could not complete; erase again to finish")

    def backup(self, out: str) -> None:
        """A consistent copy of the live store in `out` (SQLite's online backup: writers go on)."""
        target = sqlite3.connect(out)
        try:
            self.conn.backup(target)
        finally:
            target.close()


def _commit(conn: sqlite3.Connection, d: Decision, expected_marker: tuple | None, budget: tuple[str, int] | None,
            claim: RequestClaim | None) -> None:
    """One decision's writes inside a write transaction; _Stale when its person's state or the
    budget changed, DuplicateRequest when its request id is taken (either undoes the transaction)."""
    values = decision_values(d)
    if budget is not None and d.channel is not None:
        day, limit = budget
        row = conn.execute("SELECT used FROM budget WHERE policy=? AND day=?", (d.policy, day)).fetchone()
        if (row[0] if row else 0) >= limit:
            raise _Stale
        conn.execute("INSERT INTO budget(policy, day, used) VALUES (?,?,1) "
                     "ON CONFLICT(policy, day) DO UPDATE SET used=budget.used+1", (d.policy, day))
    if d.person_key is not None and expected_marker:
        since, ssince, contact, consent, signal, rev = expected_marker
        key = d.person_key
        cur = conn.execute(INSERT_DECISION_IF_UNCHANGED, values + (
            key, since, contact, key, consent, key, ssince, signal, key, rev))
        if cur.rowcount != 1:
            raise _Stale
    else:
        cur = conn.execute(INSERT_DECISION, values)
    d.seq = cur.lastrowid
    if claim is not None and conn.execute(CLAIM_REQUEST, (
            claim.request_id, d.policy, d.person_key, d.event_id, claim.request_hash, claim.response,
            d.decided_at, claim.since)).rowcount != 1:
        raise DuplicateRequest(claim.request_id)


class _Checkpointer(threading.Thread):
    """SQLiteStore.checkpoint_in_background's thread, with a connection of its own."""

    def __init__(self, store: SQLiteStore, every: float, restart_pages: int):
        super().__init__(name="tactful-checkpoint", daemon=True)
        self.store, self.every, self.restart_pages = store, every, restart_pages
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = self.store._connect(0)  # no busy handler: no checkpoint here ever waits in SQLite
        try:
            while not self._stop_event.wait(self.every):
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames >= self.restart_pages:
                        self._restart(conn)
                except sqlite3.OperationalError as exc:  # busy or locked: the next turn
                    log.debug("checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def _restart(self, conn: sqlite3.Connection) -> None:
        """Make the next commit write the WAL from its start. Under steady writes a PASSIVE
        checkpoint never ends with the whole WAL copied (commits go on meanwhile), so the WAL
        would never start over and would grow without bound (400 MB for 8,000 decides). A RESTART
        takes the write lock, copies the frames written since the last checkpoint, syncs the WAL
        and the database file, and starts the WAL over if no reader still uses it: writers wait
        for all of it, and a sync under load waits for whatever else the file system has to
        write first (a 4 KB sync on this machine's disk: 0.6 ms at the median, 30-100 ms in the
        worst 1%). So the slow parts come first, with no lock held: a PASSIVE checkpoint copies
        and syncs the backlog, and before every try the file system's dirty data is written
        out (`_flush`); the RESTART then copies the last few commits and syncs next to nothing.
        Without them, a RESTART held decides back 30-120 ms, and one such stall in a 10 s run
        was the p99 a campaign tool saw at half load (docs/benchmarks.md, stop 34).
        Without a busy handler a try that finds a writer or a reader says busy at once, and the
        next, 1 ms later, tries again; SQLite's own handler would sleep 1, 2, 5, 10... ms with
        the write lock held."""
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        for _ in range(RESTART_TRIES):
            self._flush()
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if not busy or self._stop_event.wait(0.001):
                return

    def _flush(self) -> None:
        """Write dirty data to disk with no lock held: on Linux the whole file system of the
        store (syncfs: the database file included, whose dirty pages the RESTART would otherwise
        sync), elsewhere the WAL file alone. Through a descriptor of the WAL file, never of the
        database file: SQLite keeps no POSIX lock on the WAL (its locks are on the database file
        and the -shm file), while closing any descriptor of the database file would drop every
        lock this process holds on it."""
        try:
            fd = os.open(self.store.path + "-wal", os.O_RDONLY)
        except OSError:  # no WAL (yet): nothing to write
            return
        try:
            if _syncfs is None or _syncfs(fd) != 0:
                getattr(os, "fdatasync", os.fsync)(fd)  # macOS has no fdatasync
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._stop_event.set()
        if self is not threading.current_thread():
            self.join()
