"""The store: every piece of state Tactful keeps (people, decisions, outcomes, model versions,
leases), behind one interface. SQLite is the embedded default (`sqlite.py`)."""
from service.store.records import Decision, Outcome, OutcomeConflict, PersonState
from service.store.sqlite import Store

__all__ = ["Decision", "Outcome", "OutcomeConflict", "PersonState", "Store"]
