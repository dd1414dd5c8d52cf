"""The store: every decision, outcome, contact, consent change and model version.

One interface; this is its SQLite backend (sqlite-utils, WAL mode), the embedded default that
serves every gunicorn worker and the learner of one machine through one file. Each thread gets
its own connection. Writes that must be atomic (check-and-reserve of a contact, publishing a
model version with the learner's cursor) run in `BEGIN IMMEDIATE` transactions.

People are stored under a key, HMAC-SHA256(server secret, user_id), never under their user id.
The secret is created on first use and kept in the `meta` table unless the operator supplies one.
"""
from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import sqlite_utils

from service.store import schema
from service.store.coordination import CoordinationTables
from service.store.decisions import DecisionLog
from service.store.people import PeopleTables
from service.store.versions import ModelTables


class Store(PeopleTables, DecisionLog, ModelTables, CoordinationTables):
    """The SQLite store: one file, a connection per thread, the queries of people.py,
    decisions.py, versions.py and coordination.py, which read and write through `query` and
    `write`. No SQL lives outside the store package."""

    def __init__(self, path: str, secret: str | None = None, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._secret = secret.encode() if secret else None
        self.migrate()

    # -- connections -------------------------------------------------------------------------

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoint every 8000 WAL pages (32 MB) rather than SQLite's 1000: every decision
        # rewrites the same few B-tree pages, and a checkpoint copies each page once however
        # often it changed, so rarer checkpoints copy (and fsync) far less.
        conn.execute("PRAGMA wal_autocheckpoint=8000")
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

    def close(self) -> None:
        for name in ("conn", "wconn"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.close()
                setattr(self._local, name, None)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database's write lock at once.

        SQLite's own busy handler sleeps in steps of 1, 2, 5, 10... ms while another connection
        holds the lock, far longer than our write transactions last (a decision's takes about a
        tenth of a millisecond), so gunicorn workers would idle behind each other. The lock is
        taken here instead, retrying after short, growing pauses (0.1 ms up to 2 ms) until the
        store's timeout.
        """
        conn = self.wconn
        pause, deadline = 0.0001, None
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.timeout
                if now > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def ping(self) -> None:
        """Raise if the store cannot answer a query (health checks)."""
        self.query("SELECT 1")

    def migrate(self) -> None:
        db = self.db
        with self.write():
            schema.create(db)
            db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (str(schema.SCHEMA_VERSION),))
            if self._secret is None:
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('secret', ?)",
                           (secrets.token_hex(32),))
        if self._secret is None:
            self._secret = self.query("SELECT value FROM meta WHERE key='secret'")[0][0].encode()
