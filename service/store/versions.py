"""The store's model versions: immutable rows, which version each policy serves, the online
learner's cursor; and what the version registry keeps beside them (service/learning/registry.py):
activations with their reasons, stored evaluations, the shadow candidate and its scores, the
revert guard's watches."""
from __future__ import annotations

import json

from service.store.records import AlreadyActive, NoSuchVersion, dumps


# one decision's reward (an upsert: a decision final but learned by no version may be learned later)
MARK_LEARNED = ("INSERT INTO decision_rewards(seq, reward, learned_version) SELECT seq, ?, ? FROM decisions WHERE seq=?"
                " ON CONFLICT(seq) DO UPDATE SET reward=excluded.reward, learned_version=excluded.learned_version"
                " WHERE decision_rewards.learned_version IS NULL")


class ModelTables:
    """Queries on model versions and the registry's tables; mixed into `Store`."""

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

    def learning_status(self, policy: str) -> dict | None:
        """What /metrics reports of a policy's learning: its active version and when that version
        was created, and when the reward window of the first decision the learner has not read
        yet closes (None when it has read them all). Two index lookups, whatever the backlog."""
        rows = self.query("SELECT s.active_version, v.created_at, s.learner_cursor FROM policy_state s "
                          "LEFT JOIN model_versions v ON v.policy=s.policy AND v.version=s.active_version "
                          "WHERE s.policy=?", (policy,))
        if not rows:
            return None
        version, created_at, cursor = rows[0]
        first = self.query("SELECT closes_at FROM decisions WHERE policy=? AND seq>? ORDER BY seq LIMIT 1",
                           (policy, cursor or 0))
        return {"active_version": version, "created_at": created_at, "first_unlearned_closes_at":
                first[0][0] if first else None}

    def ensure_initial_version(self, policy: str, model: bytes, vw_args: str, at: float | None) -> int:
        """Version 1, an untrained model, so that every decision names a model version. `at`
        None: the clock has no time yet (`--clock request` before its first request); the first
        time it gets fills it in (`fill_unknown_times`)."""
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

    def fill_unknown_times(self, at: float) -> None:
        """Give the versions and activations recorded before the clock had a time the first time
        it has."""
        with self.write() as conn:
            conn.execute("UPDATE model_versions SET created_at=? WHERE created_at IS NULL", (at,))
            conn.execute("UPDATE activations SET at=? WHERE at IS NULL", (at,))

    def publish_learned(self, policy: str, parent: int, model: bytes | None, vw_args: str, at: float,
                        learned: list[tuple[int, float]], cursor: int, note: dict) -> int | None:
        """Publish a version learned online and advance the learner's cursor, atomically.
        `model` None: nothing was learned into the model, so no version is published; the
        decisions' rewards and the cursor are recorded (the decisions stay final, not learned)
        and `parent` is returned.

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
            if model is None:  # the model learned nothing (no decision maps to the policy's arms now)
                marked = self._mark_learned(conn, None, learned)
                if marked != len(learned):
                    raise RuntimeError(f"{len(learned) - marked} of the decisions up to seq {cursor} were already learned")
                conn.execute("UPDATE policy_state SET learner_cursor=? WHERE policy=?", (cursor, policy))
                return parent
            version = conn.execute("SELECT max(version) FROM model_versions WHERE policy=?",
                                   (policy,)).fetchone()[0] + 1
            conn.execute("INSERT INTO model_versions(policy, version, parent, source, created_at, model, vw_args,"
                         " n_learned, learned_through_seq, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (policy, version, parent, "online", at, model, vw_args, len(learned), cursor,
                          dumps(note)))
            updated = self._mark_learned(conn, version, learned)
            if updated != len(learned):  # the rollback leaves every decision as it was
                raise RuntimeError(f"{len(learned) - updated} of the decisions up to seq {cursor} "
                                   f"were already learned")
            conn.execute("UPDATE policy_state SET active_version=?, learner_cursor=? WHERE policy=?",
                         (version, cursor, policy))
            conn.execute("INSERT INTO activations(policy, version, previous, reason, at) VALUES (?,?,?,?,?)",
                         (policy, version, parent, f"online learner: {len(learned)} decisions", at))
            return version

    def _mark_learned(self, conn, version: int | None, learned: list[tuple[int, float]]) -> int:
        """Record each (seq, reward) as learned by `version` (None: final, learned by none),
        inside the caller's transaction, if the decision is stored and was not learned before;
        how many decisions were marked."""
        return conn.executemany(MARK_LEARNED, [(reward, version, seq) for seq, reward in learned]).rowcount

    def versions(self, policy: str) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT policy, version, parent, source, created_at, vw_args, n_learned, learned_through_seq, note "
            "FROM model_versions WHERE policy=? ORDER BY version", (policy,))]

    # -- the policies the store was written with -------------------------------------------------

    def record_policy(self, policy: str, fingerprint: str, spec: str, path: str | None, at: float | None) -> bool:
        """Append the policy's fingerprint, spec and file unless the latest recorded is the same;
        whether a row was added."""
        with self.write() as conn:
            row = conn.execute("SELECT fingerprint, path FROM policy_specs WHERE policy=? ORDER BY id DESC LIMIT 1",
                               (policy,)).fetchone()
            if row is not None and row[0] == fingerprint and row[1] == path:
                return False
            conn.execute("INSERT INTO policy_specs(policy, fingerprint, spec, path, recorded_at) VALUES (?,?,?,?,?)",
                         (policy, fingerprint, spec, path, at))
            return True

    def recorded_policy(self, policy: str) -> dict | None:
        """The latest recorded spec of the policy: {fingerprint, spec (JSON text), path, recorded_at}."""
        rows = self.query("SELECT fingerprint, spec, path, recorded_at FROM policy_specs WHERE policy=?"
                          " ORDER BY id DESC LIMIT 1", (policy,))
        return dict(rows[0]) if rows else None

    def recorded_policies(self) -> list[str]:
        """The names of every policy the store was written with."""
        return [r[0] for r in self.query("SELECT DISTINCT policy FROM policy_specs ORDER BY policy")]

    # -- the registry: activations, evaluations, shadow, guard ----------------------------------

    def add_version(self, policy: str, model: bytes, vw_args: str, source: str, at: float, note: dict,
                    parent: int | None = None) -> int:
        """A new immutable version, not active; its parent defaults to the version active now."""
        with self.write() as conn:
            if parent is None:
                row = conn.execute("SELECT active_version FROM policy_state WHERE policy=?", (policy,)).fetchone()
                parent = row[0] if row else None
            version = (conn.execute("SELECT max(version) FROM model_versions WHERE policy=?",
                                    (policy,)).fetchone()[0] or 0) + 1
            conn.execute("INSERT INTO model_versions(policy, version, parent, source, created_at, model, vw_args,"
                         " n_learned, learned_through_seq, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (policy, version, parent, source, at, model, vw_args, note.get("n_learned", 0),
                          None, json.dumps(note)))
        return version

    def same_version(self, policy: str, model: bytes, vw_args: str, source: str) -> int | None:
        """The latest version of `source` with exactly this model and these arguments, if any."""
        rows = self.query("SELECT max(version) FROM model_versions WHERE policy=? AND source=? AND vw_args=?"
                          " AND model=?", (policy, source, vw_args, model))
        return rows[0][0] if rows else None

    def activate(self, policy: str, version: int, reason: str, at: float, watch: bool) -> int | None:
        """Make `version` active and record why, in one transaction; return the version it
        replaced. Any open guard watch of the policy is superseded; with `watch`, one opens for
        this version from the next decision on."""
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM model_versions WHERE policy=? AND version=?",
                            (policy, version)).fetchone() is None:
                raise NoSuchVersion(policy, version)
            row = conn.execute("SELECT active_version FROM policy_state WHERE policy=?", (policy,)).fetchone()
            previous = row[0] if row else None
            if previous == version:
                raise AlreadyActive(policy, version)
            if row is None:
                conn.execute("INSERT INTO policy_state(policy, active_version, learner_cursor) VALUES (?,?,0)",
                             (policy, version))
            else:
                conn.execute("UPDATE policy_state SET active_version=? WHERE policy=?", (version, policy))
            conn.execute("INSERT INTO activations(policy, version, previous, reason, at) VALUES (?,?,?,?,?)",
                         (policy, version, previous, reason, at))
            conn.execute("UPDATE guard_watches SET status='superseded', closed_at=? WHERE policy=? AND status='watching'",
                         (at, policy))
            if watch:
                seq = conn.execute("SELECT coalesce(max(seq), 0) FROM decisions").fetchone()[0]
                conn.execute("INSERT INTO guard_watches(policy, version, previous, started_seq, status, at)"
                             " VALUES (?,?,?,?,'watching',?)", (policy, version, previous, seq, at))
        return previous

    def activations(self, policy: str, limit: int = 20) -> list[dict]:
        """The policy's latest activations, newest first."""
        return [dict(r) for r in self.query(
            "SELECT id, version, previous, reason, at FROM activations WHERE policy=? ORDER BY id DESC LIMIT ?",
            (policy, limit))]

    def version_activations(self, policy: str, version: int) -> list[dict]:
        """Every activation to or from `version`, oldest first."""
        return [dict(r) for r in self.query(
            "SELECT version, previous, reason, at FROM activations WHERE policy=? AND (version=? OR previous=?)"
            " ORDER BY id", (policy, version, version))]

    def add_evaluation(self, policy: str, version: int, evaluation: dict, at: float) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO model_evaluations(policy, version, at, evaluation) VALUES (?,?,?,?)",
                         (policy, version, at, json.dumps(evaluation, default=float)))

    def latest_evaluation(self, policy: str, version: int) -> dict | None:
        rows = self.query("SELECT evaluation, at FROM model_evaluations WHERE policy=? AND version=? "
                          "ORDER BY id DESC LIMIT 1", (policy, version))
        return json.loads(rows[0][0]) | {"stored_at": rows[0][1]} if rows else None

    def evaluation_counts(self, policy: str) -> dict[int, int]:
        """How many evaluations are stored for each version of the policy."""
        return {r[0]: r[1] for r in self.query(
            "SELECT version, count(*) FROM model_evaluations WHERE policy=? GROUP BY version", (policy,))}

    def set_shadow(self, policy: str, version: int | None, at: float) -> None:
        with self.write() as conn:
            conn.execute("INSERT INTO shadow_config(policy, version, since) VALUES (?,?,?) ON CONFLICT(policy) "
                         "DO UPDATE SET version=excluded.version, since=excluded.since", (policy, version, at))

    def shadow_version(self, policy: str) -> int | None:
        rows = self.query("SELECT version FROM shadow_config WHERE policy=?", (policy,))
        return rows[0][0] if rows else None

    def add_shadow_decision(self, event_id: str, policy: str, version: int, arm: str, probability: float,
                            probabilities: list[float], at: float) -> None:
        with self.write(lock=None) as conn:
            conn.execute("INSERT INTO shadow_decisions(event_id, policy, version, arm, probability,"
                         " probabilities, at) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                         (event_id, policy, version, arm, probability, json.dumps(probabilities), at))

    def shadow_decisions(self, policy: str) -> dict[str, dict]:
        """The shadow candidates' scores of the policy's decisions, by event id."""
        out = {}
        for r in self.query("SELECT * FROM shadow_decisions WHERE policy=?", (policy,)):
            row = dict(r)
            row["probabilities"] = json.loads(row["probabilities"])
            out[row["event_id"]] = row
        return out

    def open_guard_watch(self, policy: str) -> dict | None:
        rows = self.query("SELECT * FROM guard_watches WHERE policy=? AND status='watching' ORDER BY id DESC LIMIT 1",
                          (policy,))
        return dict(rows[0]) if rows else None

    def close_guard_watch(self, watch_id: int, status: str, reason: str, at: float) -> None:
        with self.write() as conn:
            conn.execute("UPDATE guard_watches SET status=?, reason=?, closed_at=? WHERE id=?",
                         (status, reason, at, watch_id))

    def decisions_after_seq(self, policy: str, seq: int, limit: int) -> list[tuple[str, float]]:
        """(event id, closes_at) of the policy's first `limit` decisions after `seq`."""
        return [(r[0], r[1]) for r in self.query(
            "SELECT event_id, closes_at FROM decisions WHERE policy=? AND seq>? ORDER BY seq LIMIT ?",
            (policy, seq, limit))]
