"""The store: every decision, outcome, contact, consent change and model version.

One interface; this is its SQLite backend (sqlite-utils, WAL mode), the embedded default that
serves every gunicorn worker and the learner of one machine through one file. Each thread gets
its own connection. Writes that must be atomic (check-and-reserve of a contact, publishing a
model version with the learner's cursor) run in `BEGIN IMMEDIATE` transactions.

People are stored under a key, HMAC-SHA256(server secret, user_id), never under their user id.
The secret is created on first use and kept in the `meta` table unless the operator supplies one.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import sqlite_utils

from service.store import schema
from service.store.records import (Decision, Outcome, OutcomeConflict, PersonState, dumps, loads,
                                   pack_removed)




# A person's state in one statement: each part tagged by its first column (see person_state).
_PERSON_STATE = (
    "SELECT 0, id, channel, at, NULL, NULL FROM contacts WHERE person_key=:k AND at>=:since"
    " UNION ALL SELECT 1, id, channel, granted, NULL, NULL FROM consent WHERE id IN"
    " (SELECT max(id) FROM consent WHERE person_key=:k GROUP BY channel)"
    " UNION ALL SELECT 2, rev, unengaged, NULL, preferences, NULL FROM people WHERE person_key=:k"
    " UNION ALL SELECT 3, id, channel, at, kind, NULL FROM signals WHERE person_key=:k AND at>=:ssince"
    " UNION ALL SELECT 4, NULL, target, valid_from, status, valid_until FROM arm_state WHERE policy=:policy"
    " UNION ALL SELECT 5, used, NULL, NULL, NULL, NULL FROM budget WHERE policy=:policy AND day=:day")

_DECISION_COLUMNS = ("event_id, policy, person_key, decided_at, closes_at, model_version, mode, arm, probability,"
                     " send_at, channel, allowed, probabilities, context, history, removed, consistency_key")
_INSERT_DECISION = f"INSERT INTO decisions({_DECISION_COLUMNS}) VALUES ({','.join('?' * 17)})"
# ... only if the person's state still matches the marker it was decided on (person_state)
_INSERT_DECISION_IF_UNCHANGED = (
    f"INSERT INTO decisions({_DECISION_COLUMNS}) SELECT {','.join('?' * 17)} WHERE"
    " (SELECT coalesce(max(id), 0) FROM contacts WHERE person_key=? AND at>=?)=?"
    " AND (SELECT coalesce(max(id), 0) FROM consent WHERE person_key=?)=?"
    " AND (SELECT coalesce(max(id), 0) FROM signals WHERE person_key=? AND at>=?)=?"
    " AND (SELECT coalesce(max(rev), 0) FROM people WHERE person_key=?)=?")


class _Stale(Exception):
    """The person's state changed between reading it and reserving a contact."""


class Store:
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

    # -- people ------------------------------------------------------------------------------

    def person_key(self, user_id: str) -> str:
        return hmac.new(self._secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    def person_state(self, key: str, since: float, policy: str | None = None, signals_since: float | None = None,
                     budget_day: str | None = None) -> PersonState:
        """Everything the guardrails read, and a marker of it that `commit_decision` re-checks.

        One statement (its parts tagged by their first column) reads it all from one snapshot;
        on the decision path each statement costs about as much as the rows it returns."""
        signals_since = since if signals_since is None else signals_since
        contacts, last_contact = [], 0
        consent, last_consent = {}, 0
        prefs, unengaged, rev = {}, 0, 0
        signals, last_signal = [], 0
        arm_state, budget_used = {}, 0
        for part, a, b, c, d, e in self.conn.execute(_PERSON_STATE, {
                "k": key, "since": since, "ssince": signals_since, "policy": policy, "day": budget_day}):
            if part == 0:    # contact: id, channel, at
                contacts.append((b, c))
                last_contact = max(last_contact, a)
            elif part == 1:  # latest consent per channel: id, channel, granted
                consent[b] = bool(c)
                last_consent = max(last_consent, a)
            elif part == 2:  # the person's row: rev, unengaged, preferences
                rev, unengaged, prefs = a, b, loads(d) if d else {}
            elif part == 3:  # signal: id, channel, at, kind
                signals.append((d, b, c))
                last_signal = max(last_signal, a)
            elif part == 4:  # the policy's runtime arm state: target, valid_from, status, valid_until
                arm_state[b] = {"status": d, "valid_from": c, "valid_until": e}
            else:            # the policy's sends today
                budget_used = a
        contacts.sort(key=lambda x: x[1])
        marker = (since, signals_since, last_contact, last_consent, last_signal, rev)
        return PersonState(key, consent, contacts, marker, prefs, unengaged, signals, arm_state, budget_used)

    def set_consent(self, key: str, channels: dict[str, bool], source: str | None, at: float) -> None:
        with self.write() as conn:
            conn.executemany(
                "INSERT INTO consent(person_key, channel, granted, source, at) VALUES (?,?,?,?,?)",
                [(key, ch, int(granted), source, at) for ch, granted in channels.items()])

    def set_preferences(self, key: str, preferences: dict, at: float) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO people(person_key, preferences, preferences_at, unengaged, rev) "
                         "VALUES (?,?,?,0,1) ON CONFLICT(person_key) DO UPDATE SET "
                         "preferences=excluded.preferences, preferences_at=excluded.preferences_at, rev=rev+1",
                         (key, dumps(preferences), at))

    def person_row(self, key: str) -> dict | None:
        rows = self.query("SELECT * FROM people WHERE person_key=?", (key,))
        return dict(rows[0]) if rows else None

    def signals(self, key: str) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT kind, channel, at, event_id FROM signals WHERE person_key=? ORDER BY id", (key,))]

    def contacts(self, key: str, since: float) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT channel, at, policy, event_id FROM contacts WHERE person_key=? AND at>=? ORDER BY at",
            (key, since))]

    def person_decisions(self, key: str, limit: int) -> list[Decision]:
        rows = self.query("SELECT * FROM decisions WHERE person_key=? ORDER BY seq DESC LIMIT ?", (key, limit))
        return [Decision.from_row(dict(r)) for r in rows]

    def consistent_arm(self, key: str, policy: str, consistency_key: str, since: float) -> tuple[str, str] | None:
        """(event id, arm) of the latest decision for this person and key since `since`."""
        row = self.conn.execute(
            "SELECT event_id, arm FROM decisions WHERE person_key=? AND consistency_key=? AND policy=? "
            "AND decided_at>=? ORDER BY seq DESC LIMIT 1", (key, consistency_key, policy, since)).fetchone()
        return (row[0], row[1]) if row else None

    def erase_person(self, key: str) -> dict:
        """Erase a person: their consent, preferences, signals and contacts are deleted; their
        decisions stay, unlinked (no person key, no consistency key), for learning. Deleted rows
        are overwritten on disk (secure_delete)."""
        conn = self.wconn
        conn.execute("PRAGMA secure_delete=ON")
        try:
            with self.write() as c:
                counts = {t: c.execute(f"DELETE FROM {t} WHERE person_key=?", (key,)).rowcount
                          for t in ("consent", "contacts", "signals", "people")}
                counts["decisions_unlinked"] = c.execute(
                    "UPDATE decisions SET person_key=NULL, consistency_key=NULL WHERE person_key=?", (key,)).rowcount
        finally:
            conn.execute("PRAGMA secure_delete=OFF")
        return counts

    # -- runtime arm state -------------------------------------------------------------------

    def set_arm_state(self, policy: str, target: str, status: str, valid_from: float | None,
                      valid_until: float | None, reason: str | None, at: float) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO arm_state(policy, target, status, valid_from, valid_until, reason, updated_at) "
                         "VALUES (?,?,?,?,?,?,?) ON CONFLICT(policy, target) DO UPDATE SET status=excluded.status, "
                         "valid_from=excluded.valid_from, valid_until=excluded.valid_until, reason=excluded.reason, "
                         "updated_at=excluded.updated_at",
                         (policy, target, status, valid_from, valid_until, reason, at))

    def arm_states(self, policy: str) -> dict[str, dict]:
        return {r["target"]: dict(r) for r in self.query("SELECT * FROM arm_state WHERE policy=?", (policy,))}

    def consent_history(self, key: str) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT channel, granted, source, at FROM consent WHERE person_key=? ORDER BY id", (key,))]

    # -- decisions ---------------------------------------------------------------------------

    def commit_decision(self, d: Decision, expected_marker: tuple | None,
                        budget: tuple[str, int] | None = None) -> bool:
        """Log a decision and reserve its contact in one transaction.

        Returns False, writing nothing, when the person's contacts, consent, signals or
        preferences changed since `expected_marker` was read, or when the send would overspend
        the policy's daily `budget` (day, limit): the caller re-evaluates its guardrails and tries
        again. This is what makes check-and-reserve atomic across workers.

        The decision row is inserted only if the marker still holds (one INSERT ... SELECT ...
        WHERE), and the `decision_reserves_contact` trigger adds the contact and counts it
        towards suppression in the same statement: a decision is one write.
        """
        values = (d.event_id, d.policy, d.person_key, d.decided_at, d.closes_at, d.model_version, d.mode,
                  d.arm, d.probability, d.send_at, d.channel, dumps(d.allowed), dumps(d.probabilities),
                  dumps(d.context), dumps(d.history), pack_removed(d.removed), d.consistency_key)
        try:
            with self.write() as conn:
                if budget is not None and d.channel is not None:
                    day, limit = budget
                    row = conn.execute("SELECT used FROM budget WHERE policy=? AND day=?", (d.policy, day)).fetchone()
                    if (row[0] if row else 0) >= limit:
                        raise _Stale
                    conn.execute("INSERT INTO budget(policy, day, used) VALUES (?,?,1) "
                                 "ON CONFLICT(policy, day) DO UPDATE SET used=used+1", (d.policy, day))
                if d.person_key is not None and expected_marker:
                    since, ssince, contact, consent, signal, rev = expected_marker
                    key = d.person_key
                    cur = conn.execute(_INSERT_DECISION_IF_UNCHANGED, values + (
                        key, since, contact, key, consent, key, ssince, signal, key, rev))
                    if cur.rowcount != 1:
                        raise _Stale
                else:
                    cur = conn.execute(_INSERT_DECISION, values)
                d.seq = cur.lastrowid
        except _Stale:
            return False
        return True

    def decision(self, event_id: str) -> Decision | None:
        rows = self.query("SELECT * FROM decisions WHERE event_id=?", (event_id,))
        return Decision.from_row(dict(rows[0])) if rows else None

    def decisions_after(self, policy: str, cursor: int, limit: int, closed_by: float | None = None) -> list[Decision]:
        """Decisions after `cursor`, in order; with `closed_by`, only those before the first one
        whose reward window is still open at that time (the rows after it are not read at all)."""
        upper = None
        if closed_by is not None:
            row = self.conn.execute(
                "SELECT seq FROM decisions WHERE policy=? AND seq>? AND closes_at>? ORDER BY seq LIMIT 1",
                (policy, cursor, closed_by)).fetchone()
            upper = row[0] if row else None
        if upper is None:
            rows = self.query("SELECT * FROM decisions WHERE policy=? AND seq>? ORDER BY seq LIMIT ?",
                              (policy, cursor, limit))
        else:
            rows = self.query("SELECT * FROM decisions WHERE policy=? AND seq>? AND seq<? ORDER BY seq LIMIT ?",
                              (policy, cursor, upper, limit))
        return [Decision.from_row(dict(r)) for r in rows]

    # -- outcomes ----------------------------------------------------------------------------

    def add_outcome(self, o: Outcome, person_key: str | None = None, signal: tuple[str, str | None] | None = None,
                    engaged: bool = False) -> bool:
        """Store an outcome. Returns False when the same outcome_id was already stored (the repeat
        is acknowledged, not counted again); raises OutcomeConflict when it differs.

        In the same transaction, for the decision's person: an explicit `signal` (kind, channel)
        is recorded, and an unsubscribe also withdraws that channel's consent; an engagement
        ends the run of contacts without engagement (suppression).
        """
        with self.write() as conn:
            if o.outcome_id is not None:
                row = conn.execute("SELECT type, value FROM outcomes WHERE event_id=? AND outcome_id=?",
                                   (o.event_id, o.outcome_id)).fetchone()
                if row is not None:
                    if row[0] != o.type or row[1] != o.value:
                        raise OutcomeConflict(
                            f"outcome {o.outcome_id!r} was already reported as {row[0]!r} with value {row[1]}")
                    return False
            conn.execute("INSERT INTO outcomes(event_id, outcome_id, type, value, at, received_at, counted)"
                         " VALUES (?,?,?,?,?,?,?)",
                         (o.event_id, o.outcome_id, o.type, o.value, o.at, o.received_at, int(o.counted)))
            if person_key is not None and signal is not None:
                kind, channel = signal
                conn.execute("INSERT INTO signals(person_key, kind, channel, at, event_id) VALUES (?,?,?,?,?)",
                             (person_key, kind, channel, o.at, o.event_id))
                if kind == "unsubscribe" and channel is not None:
                    conn.execute("INSERT INTO consent(person_key, channel, granted, source, at) VALUES (?,?,0,?,?)",
                                 (person_key, channel, f"unsubscribe:{o.event_id}", o.at))
            if person_key is not None and engaged:
                conn.execute("INSERT INTO people(person_key, unengaged, last_engaged_at, rev) VALUES (?,0,?,0) "
                             "ON CONFLICT(person_key) DO UPDATE SET unengaged=0, "
                             "last_engaged_at=max(coalesce(last_engaged_at, 0), excluded.last_engaged_at)",
                             (person_key, o.at))
        return True

    def outcomes(self, event_id: str) -> list[Outcome]:
        return [Outcome(event_id=r["event_id"], type=r["type"], value=r["value"], at=r["at"],
                        outcome_id=r["outcome_id"], received_at=r["received_at"], counted=bool(r["counted"]))
                for r in self.query("SELECT * FROM outcomes WHERE event_id=? ORDER BY id", (event_id,))]

    def outcomes_for(self, event_ids: list[str]) -> dict[str, list[Outcome]]:
        out: dict[str, list[Outcome]] = {e: [] for e in event_ids}
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.query(f"SELECT * FROM outcomes WHERE event_id IN ({marks}) ORDER BY id", tuple(chunk)):
                out[r["event_id"]].append(Outcome(event_id=r["event_id"], type=r["type"], value=r["value"],
                                                  at=r["at"], outcome_id=r["outcome_id"],
                                                  received_at=r["received_at"], counted=bool(r["counted"])))
        return out

    # -- the clock (for --clock request) -----------------------------------------------------

    def clock_now(self) -> float | None:
        rows = self.query("SELECT now FROM clock WHERE id=1")
        return rows[0][0] if rows else None

    def clock_advance(self, ts: float) -> float:
        """Move the shared clock to `ts` if it is later; return the clock."""
        with self.write() as conn:
            conn.execute("INSERT INTO clock(id, now) VALUES (1, ?) "
                         "ON CONFLICT(id) DO UPDATE SET now=max(now, excluded.now)", (ts,))
            return conn.execute("SELECT now FROM clock WHERE id=1").fetchone()[0]

    # -- model versions ----------------------------------------------------------------------

    def active_version(self, policy: str) -> int | None:
        rows = self.query("SELECT active_version FROM policy_state WHERE policy=?", (policy,))
        return rows[0][0] if rows else None

    def model(self, policy: str, version: int) -> dict | None:
        rows = self.query("SELECT * FROM model_versions WHERE policy=? AND version=?", (policy, version))
        return dict(rows[0]) if rows else None

    def learner_cursor(self, policy: str) -> int:
        rows = self.query("SELECT learner_cursor FROM policy_state WHERE policy=?", (policy,))
        return rows[0][0] if rows else 0

    def ensure_initial_version(self, policy: str, model: bytes, vw_args: str, at: float) -> int:
        """Version 1, an untrained model, so that every decision names a model version."""
        with self.write() as conn:
            row = conn.execute("SELECT active_version FROM policy_state WHERE policy=?", (policy,)).fetchone()
            if row is not None:
                return row[0]
            conn.execute("INSERT INTO model_versions(policy, version, parent, source, created_at, model, vw_args,"
                         " n_learned, learned_through_seq, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (policy, 1, None, "init", at, model, vw_args, 0, 0, dumps({})))
            conn.execute("INSERT INTO policy_state(policy, active_version, learner_cursor) VALUES (?,?,0)",
                         (policy, 1))
            conn.execute("INSERT INTO activations(policy, version, previous, reason, at) VALUES (?,?,?,?,?)",
                         (policy, 1, None, "initial untrained model", at))
            return 1

    def publish_learned(self, policy: str, parent: int, model: bytes, vw_args: str, at: float,
                        learned: list[tuple[int, float]], cursor: int, note: dict) -> int | None:
        """Publish a version learned online and advance the learner's cursor, atomically.

        `learned` holds (seq, reward) of every decision the new version learned from. The new
        version becomes active only if `parent` is still the active one; if somebody activated
        another version meanwhile, nothing is written and None is returned, so the learner starts
        again from the version now active, with the same decisions.
        """
        with self.write() as conn:
            active, stored_cursor = conn.execute(
                "SELECT active_version, learner_cursor FROM policy_state WHERE policy=?", (policy,)).fetchone()
            if active != parent:
                return None
            if stored_cursor >= cursor:
                raise RuntimeError(f"learner cursor for {policy!r} would move back from {stored_cursor} to {cursor}")
            version = conn.execute("SELECT max(version) FROM model_versions WHERE policy=?",
                                   (policy,)).fetchone()[0] + 1
            conn.execute("INSERT INTO model_versions(policy, version, parent, source, created_at, model, vw_args,"
                         " n_learned, learned_through_seq, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (policy, version, parent, "online", at, model, vw_args, len(learned), cursor,
                          dumps(note)))
            for seq, reward in learned:
                updated = conn.execute("UPDATE decisions SET reward=?, learned_version=? "
                                       "WHERE seq=? AND learned_version IS NULL", (reward, version, seq))
                if updated.rowcount != 1:
                    raise RuntimeError(f"decision {seq} was already learned")
            conn.execute("UPDATE policy_state SET active_version=?, learner_cursor=? WHERE policy=?",
                         (version, cursor, policy))
            conn.execute("INSERT INTO activations(policy, version, previous, reason, at) VALUES (?,?,?,?,?)",
                         (policy, version, parent, f"online learner: {len(learned)} decisions", at))
            return version

    def versions(self, policy: str) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT policy, version, parent, source, created_at, vw_args, n_learned, learned_through_seq, note "
            "FROM model_versions WHERE policy=? ORDER BY version", (policy,))]

    # -- learner election --------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew a lease on wall-clock time; True when `holder` has it."""
        now = time.time()
        with self.write() as conn:
            row = conn.execute("SELECT holder, expires_at FROM leases WHERE name=?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            conn.execute("INSERT INTO leases(name, holder, expires_at) VALUES (?,?,?) ON CONFLICT(name) "
                         "DO UPDATE SET holder=excluded.holder, expires_at=excluded.expires_at",
                         (name, holder, now + ttl))
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))

    # -- counts ------------------------------------------------------------------------------

    def policy_counts(self, policy: str, now: float) -> dict:
        row = self.query(
            "SELECT count(*), sum(learned_version IS NOT NULL), sum(closes_at > ?), sum(arm = 'hold') "
            "FROM decisions WHERE policy=?", (now, policy))[0]
        outcomes = self.query("SELECT count(*) FROM outcomes o JOIN decisions d ON d.event_id=o.event_id "
                              "WHERE d.policy=?", (policy,))[0][0]
        return {"decisions": row[0], "learned": row[1] or 0, "pending": row[2] or 0,
                "holds": row[3] or 0, "outcomes": outcomes}
