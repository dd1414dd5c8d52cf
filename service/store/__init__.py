"""The store: every piece of state Tactful keeps (people, decisions, outcomes, model versions and
what the registry keeps beside them, the learner's lease, the request clock, API keys), behind one
interface (`base.Store`, whose queries live in `people.py`, `decisions.py`, `campaign.py`,
`versions.py`, `coordination.py`, `retention.py` and `keys.py`). Two backends: SQLite, the embedded default
(`sqlite.py`), and PostgreSQL for several replicas (`postgres.py`). Only this package holds SQL;
`records.py` is what every backend reads and writes. `open_store` picks the backend from the
address."""
from service.store.base import SchemaTooNew, Store
from service.store.keys import KeyNameTaken
from service.store.records import (DELIVERY_STATUSES, UNDELIVERED, AlreadyActive, Decision, DeliveryConflict,
                                   DuplicateRequest, NoSuchVersion, Outcome, OutcomeConflict, PersonState,
                                   RequestClaim, StoreError, StoreUnavailable)
from service.store.campaign import REQUEST_TTL
from service.store.postgres import PostgresStore
from service.store.sqlite import SQLiteStore

__all__ = ["DELIVERY_STATUSES", "REQUEST_TTL", "UNDELIVERED", "AlreadyActive", "Decision", "DeliveryConflict",
           "DuplicateRequest", "RequestClaim", "KeyNameTaken", "NoSuchVersion", "Outcome", "OutcomeConflict", "PersonState",
           "PostgresStore", "SQLiteStore", "SchemaTooNew", "Store", "StoreError", "StoreUnavailable", "is_postgres",
           "open_store"]


def is_postgres(db: str) -> bool:
    """Whether `db` names a PostgreSQL database (a postgresql:// or postgres:// URL)."""
    return db.startswith(("postgresql://", "postgres://"))


def open_store(db: str, secret: str | None = None, migrate: bool = True) -> Store:
    """The store at `db`: a PostgreSQL URL, or else the path of a SQLite file (created if
    missing). The schema migrations it lacks are applied (SchemaTooNew when its schema is newer
    than this code); with `migrate=False` the caller calls `migrate()` before using it."""
    if is_postgres(db):
        return PostgresStore(db, secret=secret, migrate=migrate)
    return SQLiteStore(db, secret=secret, migrate=migrate)
