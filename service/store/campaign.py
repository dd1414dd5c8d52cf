"""What campaign tools need of the store (docs/integration.md): a decide's request id and the answer
it got, so that a retry is the same decision; and delivery reports, which release what a decision
reserved when its message never reached the person.

A request id is claimed by the transaction that logs its decision (each backend's
`commit_decision`, with a `RequestClaim`), so two replicas deciding the same request at the same
moment log one decision: the other's transaction is undone whole and it answers with the first's.
A claim is kept `REQUEST_TTL` seconds; after that the same id is a new request.
"""
from __future__ import annotations

from service.store.records import UNDELIVERED, DeliveryConflict, dumps, loads

REQUEST_TTL = 86400.0  # seconds a decide's request id is remembered


class CampaignTables:
    """Queries on request ids and delivery reports; mixed into `Store`."""

    def request(self, request_id: str, since: float) -> dict | None:
        """The decision a request id claimed at or after `since`: policy, event_id, request_hash,
        response (the answer's JSON text) and at; None when there is none that recent."""
        rows = self.query("SELECT policy, event_id, request_hash, response, at FROM requests"
                          " WHERE request_id=? AND at>=?", (request_id, since))
        return dict(rows[0]) if rows else None

    def record_delivery(self, event_id: str, person_key: str | None, status: str, reason: str | None, at: float,
                        decided_at: float, budget_day: str | None, policy: str) -> bool:
        """Record a delivery report; False when it repeats the status already recorded (nothing
        changes). A first report may say anything; a `sent` may later become `bounced` or
        `failed` (the provider accepted it, then it bounced); anything else contradicts what was
        reported and raises DeliveryConflict.

        A report that the message never reached the person (not_sent, bounced, failed) releases,
        in the same transaction, what its decision reserved: its contact (caps, the minimum gap),
        its share of the policy's daily budget (`budget_day`: the day it was spent on, if it was)
        and its count towards suppression (unless an engagement has ended that run since). It
        serialises with the person's decisions on their lock: a decision reads the state before
        or after the release, never half of it, and the state before is only ever stricter."""
        with self.write(lock=f"person:{person_key}" if person_key else f"event:{event_id}") as conn:
            row = conn.execute("SELECT delivery FROM decisions WHERE event_id=?", (event_id,)).fetchone()
            current = row[0] if row else None
            if current == status:
                return False
            if current is not None and not (current == "sent" and status in ("bounced", "failed")):
                raise DeliveryConflict(f"the delivery of {event_id} was reported as {current!r} already; "
                                       f"it cannot become {status!r}")
            release = status in UNDELIVERED
            conn.execute("INSERT INTO deliveries(event_id, status, reason, at, released) VALUES (?,?,?,?,?)",
                         (event_id, status, reason, at, int(release)))
            conn.execute("UPDATE decisions SET delivery=? WHERE event_id=?", (status, event_id))
            if release:
                conn.execute("DELETE FROM contacts WHERE event_id=? AND policy=?", (event_id, policy))
                if budget_day is not None:
                    conn.execute("UPDATE budget SET used=used-1 WHERE policy=? AND day=? AND used>0",
                                 (policy, budget_day))
                if person_key is not None:
                    conn.execute("UPDATE people SET unengaged=unengaged-1 WHERE person_key=? AND unengaged>0"
                                 " AND (last_engaged_at IS NULL OR last_engaged_at<=?)", (person_key, decided_at))
        return True

    def deliveries(self, event_id: str) -> list[dict]:
        """Every delivery report of a decision, oldest first."""
        return [dict(r) for r in self.query(
            "SELECT status, reason, at, released FROM deliveries WHERE event_id=? ORDER BY id", (event_id,))]

    # -- policy files reloaded at runtime (service/policy/reload.py) ---------------------------

    def publish_policy(self, name: str, record: dict) -> None:
        """The text of a policy file a reload validated, with its hash, when, by whom and why:
        every worker of every replica serves it from its next request."""
        with self.write() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                         (f"policy:{name}", dumps(record)))

    def published_policies(self) -> dict[str, dict]:
        return {r[0].removeprefix("policy:"): loads(r[1])
                for r in self.query("SELECT key, value FROM meta WHERE key LIKE 'policy:%'")}

    def forget_published_policies(self, names: list[str]) -> None:
        """A server starting from its files: what earlier reloads published no longer counts."""
        with self.write() as conn:
            conn.executemany("DELETE FROM meta WHERE key=?", [(f"policy:{n}",) for n in names])

    # -- a policy's live content catalog (service/policy/catalog.py) ---------------------------

    def add_catalog_change(self, policy: str, content_id: str, action: str, content: dict | None, at: float,
                           source: str | None, reason: str | None) -> int:
        """Record a content put (`content`: its fields) or deleted; the change's number, which
        only grows: every process compares the latest with the one it serves."""
        with self.write() as conn:
            conn.execute("INSERT INTO catalog_changes(policy, content_id, action, content, at, source, reason)"
                         " VALUES (?,?,?,?,?,?,?)", (policy, content_id, action,
                                                     None if content is None else dumps(content), at, source, reason))
            return conn.execute("SELECT max(id) FROM catalog_changes WHERE policy=?", (policy,)).fetchone()[0]

    def catalog_changes(self, policy: str) -> list[dict]:
        """Every catalog change of a policy, in order."""
        return [dict(r) | {"content": loads(r["content"]) if r["content"] else None} for r in self.query(
            "SELECT id, content_id, action, content, at, source, reason FROM catalog_changes WHERE policy=?"
            " ORDER BY id", (policy,))]

    def catalog_revisions(self) -> dict[str, int]:
        """Each policy's latest catalog change."""
        return {r[0]: r[1] for r in self.query("SELECT policy, max(id) FROM catalog_changes GROUP BY policy")}
