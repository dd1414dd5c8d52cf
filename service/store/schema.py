"""The SQLite store's schema and its versioned migrations, applied in order when a store opens
(or by `tactful db upgrade`): every table, index and trigger, those of the model-version registry
included (service/learning/registry.py). The PostgreSQL backend has the same versions
(pg_schema.py). Changes are additive -- a new table or index, never a changed column -- with one
exception: version 11 moves the learned reward out of `decisions` into `decision_rewards`.

Version 2 is the baseline: `create` makes every table of that version and completes a file an
earlier Tactful wrote (version 1 or none recorded), so it is safe on any older file."""
from __future__ import annotations

import sqlite3
from typing import Callable

import sqlite_utils

from service.store.records import StoreError

# the same text on both backends (pg_schema.py); a query must name `type IN` these two to use it
SIGNALS_INDEX = ("CREATE INDEX IF NOT EXISTS outcomes_signal ON outcomes(received_at) "
                 "WHERE type IN ('unsubscribe', 'complaint')")


def _v3(db: sqlite_utils.Database) -> None:
    """`tactful prune` finds old decisions by time."""
    db.execute("CREATE INDEX IF NOT EXISTS decisions_decided ON decisions(decided_at)")


def _v4(db: sqlite_utils.Database) -> None:
    """API keys, by the SHA-256 hash of each (service/store/keys.py); names unique among the
    keys not revoked."""
    db.execute("CREATE TABLE IF NOT EXISTS api_keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
               " key_hash TEXT NOT NULL, scopes TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL,"
               " last_used_at REAL)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS api_keys_hash ON api_keys(key_hash)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL")


def _v5(db: sqlite_utils.Database) -> None:
    """Pauses, resumes, circuit breaker changes and contents reports of a policy, with their
    reasons and evidence (service/store/safety.py)."""
    db.execute("CREATE TABLE IF NOT EXISTS safety_events (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
               " kind TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, by_whom TEXT, evidence TEXT,"
               " at REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS safety_events_policy ON safety_events(policy, id)")


def _v6(db: sqlite_utils.Database) -> None:
    """The policies the store was written with: each policy's name, the fingerprint of its
    parsed file, the file and the spec, appended when they change (service/policy/stored.py), so
    that offline commands notice other policy files than the service used."""
    db.execute("CREATE TABLE IF NOT EXISTS policy_specs (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
               " fingerprint TEXT NOT NULL, spec TEXT NOT NULL, path TEXT, recorded_at REAL)")
    db.execute("CREATE INDEX IF NOT EXISTS policy_specs_policy ON policy_specs(policy, id)")


def _v7(db: sqlite_utils.Database) -> None:
    """Campaign tools (docs/integration.md): idempotent decides, by the caller's request id, with
    the answer they got (kept 24 hours: service/store/campaign.py); delivery reports, each kept
    for audit, and the decision's latest delivery status, which the learner and export read."""
    db.execute("CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, policy TEXT NOT NULL,"
               " person_key TEXT, event_id TEXT NOT NULL, request_hash TEXT NOT NULL, response TEXT NOT NULL,"
               " at REAL NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS requests_person ON requests(person_key)")
    db.execute("CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL,"
               " status TEXT NOT NULL, reason TEXT, at REAL NOT NULL, released INTEGER NOT NULL)")
    db.execute("CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id)")
    if "delivery" not in db["decisions"].columns_dict:
        db.execute("ALTER TABLE decisions ADD COLUMN delivery TEXT")


def _v8(db: sqlite_utils.Database) -> None:
    """A policy's live content catalog: every change (a content put or deleted), with who, when
    and why; the current catalog is the policy file's contents with these applied in order
    (service/policy/catalog.py)."""
    db.execute("CREATE TABLE IF NOT EXISTS catalog_changes (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
               " content_id TEXT NOT NULL, action TEXT NOT NULL, content TEXT, at REAL NOT NULL, source TEXT,"
               " reason TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS catalog_changes_policy ON catalog_changes(policy, id)")


def _v9(db: sqlite_utils.Database) -> None:
    """A Personalizer loop's documents (service/store/personalizer.py): its service configuration
    and its evaluations, JSON each, by policy, kind and name."""
    db.execute("CREATE TABLE IF NOT EXISTS personalizer_documents (policy TEXT NOT NULL, kind TEXT NOT NULL,"
               " name TEXT NOT NULL, body TEXT NOT NULL, at REAL, PRIMARY KEY (policy, kind, name))")


def _v10(db: sqlite_utils.Database) -> None:
    """The circuit breaker finds the unsubscribes and complaints of its window by when they were
    received (service/store/safety.py `breaker_signals`): the few outcomes that count against."""
    db.execute(SIGNALS_INDEX)


def _v11(db: sqlite_utils.Database) -> None:
    """The learned rewards in a narrow table of their own, out of `decisions`: recording the
    reward of a learned decision rewrote its whole row (about 1.4 KB on PostgreSQL, where every
    index gained an entry for the new row version: 36% of a learner step's time, and the
    learner's target missed); a row of three numbers costs a tenth of that. Queries that show
    rewards look each one up by its key (`DECISION_ROW`, decisions.py). A row's
    `learned_version` NULL: the decision is final and its reward recorded, but no version learned
    it (the policy's arms no longer matched it)."""
    db.execute("CREATE TABLE IF NOT EXISTS decision_rewards (seq INTEGER PRIMARY KEY, reward REAL,"
               " learned_version INTEGER)")
    columns = db["decisions"].columns_dict
    if {"reward", "learned_version"} & set(columns) and sqlite3.sqlite_version_info < (3, 35, 0):
        raise StoreError(f"schema version 11 drops two columns, which needs SQLite 3.35 or newer; this Python"
                         f" runs SQLite {sqlite3.sqlite_version}: run Tactful on a Python built with a newer"
                         " SQLite (the Docker image's is), or on PostgreSQL")
    if "learned_version" in columns:
        db.execute("INSERT OR IGNORE INTO decision_rewards(seq, reward, learned_version) SELECT seq, reward,"
                   " learned_version FROM decisions WHERE reward IS NOT NULL OR learned_version IS NOT NULL")
        db.execute("ALTER TABLE decisions DROP COLUMN learned_version")
    if "reward" in columns:
        db.execute("ALTER TABLE decisions DROP COLUMN reward")


def create(db: sqlite_utils.Database) -> None:
    """Every table, index and trigger of version 2, inside the caller's write transaction."""
    db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db["clock"].create({"id": int, "now": float}, pk="id", if_not_exists=True)
    db["decisions"].create({
        "seq": int, "event_id": str, "policy": str, "person_key": str, "decided_at": float,
        "closes_at": float, "model_version": int, "mode": str, "arm": str, "probability": float,
        "send_at": float, "channel": str, "allowed": str, "probabilities": str, "context": str,
        "history": str, "removed": str, "consistency_key": str, "reward": float,
        "learned_version": int,
    }, pk="seq", not_null={"event_id", "policy", "decided_at", "closes_at", "mode", "arm",
                           "probability", "allowed", "probabilities", "context", "history",
                           "removed"}, if_not_exists=True)
    db["outcomes"].create({
        "id": int, "event_id": str, "outcome_id": str, "type": str, "value": float, "at": float,
        "received_at": float, "counted": int,
    }, pk="id", not_null={"event_id", "type", "value", "at"}, if_not_exists=True)
    db["contacts"].create({"id": int, "person_key": str, "channel": str, "at": float,
                           "event_id": str, "policy": str}, pk="id", if_not_exists=True)
    db["consent"].create({"id": int, "person_key": str, "channel": str, "granted": int,
                          "source": str, "at": float}, pk="id", if_not_exists=True)
    db["model_versions"].create({
        "policy": str, "version": int, "parent": int, "source": str, "created_at": float,
        "model": bytes, "vw_args": str, "n_learned": int, "learned_through_seq": int, "note": str,
    }, pk=("policy", "version"), if_not_exists=True)
    db["policy_state"].create({"policy": str, "active_version": int, "learner_cursor": int},
                              pk="policy", if_not_exists=True)
    db["activations"].create({"id": int, "policy": str, "version": int, "previous": int,
                              "reason": str, "at": float}, pk="id", if_not_exists=True)
    db["leases"].create({"name": str, "holder": str, "expires_at": float}, pk="name",
                        if_not_exists=True)
    db["people"].create({"person_key": str, "preferences": str, "preferences_at": float,
                         "unengaged": int, "last_engaged_at": float, "rev": int},
                        pk="person_key", not_null={"unengaged", "rev"}, defaults={"unengaged": 0, "rev": 0},
                        if_not_exists=True)
    # explicit negative signals (unsubscribe: one channel, complaint: every channel)
    db["signals"].create({"id": int, "person_key": str, "kind": str, "channel": str, "at": float,
                          "event_id": str}, pk="id", if_not_exists=True)
    # runtime state of an arm or of every arm of a content: status and validity window
    db["arm_state"].create({"policy": str, "target": str, "status": str, "valid_from": float,
                            "valid_until": float, "reason": str, "updated_at": float},
                           pk=("policy", "target"), if_not_exists=True)
    db["budget"].create({"policy": str, "day": str, "used": int}, pk=("policy", "day"), if_not_exists=True)
    # Erasure unlinks decisions and pruning keeps the newest one, so seq only grows: the learner
    # cursor is sound.
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS decisions_event ON decisions(event_id)")
    db.execute("CREATE INDEX IF NOT EXISTS decisions_policy_seq ON decisions(policy, seq)")
    db.execute("CREATE INDEX IF NOT EXISTS decisions_person ON decisions(person_key, decided_at)")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS outcomes_key ON outcomes(event_id, outcome_id)")
    db.execute("CREATE INDEX IF NOT EXISTS outcomes_event ON outcomes(event_id)")
    db.execute("CREATE INDEX IF NOT EXISTS contacts_person ON contacts(person_key, at)")
    db.execute("CREATE INDEX IF NOT EXISTS consent_person ON consent(person_key, channel, id)")
    db.execute("CREATE INDEX IF NOT EXISTS signals_person ON signals(person_key, at)")
    # a decision that sends reserves its contact and counts towards suppression, in the
    # statement that logs it (commit_decision)
    db.execute("CREATE TRIGGER IF NOT EXISTS decision_reserves_contact AFTER INSERT ON decisions"
               " WHEN NEW.channel IS NOT NULL AND NEW.person_key IS NOT NULL BEGIN"
               " INSERT INTO contacts(person_key, channel, at, event_id, policy)"
               " VALUES (NEW.person_key, NEW.channel, NEW.send_at, NEW.event_id, NEW.policy);"
               " INSERT INTO people(person_key, unengaged, rev) VALUES (NEW.person_key, 1, 0)"
               " ON CONFLICT(person_key) DO UPDATE SET unengaged=unengaged+1; END")
    # the model-version registry: evaluations, the shadow candidate and its scores, the revert guard
    db.execute("CREATE TABLE IF NOT EXISTS model_evaluations (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
               " version INTEGER NOT NULL, at REAL NOT NULL, evaluation TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS shadow_config (policy TEXT PRIMARY KEY, version INTEGER, since REAL)")
    db.execute("CREATE TABLE IF NOT EXISTS shadow_decisions (event_id TEXT PRIMARY KEY, policy TEXT NOT NULL,"
               " version INTEGER NOT NULL, arm TEXT NOT NULL, probability REAL NOT NULL,"
               " probabilities TEXT NOT NULL, at REAL NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS guard_watches (id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
               " version INTEGER NOT NULL, previous INTEGER, started_seq INTEGER NOT NULL,"
               " status TEXT NOT NULL, reason TEXT, at REAL NOT NULL, closed_at REAL)")
    db.execute("CREATE INDEX IF NOT EXISTS model_evaluations_version ON model_evaluations(policy, version)")


MIGRATIONS: list[tuple[int, Callable[[sqlite_utils.Database], None]]] = [
    (2, create), (3, _v3), (4, _v4), (5, _v5), (6, _v6), (7, _v7), (8, _v8), (9, _v9), (10, _v10),
    (11, _v11)]
# what a store records once migrated: the last step's, so a new step can never be left unrecorded
SCHEMA_VERSION = MIGRATIONS[-1][0]
