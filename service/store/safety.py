"""A policy's safety switches: an operator's pause, the circuit breaker's trips, and the record of
every change with its reason and evidence.

The switch itself is a row of `arm_state` for the target `*` (the whole policy) with the status
`paused`, deleted on resume: the guardrails read it with the person's state, in the same
statement, so a pause counts from the next decision in every worker and replica, without a cache
to refresh. Each pause and resume is also appended to `safety_events`, which is never rewritten."""
from __future__ import annotations

import json

POLICY_TARGET = "*"  # arm_state's target for the whole policy (no arm or content id can be "*")
# arm_state's targets of the circuit breaker (service/learning/breaker.py): `breaker:` and what it
# watches -- `content:<id>`, `channel:<name>` or `policy`. Beside, never instead of, the
# operator's own state of a content (retired stays retired when a breaker closes).
BREAKER = "breaker:"
REPORT = "contents_report"  # the safety event that stores a contents report (its evidence is the report)
# The learner's breaker reads (service/learning/breaker.py `Window`), named so that a test can
# check SQLite's plan: by time through decisions_decided (`policy||''` and `seq+0` keep the
# planner off the policy's seq index, which would read every decision of the policy), the new
# ones by seq, and the signals from the outcomes first (CROSS JOIN fixes SQLite's join order)
# through their partial index (schema.py's _v10). PostgreSQL plans the join its own way.
RECEIVED_SLACK = 86400.0  # how much earlier than its decision's time an outcome may be stamped received
SENDS_BY_TIME = ("SELECT seq, arm, decided_at FROM decisions WHERE decided_at>=? AND decided_at<? AND policy||''=? "
                 "AND seq+0<=? AND channel IS NOT NULL")
SENDS_BY_SEQ = "SELECT seq, arm, decided_at FROM decisions WHERE policy=? AND seq>? AND seq<=? AND channel IS NOT NULL"
SIGNALS = ("SELECT DISTINCT d.seq, d.arm, d.decided_at, o.type FROM outcomes o CROSS JOIN decisions d "
           "WHERE d.event_id=o.event_id AND o.type IN ('unsubscribe', 'complaint') AND o.received_at>=? "
           "AND d.policy=? AND d.decided_at>=? AND d.seq<=? AND d.channel IS NOT NULL")
_SIGNAL = "sum(CASE WHEN EXISTS (SELECT 1 FROM outcomes o WHERE o.event_id=d.event_id AND o.type='{}') THEN 1 ELSE 0 END)"


class SafetyTables:
    """`safety_events`, the policy-wide row of `arm_state` and the circuit breaker's rows; mixed
    into `Store`."""

    def set_paused(self, policy: str, paused: bool, reason: str, by: str | None, at: float) -> bool:
        """Pause or resume `policy`, recording why; False when it was already so (nothing written)."""
        with self.write(lock=f"pause:{policy}") as conn:
            row = conn.execute("SELECT status FROM arm_state WHERE policy=? AND target=?",
                               (policy, POLICY_TARGET)).fetchone()
            if (row is not None) == paused:
                return False
            if paused:
                conn.execute("INSERT INTO arm_state(policy, target, status, valid_from, valid_until, reason,"
                             " updated_at) VALUES (?,?,'paused',NULL,NULL,?,?)", (policy, POLICY_TARGET, reason, at))
            else:  # no row at all: a policy that is not paused costs the guardrails nothing
                conn.execute("DELETE FROM arm_state WHERE policy=? AND target=?", (policy, POLICY_TARGET))
            conn.execute("INSERT INTO safety_events(policy, kind, target, reason, by_whom, evidence, at) "
                         "VALUES (?,?,?,?,?,?,?)",
                         (policy, "pause" if paused else "resume", POLICY_TARGET, reason, by, json.dumps({}), at))
        return True

    def pause_state(self, policy: str) -> dict | None:
        """The policy's pause: {reason, since} while it is paused, else None."""
        rows = self.query("SELECT reason, updated_at FROM arm_state WHERE policy=? AND target=?",
                          (policy, POLICY_TARGET))
        return {"reason": rows[0][0], "since": rows[0][1]} if rows else None

    def safety_events(self, policy: str, limit: int = 20) -> list[dict]:
        """The latest pauses, resumes, circuit breaker changes and retirements of the policy, newest
        first (not the contents reports, which `latest_safety_event` reads)."""
        return [dict(r) | {"evidence": json.loads(r["evidence"] or "{}")} for r in self.query(
            "SELECT kind, target, reason, by_whom, evidence, at FROM safety_events WHERE policy=? "
            "AND kind<>? ORDER BY id DESC LIMIT ?", (policy, REPORT, limit))]

    # -- the circuit breaker -------------------------------------------------------------------

    def breaker_counts(self, policy: str, since: float) -> dict[str, tuple[int, int, int]]:
        """Per arm, of the sends decided at or after `since` (decisions with a channel): how many,
        how many of them brought an unsubscribe, how many a complaint. One pass over the window's
        decisions, each probing the outcomes' index."""
        rows = self.query(f"SELECT d.arm, count(*), {_SIGNAL.format('unsubscribe')}, {_SIGNAL.format('complaint')} "
                          "FROM decisions d WHERE d.policy=? AND d.decided_at>=? AND d.channel IS NOT NULL "
                          "GROUP BY d.arm", (policy, since))
        return {r[0]: (int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows}

    # The learner's breaker keeps its window's sends between checks (service/learning/breaker.py
    # `Window`): it reads them once by time, then only those logged since, and the few
    # unsubscribes and complaints of the window on each check.

    def committed_seq(self) -> int:
        """The highest seq below which every decision is committed (the learning horizon where the
        backend has one, else the last seq)."""
        horizon = self.learning_horizon("")
        return horizon if horizon is not None else self.query("SELECT coalesce(max(seq), 0) FROM decisions")[0][0]

    def breaker_sends_between(self, policy: str, since: float, until: float,
                              upto_seq: int) -> list[tuple[int, str, float]]:
        """(seq, arm, decided_at) of the policy's sends decided in [since, until) with seq at most
        `upto_seq`, read by time."""
        return [(int(r[0]), r[1], float(r[2])) for r in self.query(SENDS_BY_TIME, (since, until, policy, upto_seq))]

    def breaker_sends_after(self, policy: str, after_seq: int, upto_seq: int) -> list[tuple[int, str, float]]:
        """(seq, arm, decided_at) of the policy's sends with after_seq < seq <= upto_seq, read by seq."""
        return [(int(r[0]), r[1], float(r[2])) for r in self.query(SENDS_BY_SEQ, (policy, after_seq, upto_seq))]

    def breaker_signals(self, policy: str, since: float, upto_seq: int) -> list[tuple[str, float, str]]:
        """(arm, decided_at, type) once per send decided at or after `since` (seq at most
        `upto_seq`) and each of its signals (unsubscribe, complaint), however many outcomes
        report it; found by the time the outcomes were received, which is never before their
        decision by more than the clocks of two replicas differ (RECEIVED_SLACK)."""
        return [(r[1], float(r[2]), r[3]) for r in self.query(SIGNALS, (since - RECEIVED_SLACK, policy, since, upto_seq))]

    def breakers(self, policy: str) -> dict[str, dict]:
        """The policy's breakers that ever tripped, by what they watch (`content:<id>`,
        `channel:<name>`, `policy`): status (open or closed), since when, when probing starts
        (open and probing) and the detail every removal shows."""
        return {r["target"][len(BREAKER):]: {"status": r["status"], "since": r["valid_from"],
                                            "probe_from": r["valid_until"], "detail": r["reason"]}
                for r in self.query("SELECT target, status, valid_from, valid_until, reason FROM arm_state "
                                    "WHERE policy=? AND target LIKE 'breaker:%'", (policy,))}

    def set_breaker(self, policy: str, target: str, status: str, probe_from: float | None, detail: str,
                    kind: str, evidence: dict, by: str | None, at: float) -> None:
        """Open or close the breaker watching `target` as of `at`, and record the change (`kind`:
        trip, reopen, close, reset) with its evidence, in one transaction."""
        with self.write(lock=f"breaker:{policy}") as conn:
            conn.execute("INSERT INTO arm_state(policy, target, status, valid_from, valid_until, reason, updated_at) "
                         "VALUES (?,?,?,?,?,?,?) ON CONFLICT(policy, target) DO UPDATE SET status=excluded.status, "
                         "valid_from=excluded.valid_from, valid_until=excluded.valid_until, reason=excluded.reason, "
                         "updated_at=excluded.updated_at", (policy, BREAKER + target, status, at, probe_from, detail, at))
            conn.execute("INSERT INTO safety_events(policy, kind, target, reason, by_whom, evidence, at) "
                         "VALUES (?,?,?,?,?,?,?)", (policy, kind, target, detail, by, json.dumps(evidence), at))

    def add_safety_event(self, policy: str, kind: str, target: str, reason: str, by: str | None, evidence: dict,
                         at: float) -> None:
        with self.write(lock=None) as conn:
            conn.execute("INSERT INTO safety_events(policy, kind, target, reason, by_whom, evidence, at) "
                         "VALUES (?,?,?,?,?,?,?)", (policy, kind, target, reason, by, json.dumps(evidence), at))

    def latest_safety_event(self, policy: str, kind: str) -> dict | None:
        rows = self.query("SELECT kind, target, reason, by_whom, evidence, at FROM safety_events WHERE policy=? "
                          "AND kind=? ORDER BY id DESC LIMIT 1", (policy, kind))
        return dict(rows[0]) | {"evidence": json.loads(rows[0]["evidence"] or "{}")} if rows else None
