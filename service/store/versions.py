"""The store's learning state: model versions (immutable rows), which version each policy
serves, the online learner's cursor, its lease (learner election), and the shared "now" of the
request clock."""
from __future__ import annotations

from service.store.records import dumps


class ModelTables:
    """Queries on model versions, the learner's cursor and lease, the request clock; mixed into
    the SQLite `Store`."""

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

    def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew a lease until `now` + `ttl` (wall-clock seconds: a lease is about
        processes, not about the decisions' clock); True when `holder` has it."""
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
