"""What a Personalizer loop keeps beside its decision log (service/decision/personalizer.py,
docs/personalizer.md): documents by policy, kind and name (its service configuration, its
evaluations), a multi-slot event's slot decisions, and its log's extent."""
from __future__ import annotations

from service.store.decisions import DECISION_ROW
from service.store.records import Decision, dumps, loads


class PersonalizerTables:
    """Queries of the Personalizer compatibility surface; mixed into `Store`."""

    def personalizer_document(self, policy: str, kind: str, name: str) -> dict | None:
        rows = self.query("SELECT body FROM personalizer_documents WHERE policy=? AND kind=? AND name=?",
                          (policy, kind, name))
        return loads(rows[0][0]) if rows else None

    def put_personalizer_document(self, policy: str, kind: str, name: str, body: dict, at: float) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO personalizer_documents(policy, kind, name, body, at) VALUES (?,?,?,?,?)"
                         " ON CONFLICT(policy, kind, name) DO UPDATE SET body=excluded.body, at=excluded.at",
                         (policy, kind, name, dumps(body), at))

    def delete_personalizer_document(self, policy: str, kind: str, name: str) -> bool:
        with self.write() as conn:
            return conn.execute("DELETE FROM personalizer_documents WHERE policy=? AND kind=? AND name=?",
                                (policy, kind, name)).rowcount > 0

    def personalizer_documents(self, policy: str, kind: str) -> list[dict]:
        return [loads(r[0]) for r in self.query(
            "SELECT body FROM personalizer_documents WHERE policy=? AND kind=? ORDER BY at, name", (policy, kind))]

    def decisions_with_prefix(self, policy: str, prefix: str) -> list[Decision]:
        """The decisions of `policy` whose event id starts with `prefix` (a multi-slot event's slots)."""
        rows = self.query(f"SELECT {DECISION_ROW} FROM decisions WHERE policy=? AND substr(event_id, 1, ?)=?"
                          " ORDER BY seq", (policy, len(prefix), prefix))
        return [Decision.from_row(dict(r)) for r in rows]

    def log_extent(self, policy: str) -> dict:
        """The first and last decision times of a policy's log and how many it holds."""
        row = self.query("SELECT min(decided_at), max(decided_at), count(*) FROM decisions WHERE policy=?",
                         (policy,))[0]
        return {"first": row[0], "last": row[1], "count": row[2]}

    def mode_decisions(self, policy: str, mode: str, limit: int = 100000) -> list[Decision]:
        """The latest `limit` decisions of a policy in one mode (the apprentice's), oldest first."""
        rows = self.query(f"SELECT {DECISION_ROW} FROM decisions WHERE policy=? AND mode=? ORDER BY seq DESC LIMIT ?",
                          (policy, mode, limit))
        return [Decision.from_row(dict(r)) for r in reversed(rows)]
