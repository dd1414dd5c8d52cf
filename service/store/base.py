"""What every store backend is: the queries of people.py, decisions.py, campaign.py, versions.py,
coordination.py, retention.py, keys.py, personalizer.py and console.py (written once, in SQL both SQLite and PostgreSQL accept), over the few primitives
a backend supplies: `query`, `write`, `close`, `ping`, its schema migrations and a backup.

A backend's rows answer both `row[0]` and `row["column"]`, and `dict(row)` gives the columns by
name. Placeholders are SQLite's (`?` and `:name`); the PostgreSQL backend translates them.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Sequence

from service.store.campaign import CampaignTables
from service.store.console import ConsoleFigures
from service.store.coordination import CoordinationTables
from service.store.decisions import DecisionLog
from service.store.keys import KeyTables
from service.store.people import PeopleTables
from service.store.personalizer import PersonalizerTables
from service.store.records import StoreError
from service.store.retention import RetentionTables
from service.store.safety import SafetyTables
from service.store.versions import ModelTables

# The lock a write transaction takes unless it names a narrower one (see `Store.write`).
GLOBAL = "global"


class SchemaTooNew(StoreError):
    """The store's schema was written by a newer Tactful than this one."""

    def __init__(self, where: str, found: int, known: int):
        super().__init__(f"the store at {where} has schema version {found}, newer than this Tactful knows "
                         f"({known}): upgrade Tactful on this machine before serving from it (an older "
                         f"Tactful could corrupt data a newer one wrote)")


def pending(migrations: list, found: int, known: int, where: str) -> list:
    """The steps of `migrations` ((version, step) in order) a store at schema `found` lacks;
    SchemaTooNew when `found` is newer than the code (`known`). Both backends plan alike."""
    if found > known:
        raise SchemaTooNew(where, found, known)
    return [step for version, step in migrations if version > found]


class Store(PeopleTables, DecisionLog, CampaignTables, ModelTables, CoordinationTables, RetentionTables, KeyTables,
            SafetyTables, PersonalizerTables, ConsoleFigures):
    """One store, whatever its backend. Build one with `service.store.open_store(db)`."""

    kind: str = ""       # "sqlite" or "postgresql"
    location: str = ""   # the file or the database, for messages (a URL without its password)

    def query(self, sql: str, params: Sequence | dict = ()) -> list[Any]:
        """Rows of one read, from this thread's connection."""
        raise NotImplementedError

    def query_before_write(self, sql: str, params: Sequence | dict = ()) -> list[Any]:
        """Rows of one read that this thread's next write follows (a person's state, read before
        their decision is committed): where the backend reads it fastest. `query` by default."""
        return self.query(sql, params)

    def write(self, lock: str | None = GLOBAL) -> AbstractContextManager:
        """A write transaction; its connection's `execute` and `executemany` take the same SQL as
        `query`. `lock` is what the transaction serialises on: GLOBAL (every other GLOBAL write
        waits, as SQLite's one writer does), a narrower key such as `person:<key>` (writes about
        other people go on in parallel), or None (the statements are atomic on their own). SQLite
        has one writer whatever the key."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def checkpoint_in_background(self, every: float, restart_pages: int = 8000) -> None:
        """Take the store's periodic housekeeping off the callers' path, every `every` seconds in a
        thread of its own (a served worker's store). Only SQLite has any: see SQLiteStore."""

    def ping(self) -> None:
        """Raise if the store cannot answer a query (health checks)."""
        self.query("SELECT 1")

    def schema_version(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key='schema_version'")
        return int(rows[0][0]) if rows else 0

    def backup(self, out: str) -> None:
        """A consistent copy of the live store (where the backend can make one itself)."""
        raise NotImplementedError

    def model_generation(self, policy: str) -> int | None:
        """A number that changes whenever the policy's active or shadow version may have changed,
        pushed by the backend; None when the backend cannot push changes (then callers poll)."""
        return None

    def learning_horizon(self, policy: str) -> int | None:
        """The highest seq below which every decision of the store is committed, or None when
        the backend commits in seq order anyway (SQLite's one writer). The learner reads no
        further, so a decision still being written is never skipped."""
        return None
