#!/usr/bin/env python
"""What one decision's write costs on SQLite, part by part (issue 16: why the in-process decide
stays well above 5x a pre-parsed VW predict).

    .venv/bin/python scripts/bench_write.py            # about 20 s
    .venv/bin/python scripts/bench_write.py --rows 3000

A fresh SQLite store; decisions shaped as bench_decide.py's 49-arm ones (every arm allowed, its
probabilities logged, a send on email that reserves a contact), each for a new person. Timed, the
median microseconds of:
  commit        SQLiteStore.commit_decision: the row serialized, inserted only if the person's
                state still matches its marker (four subqueries), the trigger's contact and
                suppression count, one transaction
  insert        the same row inserted plainly (its own transaction; the trigger still fires)
  no trigger    the same without the trigger (no contact, no suppression count)
  no indexes    the same without the decisions table's four indexes
  serialize     decision_values alone (the row's JSON)
The differences of the medians are what each part costs: the marker's check, the contact, the
indexes (a mean would carry SQLite's automatic checkpoints too, every 1,000 pages of WAL). Each
part writes into the table the parts before it filled (a few thousand rows: its indexes stay in
the page cache, as a served store's recent pages do).
"""
from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.store import Decision, open_store  # noqa: E402
from service.store.decisions import decision_values  # noqa: E402
from service.store.sqlite import DECISION_COLUMNS  # noqa: E402

T = 1_790_000_000.0
ARMS = [f"content_{i % 17}:{('email', 'push', 'sms', 'in_app')[i % 4]}:{('now', 'evening', 'next_morning')[i % 3]}"
        for i in range(49)]
INSERT = f"INSERT INTO decisions({DECISION_COLUMNS}) VALUES ({','.join('?' * 17)})"
INDEXES = ("decisions_event", "decisions_person", "decisions_policy_seq", "decisions_decided")


def decision(i: int, key: str) -> Decision:
    return Decision(event_id=f"{i:032x}", policy="lifecycle", person_key=key, decided_at=T + i,
                    closes_at=T + i + 172800, model_version=2, mode="exploit", arm=ARMS[i % 49], probability=0.9,
                    send_at=T + i + 60, channel="email", allowed=ARMS, probabilities=[1 / 49] * 49,
                    context={"segment": "loyal", "country": "FR", "tenure_days": 300},
                    history={"contacts_7d": 0.0, "recency": "never", "fatigue_contacts": 0}, removed={})


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def timed_inserts(conn: sqlite3.Connection, start: int, rows: int) -> float:
    samples = []
    for i in range(start, start + rows):
        values = decision_values(decision(i, os.urandom(16).hex()))
        t = time.perf_counter()
        conn.execute(INSERT, values)
        samples.append(time.perf_counter() - t)
    return median_us(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5000, help="rows timed per part (default 5000)")
    args = ap.parse_args()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "w.db"))
        try:
            samples = []
            for i in range(args.rows):
                key = os.urandom(16).hex()
                marker = store.person_state(key, T - 7 * 86400, "lifecycle", T - 90 * 86400).marker
                d = decision(i, key)
                t = time.perf_counter()
                if not store.commit_decision(d, marker):
                    raise RuntimeError("a new person's decision was refused")
                samples.append(time.perf_counter() - t)
            out["commit"] = median_us(samples)
            conn = store.wconn  # autocommit: each statement is its own transaction, as a decide's is
            out["insert"] = timed_inserts(conn, 1_000_000, args.rows)
            conn.execute("DROP TRIGGER decision_reserves_contact")
            out["no trigger"] = timed_inserts(conn, 2_000_000, args.rows)
            for index in INDEXES:
                conn.execute(f"DROP INDEX {index}")
            out["no indexes"] = timed_inserts(conn, 3_000_000, args.rows)
            d = decision(1, "k")
            samples = []
            for _ in range(args.rows):
                t = time.perf_counter()
                decision_values(d)
                samples.append(time.perf_counter() - t)
            out["serialize"] = median_us(samples)
        finally:
            store.close()
    print(f"Machine: {os.cpu_count()} cores; Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
          f"{args.rows} rows per part, median microseconds")
    print()
    print("| commit_decision | plain insert | without the trigger | without the indexes | serialize |")
    print("|---:|---:|---:|---:|---:|")
    print("| " + " | ".join(f"{out[k]:.1f}" for k in ("commit", "insert", "no trigger", "no indexes", "serialize"))
          + " |")
    print()
    print(f"marker check and serializing: {out['commit'] - out['insert']:.1f}; the contact and suppression count "
          f"(trigger): {out['insert'] - out['no trigger']:.1f}; four indexes: {out['no trigger'] - out['no indexes']:.1f}; "
          f"the row in its own transaction: {out['no indexes']:.1f}")


if __name__ == "__main__":
    main()
