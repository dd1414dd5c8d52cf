#!/usr/bin/env python
"""How long the console's pages take on a large decision log (docs/benchmarks.md, "The console").

Writes N decisions of the example policy `lifecycle` (default 200,000) over the last 7 days into
a fresh SQLite store (each with the removed arms and reasons of a real decision, a mode, and a
final shaped reward recorded as the learner records it), then renders each page with Flask's test
client (in process: the page's queries and its template, no HTTP) and prints the median of
--rounds renderings per page, and the same for GET /v1/policies (whose all-time counts the
overview also shows).

    .venv/bin/python scripts/bench_console.py [--decisions 200000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.api.app import create_app  # noqa: E402
from service.store import Decision, open_store  # noqa: E402

PAGES = ["/ui/", "/ui/?window=7d", "/ui/policies/lifecycle", "/ui/policies/lifecycle?window=7d",
         "/v1/policies"]
REMOVED = {"welcome_tips:sms:now": [("no_consent", "sms: needs an opt-in")],
           "spring_sale:email:now": [("frequency_cap", "email: 3 in 7d"), ("min_gap", "12h")],
           "win_back:push:evening": [("quiet_hours", "22:00-08:00")]}


def populate(db: str, n: int, now: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    app = create_app({"DB": db, "POLICIES": str(ROOT / "examples" / "policies"), "ACCESS_LOG": False})
    arms = [a.id for a in app.extensions["tactful"].policies["lifecycle"].arms]
    app.extensions["tactful"].store.close()
    store = open_store(db)
    for start in range(0, n, 10000):
        rows = []
        for i in range(start, min(n, start + 10000)):
            at = now - 7 * 86400 + 7 * 86400 * i / n
            arm = "hold" if rng.random() < 0.5 else rng.choice(arms)
            mode = rng.choices(["exploit", "explore", "holdout"], [0.9, 0.06, 0.04])[0]
            rows.append(Decision(event_id=f"e{i}", policy="lifecycle", person_key=None, decided_at=at,
                                 closes_at=at + 86400, model_version=1, mode=mode, arm=arm, probability=0.5,
                                 send_at=None, channel=None, allowed=[arm], probabilities=[1.0], context={},
                                 history={}, removed=REMOVED))
        store.import_logged(rows, [])
    cursor, version = 0, store.active_version("lifecycle")
    while True:  # final rewards, as the learner records them when its model learns nothing new
        batch = store.decisions_after("lifecycle", cursor, 10000, closed_by=now)
        if not batch:
            break
        learned = [(d.seq, rng.gauss(0.1, 1.0)) for d in batch]
        store.publish_learned("lifecycle", version, None, "", now, learned, batch[-1].seq, {})
        cursor = batch[-1].seq
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db, now = f"{tmp}/console.db", time.time()
        t0 = time.perf_counter()
        populate(db, args.decisions, now)
        print(f"{args.decisions:,} decisions written in {time.perf_counter() - t0:.0f} s; "
              f"load average {os.getloadavg()[0]:.1f} (2 cores)")
        app = create_app({"DB": db, "POLICIES": str(ROOT / "examples" / "policies"), "ACCESS_LOG": False,
                          "REPORTS": tmp})
        client = app.test_client()
        print("| page | median (ms) | min (ms) |\n| --- | --- | --- |")
        for page in PAGES:
            client.get(page)  # warm: templates compiled, pages cached by SQLite
            times = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                assert client.get(page).status_code == 200, page
                times.append(1000 * (time.perf_counter() - t))
            print(f"| `{page}` | {statistics.median(times):.0f} | {min(times):.0f} |")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        app.extensions["tactful"].store.close()


if __name__ == "__main__":
    main()
