"""What the processes sharing a store coordinate through: the lease that elects one learner, and
the shared "now" of the request clock (`--clock request`)."""
from __future__ import annotations

import time


class CoordinationTables:
    """The learner's lease and the request clock; mixed into `Store`."""

    def clock_now(self) -> float | None:
        rows = self.query("SELECT now FROM clock WHERE id=1")
        return rows[0][0] if rows else None

    def clock_advance(self, ts: float) -> float:
        """Move the shared clock to `ts` if it is later; return the clock."""
        with self.write(lock=None) as conn:
            conn.execute("INSERT INTO clock(id, now) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET "
                         "now=CASE WHEN excluded.now > clock.now THEN excluded.now ELSE clock.now END", (ts,))
            return conn.execute("SELECT now FROM clock WHERE id=1").fetchone()[0]

    def acquire_lease(self, name: str, holder: str, ttl: float, now: float | None = None) -> bool:
        """Take or renew a lease until now + `ttl`; True when `holder` has it. Real seconds: a
        lease is about processes, not about the decisions' clock. `now` None: the store's own
        clock (`lease_now`), the same for every process that shares the store."""
        with self.write() as conn:
            now = self.lease_now(conn) if now is None else now
            row = conn.execute("SELECT holder, expires_at FROM leases WHERE name=?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            conn.execute("INSERT INTO leases(name, holder, expires_at) VALUES (?,?,?) ON CONFLICT(name) "
                         "DO UPDATE SET holder=excluded.holder, expires_at=excluded.expires_at",
                         (name, holder, now + ttl))
            return True

    def lease_left(self, name: str) -> tuple[str, float] | None:
        """(holder, seconds its lease has left: negative once expired) of the lease `name`, by
        the store's own clock; None when nobody took it (or it was released)."""
        with self.write(lock=None) as conn:
            now = self.lease_now(conn)
            row = conn.execute("SELECT holder, expires_at FROM leases WHERE name=?", (name,)).fetchone()
        return (row[0], row[1] - now) if row else None

    def lease_now(self, conn) -> float:
        """The time leases are measured by: SQLite's store is one machine, whose clock it is."""
        return time.time()

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))
