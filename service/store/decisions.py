"""The store's decision log: a decision logged and its contact reserved only if the person's state
did not change since it was read (check-and-reserve, each backend's own); the learner's reads of
closed decisions; outcomes, idempotent by their own key, with the explicit signals they carry;
counts per policy."""
from __future__ import annotations

from service.store.records import Decision, Outcome, OutcomeConflict, RequestClaim, dumps, pack_removed

DECISION_COLUMNS = ("event_id, policy, person_key, decided_at, closes_at, model_version, mode, arm, probability,"
                    " send_at, channel, allowed, probabilities, context, history, removed, consistency_key")
INSERT_DECISION = f"INSERT INTO decisions({DECISION_COLUMNS}) VALUES ({','.join('?' * 17)})"
# A decision's learned reward and the version that learned it (NULL until the learner has read it),
# looked up by key for each decision read (`DECISION_ROW`: what a Decision is read from). Not a
# join: PostgreSQL plans a join of a slice of the log (seq > ?, a time window) as a scan of the
# whole of decision_rewards, a cost that grows with the log; a lookup is an index probe per row.
REWARD = "(SELECT reward FROM decision_rewards r WHERE r.seq = decisions.seq)"
LEARNED_VERSION = "(SELECT learned_version FROM decision_rewards r WHERE r.seq = decisions.seq)"
DECISION_ROW = f"decisions.*, {REWARD} AS reward, {LEARNED_VERSION} AS learned_version"
# every decision with its reward, for counts over a whole log
DECISION_ROWS = "decisions LEFT JOIN decision_rewards USING (seq)"
# every column but `removed` and `probabilities`
_LEARNED_COLUMNS = ("seq, event_id, policy, person_key, decided_at, closes_at, model_version, mode, arm, probability,"
                    f" send_at, channel, allowed, context, history, consistency_key, {REWARD} AS reward,"
                    f" {LEARNED_VERSION} AS learned_version, delivery")
# what the online learner reads of a bandit policy's decision (`learning_rows`), in this order
LEARNING_COLUMNS = ("seq", "event_id", "closes_at", "arm", "probability", "channel", "delivery", "allowed", "context",
                    "history")
LEARNING_SELECT = ", ".join(LEARNING_COLUMNS)
INSERT_OUTCOME = ("INSERT INTO outcomes(event_id, outcome_id, type, value, at, received_at, counted)"
                   " VALUES (?,?,?,?,?,?,?)")


def decision_values(d: Decision) -> tuple:
    """A decision as the values of `DECISION_COLUMNS`."""
    return (d.event_id, d.policy, d.person_key, d.decided_at, d.closes_at, d.model_version, d.mode,
            d.arm, d.probability, d.send_at, d.channel, dumps(d.allowed), dumps(d.probabilities),
            dumps(d.context), dumps(d.history), pack_removed(d.removed), d.consistency_key)


def outcome_values(o: Outcome) -> tuple:
    return (o.event_id, o.outcome_id, o.type, o.value, o.at, o.received_at, int(o.counted))


class DecisionLog:
    """Queries on decisions and outcomes; mixed into `Store`."""

    def commit_decision(self, d: Decision, expected_marker: tuple | None,
                        budget: tuple[str, int] | None = None, claim: RequestClaim | None = None) -> bool:
        """Log a decision and reserve its contact in one transaction.

        Returns False, writing nothing, when the person's contacts, consent, signals or
        preferences changed since `expected_marker` was read (`person_state`), or when the send
        would overspend the policy's daily `budget` (day, limit): the caller re-evaluates its
        guardrails and tries again. This is what makes check-and-reserve atomic across workers
        and replicas. Each backend does it in as few round trips as it can (sqlite.py, postgres.py).

        With a `claim`, the same transaction claims the decide's request id (campaign.py); when
        another decision holds it (claimed since `claim.since`), nothing is written and
        DuplicateRequest is raised: the caller answers with that decision."""
        raise NotImplementedError

    def commit_decisions(self, batch: list[tuple[Decision, tuple | None, tuple[str, int] | None,
                                                  RequestClaim | None]]) -> bool:
        """Log many decisions in one transaction, in order, each as `commit_decision` would with
        its (marker, budget, claim): all of them, or nothing (False when a marker or a budget no
        longer holds; DuplicateRequest when a request id was claimed elsewhere). A marker is
        checked before the batch's first write for its person; later decisions for the same
        person pass None (service/decision/batch.py)."""
        raise NotImplementedError

    def decision(self, event_id: str) -> Decision | None:
        rows = self.query(f"SELECT {DECISION_ROW} FROM decisions WHERE event_id=?", (event_id,))
        return Decision.from_row(dict(rows[0])) if rows else None

    def decisions_after(self, policy: str, cursor: int, limit: int, closed_by: float | None = None) -> list[Decision]:
        """Decisions after `cursor`, in order, as learning reads them: without their `removed`
        and `probabilities` (the two largest columns, which learning does not use). With
        `closed_by`, only those before the first one whose reward window is still open at that
        time (the rows after it are not read at all)."""
        return [Decision.from_row(dict(r)) for r in self._after(_LEARNED_COLUMNS, policy, cursor, limit, closed_by)]

    def learning_rows(self, policy: str, cursor: int, limit: int, closed_by: float | None = None) -> list:
        """The same decisions as `decisions_after`, as rows of `LEARNING_COLUMNS` alone (read by
        position: a backend may give plain tuples), their JSON columns as the text stored: what
        the online learner reads of a bandit policy's decisions (service/learning/rows.py),
        without a dict, a dataclass and three JSON parses per row."""
        return self._after(LEARNING_SELECT, policy, cursor, limit, closed_by)

    def _after(self, columns: str, policy: str, cursor: int, limit: int, closed_by: float | None,
               query=None) -> list:
        """The rows of `decisions_after` and `learning_rows`, read with `query` (`self.query`
        unless the backend reads them some faster way)."""
        query = query or self.query
        upper = None
        horizon = self.learning_horizon(policy)
        if closed_by is not None:
            rows = self.query(
                "SELECT seq FROM decisions WHERE policy=? AND seq>? AND closes_at>? ORDER BY seq LIMIT 1",
                (policy, cursor, closed_by))
            upper = rows[0][0] if rows else None
        if horizon is not None:
            upper = horizon + 1 if upper is None else min(upper, horizon + 1)
        if upper is None:
            return query(f"SELECT {columns} FROM decisions WHERE policy=? AND seq>? ORDER BY seq LIMIT ?",
                         (policy, cursor, limit))
        return query(f"SELECT {columns} FROM decisions WHERE policy=? AND seq>? AND seq<? ORDER BY seq LIMIT ?",
                     (policy, cursor, upper, limit))

    # -- outcomes ----------------------------------------------------------------------------

    def final_decisions(self, policy: str, after_seq: int, now: float, since: float | None, until: float | None,
                        limit: int) -> list[Decision]:
        """Up to `limit` decisions of the policy after `after_seq` whose reward window has closed by
        `now` (or that were learned), decided in [since, until), oldest first."""
        sql = (f"SELECT {DECISION_ROW} FROM decisions WHERE policy=? AND seq>?"
               f" AND (closes_at<=? OR {LEARNED_VERSION} IS NOT NULL)"
               + (" AND decided_at>=?" if since is not None else "")
               + (" AND decided_at<?" if until is not None else "")
               + " ORDER BY seq LIMIT ?")
        params: list = [policy, after_seq, now]
        params += [since] if since is not None else []
        params += [until] if until is not None else []
        return [Decision.from_row(dict(r)) for r in self.query(sql, tuple(params + [limit]))]

    def finality(self, policy: str, now: float, since: float | None = None, until: float | None = None) -> dict:
        """How many of the policy's decisions made in [since, until) are logged, how many are
        final at `now` (window closed, or learned), and when the next one becomes final (None
        when none is waiting): what a command says when it finds too few final decisions."""
        where = ("policy=?" + (" AND decided_at>=?" if since is not None else "")
                 + (" AND decided_at<?" if until is not None else ""))
        params = [policy] + [t for t in (since, until) if t is not None]
        row = self.query(
            f"SELECT count(*), sum(CASE WHEN closes_at<=? OR {LEARNED_VERSION} IS NOT NULL THEN 1 ELSE 0 END),"
            f" min(CASE WHEN closes_at>? AND {LEARNED_VERSION} IS NULL THEN closes_at END)"
            f" FROM decisions WHERE {where}", tuple([now, now] + params))[0]
        return {"decisions": row[0], "final": row[1] or 0, "next_final_at": row[2]}

    def import_logged(self, decisions: list[Decision], outcomes: list[Outcome]) -> None:
        """Decisions logged elsewhere (an imported data set) and their outcomes, in one transaction;
        ones already stored (by event id, and outcome id) are left as they are. Nothing is
        reserved: imported decisions name no person."""
        with self.write() as conn:
            conn.executemany(INSERT_DECISION + " ON CONFLICT DO NOTHING", [decision_values(d) for d in decisions])
            conn.executemany(INSERT_OUTCOME + " ON CONFLICT DO NOTHING", [outcome_values(o) for o in outcomes])

    def decision_count(self) -> int:
        """How many decisions the store holds, of every policy."""
        return self.query("SELECT count(*) FROM decisions")[0][0]

    def add_outcome(self, o: Outcome, person_key: str | None = None, signal: tuple[str, str | None] | None = None,
                    engaged: bool = False) -> bool:
        """Store an outcome. Returns False when the same outcome_id was already stored (the repeat
        is acknowledged, not counted again); raises OutcomeConflict when it differs.

        In the same transaction, for the decision's person: an explicit `signal` (kind, channel)
        is recorded, and an unsubscribe also withdraws that channel's consent; an engagement
        ends the run of contacts without engagement (suppression).
        """
        # one person's writes are serialised (their marker's ids then grow in commit order)
        with self.write(lock=f"person:{person_key}" if person_key else f"event:{o.event_id}") as conn:
            if o.outcome_id is not None:
                row = conn.execute("SELECT type, value FROM outcomes WHERE event_id=? AND outcome_id=?",
                                   (o.event_id, o.outcome_id)).fetchone()
                if row is not None:
                    if row[0] != o.type or row[1] != o.value:
                        raise OutcomeConflict(
                            f"outcome {o.outcome_id!r} was already reported as {row[0]!r} with value {row[1]}")
                    return False
            conn.execute(INSERT_OUTCOME, outcome_values(o))
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
                             "last_engaged_at=CASE WHEN people.last_engaged_at > excluded.last_engaged_at "
                             "THEN people.last_engaged_at ELSE excluded.last_engaged_at END",
                             (person_key, o.at))
        return True

    def outcomes(self, event_id: str) -> list[Outcome]:
        return [Outcome.from_row(r) for r in self.query("SELECT * FROM outcomes WHERE event_id=? ORDER BY id",
                                                        (event_id,))]

    def outcomes_for(self, event_ids: list[str]) -> dict[str, list[Outcome]]:
        out: dict[str, list[Outcome]] = {e: [] for e in event_ids}
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.query(f"SELECT * FROM outcomes WHERE event_id IN ({marks}) ORDER BY id", tuple(chunk)):
                out[r["event_id"]].append(Outcome.from_row(r))
        return out

    def policy_counts(self, policy: str, now: float) -> dict:
        row = self.query(
            "SELECT count(*), count(learned_version), sum(CASE WHEN closes_at > ? THEN 1 ELSE 0 END),"
            " sum(CASE WHEN arm = 'hold' THEN 1 ELSE 0 END) "
            f"FROM {DECISION_ROWS} WHERE policy=?", (now, policy))[0]
        outcomes = self.query("SELECT count(*) FROM outcomes o JOIN decisions d ON d.event_id=o.event_id "
                              "WHERE d.policy=?", (policy,))[0][0]
        return {"decisions": row[0], "learned": row[1] or 0, "pending": row[2] or 0,
                "holds": row[3] or 0, "outcomes": outcomes}
