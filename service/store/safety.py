"""A policy's safety switches: an operator's pause (and, with the circuit breaker, its trips) and
the record of every change with its reason and evidence.

The switch itself is a row of `arm_state` for the target `*` (the whole policy) with the status
`paused`, deleted on resume: the guardrails read it with the person's state, in the same
statement, so a pause counts from the next decision in every worker and replica, without a cache
to refresh. Each pause and resume is also appended to `safety_events`, which is never rewritten."""
from __future__ import annotations

import json

POLICY_TARGET = "*"  # arm_state's target for the whole policy (no arm or content id can be "*")


class SafetyTables:
    """`safety_events` and the policy-wide row of `arm_state`; mixed into `Store`."""

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
        """The latest pauses and resumes of the policy, newest first."""
        return [dict(r) | {"evidence": json.loads(r["evidence"] or "{}")} for r in self.query(
            "SELECT kind, target, reason, by_whom, evidence, at FROM safety_events WHERE policy=? "
            "ORDER BY id DESC LIMIT ?", (policy, limit))]
