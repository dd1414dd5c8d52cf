"""The store's people: a person's state as the guardrails read it (in one statement, with a
marker that the decision's write re-checks), consent and its history, preferences, explicit
signals, contacts, erasure, and the runtime state of arms. People are stored under a key,
HMAC-SHA256(server secret, user id), never under their user id."""
from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

from service.store.decisions import DECISION_ROW
from service.store.records import Decision, PersonState, dumps, loads

# A person's state in one statement: each part tagged by its first column (see person_state). The
# first part types the columns (PostgreSQL resolves a UNION's types from left to right). The latest
# consent per channel is a correlated max (an index probe per channel): PostgreSQL ran the
# `id IN (SELECT max(id) ... GROUP BY channel)` form 8x slower (two hash aggregates per call), and
# `max(id + 0)` keeps it from walking the whole primary key backwards (pg_schema.py says why).
_PERSON_STATE = (
    "SELECT 0, id, channel, at, CAST(NULL AS TEXT), CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS TEXT) FROM contacts"
    " WHERE person_key=:k AND at>=:since"
    " UNION ALL SELECT 1, id, channel, granted, NULL, NULL, NULL FROM consent c WHERE person_key=:k AND"
    " id=(SELECT max(m.id + 0) FROM consent m WHERE m.person_key=:k AND m.channel=c.channel)"
    " UNION ALL SELECT 2, rev, NULL, unengaged, preferences, NULL, NULL FROM people WHERE person_key=:k"
    " UNION ALL SELECT 3, id, channel, at, kind, NULL, NULL FROM signals WHERE person_key=:k AND at>=:ssince"
    " UNION ALL SELECT 4, NULL, target, valid_from, status, valid_until, reason FROM arm_state WHERE policy=:policy"
    " UNION ALL SELECT 5, used, NULL, NULL, NULL, NULL, NULL FROM budget WHERE policy=:policy AND day=:day")

# The same for many people (a batch decide): each person's part tagged with their key in the
# second column; the policy's parts once, the budget of each day asked for (its day in the
# second column). The keys come as a VALUES list padded to a power of two (people_states).
_PEOPLE_STATES = (
    "WITH ks(k) AS (VALUES {keys})"
    " SELECT 0, person_key, id, channel, at, CAST(NULL AS TEXT), CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS TEXT)"
    " FROM contacts WHERE person_key IN (SELECT k FROM ks) AND at>=:since"
    " UNION ALL SELECT 1, person_key, id, channel, granted, NULL, NULL, NULL FROM consent c"
    " WHERE person_key IN (SELECT k FROM ks) AND"
    " id=(SELECT max(m.id + 0) FROM consent m WHERE m.person_key=c.person_key AND m.channel=c.channel)"
    " UNION ALL SELECT 2, person_key, rev, NULL, unengaged, preferences, NULL, NULL FROM people"
    " WHERE person_key IN (SELECT k FROM ks)"
    " UNION ALL SELECT 3, person_key, id, channel, at, kind, NULL, NULL FROM signals"
    " WHERE person_key IN (SELECT k FROM ks) AND at>=:ssince"
    " UNION ALL SELECT 4, NULL, NULL, target, valid_from, status, valid_until, reason FROM arm_state WHERE policy=:policy"
    " UNION ALL SELECT 5, day, used, NULL, NULL, NULL, NULL, NULL FROM budget WHERE policy=:policy AND day IN ({days})")


def _policy_part(rows: list, day: str | None) -> tuple[dict[str, dict], int]:
    """The policy's runtime arm state and its sends on `day`, from the statement's parts 4 and 5
    (a part 5 row of people_states ends with its day)."""
    arm_state, budget_used = {}, 0
    for part, a, b, c, d, e, f, *rest in rows:
        if part == 4:    # target, valid_from, status, valid_until, reason
            arm_state[b] = {"status": d, "valid_from": c, "valid_until": e, "reason": f}
        elif not rest or rest[0] == day:  # the policy's sends that day
            budget_used = a
    return arm_state, budget_used


def _fold(key: str, rows: list, since: float, signals_since: float, policy_part: tuple[dict, int]) -> PersonState:
    """One person's state from the statement's parts 0-3, and its marker."""
    contacts, last_contact = [], 0
    consent, last_consent = {}, 0
    prefs, unengaged, rev = {}, 0, 0
    signals, last_signal = [], 0
    for part, a, b, c, d, e, f in rows:
        if part == 0:    # contact: id, channel, at
            contacts.append((b, c))
            last_contact = max(last_contact, a)
        elif part == 1:  # latest consent per channel: id, channel, granted
            consent[b] = bool(c)
            last_consent = max(last_consent, a)
        elif part == 2:  # the person's row: rev, unengaged, preferences
            rev, unengaged, prefs = a, int(c), loads(d) if d else {}
        else:            # signal: id, channel, at, kind
            signals.append((d, b, c))
            last_signal = max(last_signal, a)
    contacts.sort(key=lambda x: x[1])
    marker = (since, signals_since, last_contact, last_consent, last_signal, rev)
    arm_state, budget_used = policy_part
    return PersonState(key, consent, contacts, marker, prefs, unengaged, signals, arm_state, budget_used)


class PeopleTables:
    """Queries on people; mixed into `Store`, whose `query`, `write` and `_secret` they use."""

    def leave_no_trace(self) -> None:
        """After an erasure: make the backend's files hold no byte of what was erased, where the
        backend can (SQLite can; PostgreSQL keeps dead rows until VACUUM: docs/reliability.md)."""

    def person_key(self, user_id: str) -> str:
        return hmac.new(self._secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    def person_state(self, key: str, since: float, policy: str | None = None, signals_since: float | None = None,
                     budget_day: str | None = None) -> PersonState:
        """Everything the guardrails read, and a marker of it that `commit_decision` re-checks.

        One statement (its parts tagged by their first column) reads it all from one snapshot;
        on the decision path each statement costs about as much as the rows it returns."""
        signals_since = since if signals_since is None else signals_since
        rows = self.query_before_write(_PERSON_STATE, {
            "k": key, "since": since, "ssince": signals_since, "policy": policy, "day": budget_day})
        policy_rows = [r for r in rows if r[0] >= 4]
        return _fold(key, [r for r in rows if r[0] < 4], since, signals_since, _policy_part(policy_rows, budget_day))

    def people_states(self, keys: Iterable[str], since: float, policy: str, signals_since: float,
                      budget_days: Iterable[str | None]) -> dict[tuple[str, str | None], PersonState]:
        """`person_state` of many people at once (a batch decide's), in one statement: for every
        person of `keys` and every day of `budget_days` (each pair: the cross product), read with
        the same look-backs (the batch's widest), each person with their own marker."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        size = 1 << max(len(unique) - 1, 0).bit_length()  # a few statement texts, not one per size
        unique_days = list(dict.fromkeys(budget_days))
        padded = unique + unique[-1:] * (size - len(unique))
        params = {f"k{i}": k for i, k in enumerate(padded)}
        params.update({f"d{i}": d for i, d in enumerate(unique_days)})
        params.update(since=since, ssince=signals_since, policy=policy)
        sql = _PEOPLE_STATES.format(keys=",".join(f"(:k{i})" for i in range(size)),
                                    days=",".join(f":d{i}" for i in range(len(unique_days))))
        per_key: dict[str, list] = {k: [] for k in unique}
        policy_rows = []
        for part, tag, *values in self.query_before_write(sql, params):
            if part >= 4:
                policy_rows.append((part, *values, tag))
            else:
                per_key[tag].append((part, *values))
        return {(k, day): _fold(k, per_key[k], since, signals_since, _policy_part(policy_rows, day))
                for k in unique for day in unique_days}

    def set_consent(self, key: str, channels: dict[str, bool], source: str | None, at: float) -> None:
        with self.write(lock=f"person:{key}") as conn:
            conn.executemany(
                "INSERT INTO consent(person_key, channel, granted, source, at) VALUES (?,?,?,?,?)",
                [(key, ch, int(granted), source, at) for ch, granted in channels.items()])

    def set_preferences(self, key: str, preferences: dict, at: float) -> None:
        with self.write(lock=f"person:{key}") as conn:
            conn.execute("INSERT INTO people(person_key, preferences, preferences_at, unengaged, rev) "
                         "VALUES (?,?,?,0,1) ON CONFLICT(person_key) DO UPDATE SET "
                         "preferences=excluded.preferences, preferences_at=excluded.preferences_at, rev=people.rev+1",
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
        rows = self.query(f"SELECT {DECISION_ROW} FROM decisions WHERE person_key=? ORDER BY seq DESC LIMIT ?",
                          (key, limit))
        return [Decision.from_row(dict(r)) for r in rows]

    def consistent_arm(self, key: str, policy: str, consistency_key: str, since: float) -> tuple[str, str] | None:
        """(event id, arm) of the latest decision for this person and key since `since`."""
        rows = self.query(
            "SELECT event_id, arm FROM decisions WHERE person_key=? AND consistency_key=? AND policy=? "
            "AND decided_at>=? ORDER BY seq DESC LIMIT 1", (key, consistency_key, policy, since))
        return (rows[0][0], rows[0][1]) if rows else None

    def erase_person(self, key: str) -> dict:
        """Erase a person: their consent, preferences, signals and contacts are deleted; their
        decisions stay, unlinked (no person key, no consistency key), for learning. Then the
        backend's files are rid of the erased bytes where it can (`leave_no_trace`)."""
        with self.write(lock=f"person:{key}") as c:
            counts = {t: c.execute(f"DELETE FROM {t} WHERE person_key=?", (key,)).rowcount
                      for t in ("consent", "contacts", "signals", "people", "requests")}
            counts["decisions_unlinked"] = c.execute(
                "UPDATE decisions SET person_key=NULL, consistency_key=NULL WHERE person_key=?", (key,)).rowcount
        self.leave_no_trace()
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
