"""The store: every piece of state Tactful keeps (people, decisions, outcomes, model versions and
what the registry keeps beside them, the learner's lease, the request clock), behind one
interface. Only this package holds SQL. SQLite is the embedded default (`sqlite.py`, composed of
the queries in `people.py`, `decisions.py`, `versions.py` and `coordination.py`); `records.py`
and `schema.py` are what every backend shares."""
from service.store.records import (AlreadyActive, Decision, NoSuchVersion, Outcome, OutcomeConflict,
                                   PersonState)
from service.store.sqlite import Store

__all__ = ["AlreadyActive", "Decision", "NoSuchVersion", "Outcome", "OutcomeConflict", "PersonState", "Store"]
