"""Moving a store to PostgreSQL: every row of every table, as it is (the server secret included,
so people keep their keys, and the API keys' hashes, so clients keep theirs), into an empty
PostgreSQL store: `tactful db copy`."""
from __future__ import annotations

from typing import Callable

from service.store.base import Store
from service.store.records import StoreError

# every table, and the integer key it is read in order of (None: a small table, read at once)
TABLES: list[tuple[str, str | None]] = [
    ("clock", None), ("decisions", "seq"), ("decision_rewards", "seq"), ("outcomes", "id"), ("contacts", "id"),
    ("consent", "id"), ("people", None), ("signals", "id"), ("model_versions", None), ("policy_state", None),
    ("activations", "id"), ("arm_state", None), ("budget", None), ("model_evaluations", "id"),
    ("shadow_config", None), ("shadow_decisions", None), ("guard_watches", "id"), ("api_keys", "id"),
    ("safety_events", "id"), ("policy_specs", "id"),
    ("deliveries", "id"), ("requests", None),  # request ids live a day: few rows
    ("catalog_changes", "id"), ("personalizer_documents", None),
]
BATCH = 5000


def copy_store(source: Store, target: Store, progress: Callable[[str, int], None] = lambda t, n: None
               ) -> dict[str, int]:
    """Copy `source` into `target`, which must be a PostgreSQL store holding no decision and no
    model version yet; the rows copied per table. Run it while nothing writes to `source` (stop
    serving first): rows written during the copy may be missed. The learner's lease is not copied."""
    if target.kind != "postgresql":
        raise StoreError("the target of a copy must be a PostgreSQL store (SQLite has a `tactful backup`)")
    held = [table for table, _ in TABLES if target.query(f"SELECT count(*) FROM {table}")[0][0]]
    if held:
        raise StoreError(f"{target.location} is not empty (it holds {', '.join(held)}): copy into an empty store")
    counts = {}
    with target.write() as out:
        for key, value in source.query("SELECT key, value FROM meta WHERE key <> 'schema_version'"):
            out.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))
        for table, order in TABLES:
            counts[table] = 0
            for rows in _batches(source, table, order):
                columns = list(rows[0].keys())
                out.executemany(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                                [tuple(r) for r in rows])
                counts[table] += len(rows)
                progress(table, counts[table])
            if order is not None:  # new rows go on from the copied ones, where the key is generated
                out.execute(f"SELECT setval(s, coalesce((SELECT max({order}) FROM {table}), 0) + 1, false)"
                            f" FROM pg_get_serial_sequence('{table}', '{order}') AS s WHERE s IS NOT NULL")
    return counts  # (reopen `target` to use it: it was opened with the secret it had before)


def _batches(store: Store, table: str, order: str | None):
    if order is None:
        rows = store.query(f"SELECT * FROM {table}")
        if rows:
            yield rows
        return
    last = -1
    while True:
        rows = store.query(f"SELECT * FROM {table} WHERE {order} > ? ORDER BY {order} LIMIT ?", (last, BATCH))
        if not rows:
            return
        yield rows
        last = rows[-1][order]
