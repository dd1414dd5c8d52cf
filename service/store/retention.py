"""What keeps the store's size bounded: pruning old model versions and old decisions, without ever
removing what serving, rolling back or learning still needs."""
from __future__ import annotations

from service.store.campaign import REQUEST_TTL

# A decision may go once its reward window has closed and, for a policy the learner serves, once
# it was learned (or lies behind the learner's cursor); the newest decision always stays, so that
# seq keeps growing (SQLite would hand a deleted last seq out again).
_PRUNABLE = (
    "decided_at < ? AND closes_at <= ? AND seq < (SELECT max(seq) FROM decisions)"
    " AND (EXISTS (SELECT 1 FROM decision_rewards r WHERE r.seq = decisions.seq AND r.learned_version IS NOT NULL)"
    " OR seq <= coalesce("
    "(SELECT learner_cursor FROM policy_state ps WHERE ps.policy = decisions.policy), ?))")


class RetentionTables:
    """Pruning; mixed into `Store`."""

    def protected_versions(self, policy: str) -> set[int]:
        """The versions pruning never removes: the active one, the shadow candidate, the one a
        rollback returns to (the latest activation's previous), the one the revert guard would
        restore."""
        keep = set()
        for sql in ("SELECT active_version FROM policy_state WHERE policy=?",
                    "SELECT version FROM shadow_config WHERE policy=?",
                    "SELECT previous FROM activations WHERE policy=? ORDER BY id DESC LIMIT 1",
                    "SELECT previous FROM guard_watches WHERE policy=? AND status='watching'"):
            keep.update(r[0] for r in self.query(sql, (policy,)) if r[0] is not None)
        return keep

    def prune_versions(self, keep: int) -> dict[str, list[int]]:
        """Remove every version but the newest `keep` of each policy and the protected ones (with
        their stored evaluations and shadow scores); the versions removed, by policy."""
        removed: dict[str, list[int]] = {}
        with self.write() as conn:
            for (policy,) in conn.execute("SELECT DISTINCT policy FROM model_versions").fetchall():
                versions = [r[0] for r in conn.execute(
                    "SELECT version FROM model_versions WHERE policy=? ORDER BY version DESC", (policy,)).fetchall()]
                protected = self.protected_versions(policy)
                gone = [v for v in versions[keep:] if v not in protected]
                for table in ("model_versions", "model_evaluations", "shadow_decisions"):
                    conn.executemany(f"DELETE FROM {table} WHERE policy=? AND version=?", [(policy, v) for v in gone])
                if gone:
                    removed[policy] = sorted(gone)
        return removed

    def prune_decisions(self, before: float, now: float, chunk: int = 5000, policy: str | None = None) -> dict[str, int]:
        """Remove the decisions made before `before` that nothing needs any more (see
        `_PRUNABLE`), with their outcomes, delivery reports and shadow scores; how many rows of
        each; and every decide's request id older than the idempotency window (campaign.py), which
        nothing reads any more. `chunk` decisions per transaction, so that serving waits for none
        of them long. With `policy`, that policy's decisions only (a Personalizer loop's DELETE /logs)."""
        counts = {"outcomes": 0, "deliveries": 0, "shadow_decisions": 0, "decisions": 0}
        with self.write() as conn:
            counts["requests"] = conn.execute("DELETE FROM requests WHERE at < ?", (now - REQUEST_TTL,)).rowcount
        while True:
            with self.write() as conn:
                mine = " AND policy = ?" if policy is not None else ""
                rows = conn.execute(f"SELECT seq, event_id FROM decisions WHERE {_PRUNABLE}{mine} ORDER BY seq LIMIT ?",
                                    (before, now, 2 ** 62, *((policy,) if policy is not None else ()), chunk)).fetchall()
                if not rows:
                    return counts
                events = [(r[1],) for r in rows]
                for table in ("outcomes", "deliveries", "shadow_decisions"):
                    counts[table] += conn.executemany(f"DELETE FROM {table} WHERE event_id=?", events).rowcount
                seqs = [(r[0],) for r in rows]
                conn.executemany("DELETE FROM decision_rewards WHERE seq=?", seqs)
                counts["decisions"] += conn.executemany("DELETE FROM decisions WHERE seq=?", seqs).rowcount
