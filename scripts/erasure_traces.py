"""Where an erased person's bytes are left, store by store (docs/reliability.md, "Erasure leaves no
trace"). tests/test_erasure.py asserts the promises; this prints the figures behind them:

- SQLite: the files that hold the person's key after `DELETE /v1/users/{id}`, as the store does it
  (secure_delete on every connection, then a TRUNCATE checkpoint) and with secure_delete on only
  while erasing (what the store did before); how long the erasure takes with a 30 MB WAL; and
  what secure_delete costs the decision path: in process (the engine on a SQLite file, VW
  included), decisions and half as many outcomes per CPU second of this process, with
  secure_delete on and off, in alternating rounds (CPU time, so that other processes on the
  machine weigh less).
- PostgreSQL (run as a user who can read the server's data directory): how many of the schema's
  relation files, and of the server's WAL segments, hold the key after the DELETE, after VACUUM,
  after VACUUM FULL, and after two WAL switches with checkpoints.

    python scripts/erasure_traces.py [--backends sqlite,postgresql] [--rounds 6]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from backends import PG_URL, pg_schema  # noqa: E402
from conftest import POLICIES_DIR  # noqa: E402
from service.api.app import create_app  # noqa: E402
from service.clock import ManualClock  # noqa: E402
from service.decision.engine import DecideInput, OutcomeInput  # noqa: E402
from service.policy import load_policies  # noqa: E402
from service.runtime import build_engine, numbered_ids  # noqa: E402
from service.store import SQLiteStore, open_store  # noqa: E402
from test_erasure import USER, holding, populate, relation_files  # noqa: E402

TABLES = ("consent", "contacts", "signals", "people", "requests", "decisions")


def sqlite_files(workdir: Path, always: bool) -> dict:
    db = workdir / f"{'always' if always else 'during'}.db"
    app = create_app({"DB": str(db), "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
    client, store = app.test_client(), app.extensions["tactful"].store
    if not always:  # the writes before the erasure as the store made them before: secure_delete off
        store.wconn.execute("PRAGMA secure_delete=OFF")
    keys = populate(client)
    store.wconn.execute("PRAGMA secure_delete=ON")
    key = store.person_key(USER)
    client.delete(f"/v1/users/{USER}")
    store.close()
    return holding([db, Path(f"{db}-wal"), Path(f"{db}-shm")], [USER, key, *keys])


def sqlite_checkpoint(workdir: Path) -> str:
    db = str(workdir / "wal.db")
    store = SQLiteStore(db)
    key = store.person_key(USER)
    store.set_consent(key, {"email": True}, "form", 1.0)
    n = 0
    while os.path.getsize(f"{db}-wal") < 30_000_000:
        with store.write() as conn:
            conn.executemany("INSERT INTO consent(person_key, channel, granted, source, at) VALUES (?,?,?,?,?)",
                             [(f"p{n}-{i}", "email", 1, "x" * 200, 1.0) for i in range(500)])
        n += 1
    wal = os.path.getsize(f"{db}-wal")
    started = time.perf_counter()
    store.erase_person(key)
    took = time.perf_counter() - started
    after = os.path.getsize(f"{db}-wal")
    store.close()
    return f"erasure with a {wal / 1e6:.1f} MB WAL: {took * 1000:.0f} ms, WAL after it {after} bytes"


def decisions_per_cpu_second(db: Path, secure_delete: bool, n: int = 3000) -> float:
    store = open_store(str(db))
    if not secure_delete:
        store.wconn.execute("PRAGMA secure_delete=OFF")
    clock = ManualClock(1772438400.0)
    engine = build_engine(store, load_policies(POLICIES_DIR), clock, new_id=numbered_ids("e"), refresh_seconds=0)
    engine.ensure_models()
    for u in range(300):
        engine.people.set_consent(f"u{u}", {"email": True, "push": True, "sms": True}, "bench", None)
    started = time.process_time()
    for i in range(n):
        clock.t += 60
        d = engine.decide("lifecycle", DecideInput(f"u{i % 300}", {"segment": "s"}))
        if i % 2 == 0:
            engine.record_outcome(d["event_id"], OutcomeInput("click", outcome_id="c"))
    took = time.process_time() - started
    store.close()
    return n / took


def sqlite_cost(workdir: Path, rounds: int) -> str:
    on, off = [], []
    for r in range(rounds):
        for secure in ((True, False) if r % 2 == 0 else (False, True)):
            (on if secure else off).append(decisions_per_cpu_second(workdir / f"cost-{r}-{secure}.db", secure))
    ratios = sorted(a / b for a, b in zip(on, off))
    return (f"decisions per CPU second, secure_delete on: median {statistics.median(on):.0f} "
            f"({', '.join(f'{x:.0f}' for x in on)}); off: median {statistics.median(off):.0f} "
            f"({', '.join(f'{x:.0f}' for x in off)}); on/off per round {ratios[0]:.2f} to {ratios[-1]:.2f}")


def postgresql() -> list[str]:
    out = []
    with pg_schema() as url, psycopg.connect(PG_URL, autocommit=True) as admin:
        schema = url.rsplit("search_path%3D", 1)[1]
        data_dir = Path(admin.execute("SHOW data_directory").fetchone()[0])
        if not (data_dir / "PG_VERSION").is_file():
            return [f"PostgreSQL's data directory {data_dir} is not readable here"]
        app = create_app({"DB": url, "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
        client, store = app.test_client(), app.extensions["tactful"].store
        keys = populate(client)
        key = store.person_key(USER)
        names = {}

        def report(label: str) -> None:
            admin.execute("CHECKPOINT")
            files = relation_files(admin, data_dir, schema)
            names.update({r[0]: r[1] for r in admin.execute("SELECT pg_relation_filepath(oid), relname FROM pg_class")})
            held = [names.get(str(p.relative_to(data_dir)), p.name) for p in files
                    if holding([p], [USER, key, *keys])]
            wal = sorted((data_dir / "pg_wal").glob("0*"))
            out.append(f"{label}: {len(held)} of {len(files)} relation files hold the person "
                       f"({', '.join(sorted(held)) or 'none'}); {sum(key.encode() in w.read_bytes() for w in wal)} "
                       f"of {len(wal)} WAL segments hold the key")

        report("before DELETE")
        client.delete(f"/v1/users/{USER}")
        report("after DELETE")
        for table in TABLES:
            admin.execute(f"VACUUM {schema}.{table}")
        report("after VACUUM")
        for table in TABLES:
            admin.execute(f"VACUUM FULL {schema}.{table}")
        report("after VACUUM FULL")
        for _ in range(2):
            admin.execute("SELECT pg_switch_wal()")
            admin.execute("CHECKPOINT")
        report("after two WAL switches and checkpoints")
        store.close()
        out.insert(0, admin.execute("SELECT version()").fetchone()[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the secure_delete cost (0: leave it out)")
    args = ap.parse_args()
    backends = args.backends.split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            for always in (True, False):
                found = sqlite_files(Path(tmp), always)
                label = "secure_delete on every connection" if always else "secure_delete only while erasing"
                print(f"sqlite, {label}, then the TRUNCATE checkpoint: "
                      + ("; ".join(f"{f} holds {', '.join(n)}" for f, n in found.items()) or "no file holds any of them"))
            print("sqlite, " + sqlite_checkpoint(Path(tmp)))
            if args.rounds:
                print("sqlite, " + sqlite_cost(Path(tmp), args.rounds))
    if "postgresql" in backends:
        for line in postgresql():
            print("postgresql, " + line)


if __name__ == "__main__":
    main()
