"""Faults under load: the kill -9 runs of docs/reliability.md, as a Markdown table.

Each run serves a fresh store with the real `tactful serve` (2 gunicorn workers and the learner)
while a client sends decisions and outcomes at a steady rate, and kills with SIGKILL one gunicorn
worker, or the learner, or both, part-way (tests/faultrun.py does the work; tests/test_faults.py
asserts the same checks in CI). By default: a worker kill and a learner kill, separately, on
SQLite and on PostgreSQL (TACTFUL_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test).

    python scripts/faults.py [--seconds 30] [--rate 60] [--backends sqlite,postgresql] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import faultrun  # noqa: E402
from backends import store_address  # noqa: E402

RUNS = {"worker": ("worker",), "learner": ("learner",), "both": ("worker", "learner")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of traffic per run")
    ap.add_argument("--rate", type=float, default=60.0, help="decisions per second the client sends (half get an outcome)")
    ap.add_argument("--threads", type=int, default=4, help="client threads")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--runs", default="worker,learner", help=f"comma-separated, of: {', '.join(RUNS)}")
    ap.add_argument("--json", type=Path, help="also write every figure of every run here")
    args = ap.parse_args()
    results = []
    for backend in args.backends.split(","):
        for name in args.runs.split(","):
            with tempfile.TemporaryDirectory() as tmp, store_address(backend, Path(tmp)) as db:
                r = faultrun.run(db, Path(tmp), seconds=args.seconds, faults=RUNS[name], rate=args.rate,
                                 threads=args.threads)
            results.append(r)
            print(f"{backend}, kill -9 {name}: {r['decisions_acknowledged']} decisions and "
                  f"{r['outcomes_acknowledged']} outcomes acknowledged, "
                  f"{r['decisions_lost'] + r['outcomes_lost']} lost", file=sys.stderr, flush=True)
    print(faultrun.markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    bad = [r for r in results if r["decisions_lost"] or r["outcomes_lost"] or not r["learned_exactly_once"]
           or any(f["recovered_s"] is None for f in r["faults"])]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
