"""What the campaign-tool features cost on the decision path, in process (real SQLite store, real
VW model, the example policy): a decide without a request id, with a new one (the claim is one
more statement in the decision's transaction, and the answer is stored), the repeat of one (one
read, no decision), a decide restricted to an eligible set, and a delivery report that releases.

    python scripts/bench_campaign_features.py [--n 500]

Prints a table of microseconds (p50, p99) per operation; docs/benchmarks.md records a run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.clock import ManualClock  # noqa: E402
from service.decision.engine import DecideInput, DeliveryInput  # noqa: E402
from service.policy import load_policies  # noqa: E402
from service.runtime import build_engine  # noqa: E402
from service.store import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, n: int) -> tuple[float, float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1e6)
    return float(np.percentile(out, 50)), float(np.percentile(out, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="operations timed per row (default 500)")
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "bench.db"))
        clock = ManualClock(1_780_000_000.0)
        engine = build_engine(store, load_policies(ROOT / "examples" / "policies"), clock, refresh_seconds=1.0)
        engine.ensure_models()
        users = 4 * n
        for u in range(users):
            engine.people.set_consent(f"u{u}", {"email": True, "push": True, "sms": True}, "bench", None)
        ctx = {"segment": "s", "country": "FR", "tenure_days": 30}
        sends: list[str] = []

        def plain(i):
            r = engine.decide("lifecycle", DecideInput(f"u{i}", ctx))
            if not r["action"]["hold"]:
                sends.append(r["event_id"])

        rows = [("decide, no request id", timed(plain, n)),
                ("decide, a new request id", timed(lambda i: engine.decide(
                    "lifecycle", DecideInput(f"u{n + i}", ctx, request_id=f"r{i}")), n)),
                ("decide, a repeated request id", timed(lambda i: engine.decide(
                    "lifecycle", DecideInput(f"u{n + i}", ctx, request_id=f"r{i}")), n)),
                ("decide, eligible set (2 contents, 2 channels)", timed(lambda i: engine.decide(
                    "lifecycle", DecideInput(f"u{2 * n + i}", ctx, contents=["spring_sale", "win_back"],
                                             channels=["email", "push"])), n)),
                ("delivery report not_sent (releases)", timed(lambda i: engine.record_delivery(
                    sends[i], DeliveryInput("not_sent")), min(n, len(sends))))]
        store.close()
    print(f"microseconds per operation, {n} each (in process, SQLite, examples/policies: 70 arms)\n")
    print("| operation | p50 | p99 |\n|---|---:|---:|")
    for name, (p50, p99) in rows:
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
