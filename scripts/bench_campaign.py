#!/usr/bin/env python
"""A campaign for a million people through the batch API of a real `tactful serve` (issue 16).

    .venv/bin/python scripts/bench_campaign.py                       # 1,000,000 people, batches of 500
    .venv/bin/python scripts/bench_campaign.py --people 20000        # a smoke run
    .venv/bin/python scripts/bench_campaign.py --json out/campaign.json

Starts `tactful serve --workers 2` (gunicorn with sync workers, plus the learner) on a fresh SQLite
store with examples/policies, then decides for --people new people (each `user_id` once, contexts
varied over the four segments, a request id per person as a campaign tool would send) through
POST /v1/policies/lifecycle/decide/batch, --batch people per request, from --connections client
threads, with a progress bar. Records the time, the decisions per second, the decisions that
failed (none is expected), the sends and holds, and the peak memory of the server: the resident
set of its whole process tree (serve, the gunicorn master and workers, the learner), summed and
sampled every half second from /proc.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decide import ROOT, free_port, machine, other_cpu_load, stop, wait_http  # noqa: E402

PATH = "/v1/policies/lifecycle/decide/batch"
SEGMENTS = ("new_users", "bargain_hunters", "loyal", "dormant")
COUNTRIES = ("FR", "DE", "US", "GB", "ES")


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text().split()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = int(statm[1]) * page
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory(threading.Thread):
    """Samples the server tree's resident set every `every` seconds; `peak` is the largest seen."""

    def __init__(self, root: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every, self.peak, self.done = root, every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            self.done.wait(self.every)


def body(start: int, n: int, run: str) -> bytes:
    return orjson.dumps({"requests": [
        {"user_id": f"person-{i}", "request_id": f"{run}:person-{i}",
         "context": {"segment": SEGMENTS[i % 4], "country": COUNTRIES[i % 5], "tenure_days": i % 1500}}
        for i in range(start, start + n)]})


def client(port: int, batches: list[tuple[int, int]], lock: threading.Lock, bar: tqdm, tally: dict, run: str) -> None:
    """Posts its share of the batches, one at a time, and counts what came back."""
    for start, n in batches:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("POST", PATH, body=body(start, n, run), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        with lock:
            if resp.status != 200:
                tally["failed_batches"] += 1
                tally["last_error"] = data[:500].decode(errors="replace")
            else:
                for d in orjson.loads(data)["decisions"]:
                    if "event_id" not in d:
                        tally["failed"] += 1
                    elif d["action"]["hold"]:
                        tally["holds"] += 1
                    else:
                        tally["sends"] += 1
            bar.update(n)


def campaign(args, workdir: Path) -> dict:
    port = free_port()
    tactful = Path(sys.executable).parent / "tactful"
    db = workdir / "campaign.db"
    log = open(workdir / "serve.log", "wb")
    serve = subprocess.Popen([str(tactful), "serve", "--workers", str(args.workers), "--port", str(port),
                              "--db", str(db), "--policies", str(ROOT / "examples" / "policies")],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    tally = {"sends": 0, "holds": 0, "failed": 0, "failed_batches": 0, "last_error": None}
    try:
        wait_http(port, "/healthz", "GET", 60, serve)
        memory = PeakMemory(serve.pid)
        memory.start()
        rss_start = tree_rss(serve.pid)
        spans = [(s, min(args.batch, args.people - s)) for s in range(0, args.people, args.batch)]
        lock = threading.Lock()
        run = f"campaign-{int(time.time())}"
        with tqdm(total=args.people, unit="people", unit_scale=True, smoothing=0.1) as bar:
            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(port, spans[i::args.connections], lock, bar, tally, run))
                       for i in range(args.connections)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        memory.done.set()
        memory.join()
    finally:
        exit_code = stop(serve, signal.SIGINT)
        log.close()
    decided = tally["sends"] + tally["holds"]
    return {"people": args.people, "batch": args.batch, "connections": args.connections, "workers": args.workers,
            "seconds": elapsed, "decisions": decided, "decisions_per_s": decided / elapsed,
            "server_peak_rss_mb": memory.peak / 2**20, "server_rss_at_start_mb": rss_start / 2**20,
            "store_mb": sum(p.stat().st_size for p in workdir.glob("campaign.db*")) / 2**20,
            "serve_exit_code": exit_code} | tally


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=1_000_000, help="people to decide for (default 1,000,000)")
    ap.add_argument("--batch", type=int, default=500, help="people per request (default 500)")
    ap.add_argument("--connections", type=int, default=4, help="client threads, each one request at a time (default 4)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    busy = other_cpu_load()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        res = campaign(args, Path(tmp)) | {"busy_before": busy, "machine": machine()}
    m = res["machine"]
    print(f"Machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}, gunicorn {m['gunicorn']}, "
          f"SQLite {m['sqlite']}; busy before the start: {100 * busy:.0f}%")
    print(f"{res['decisions']:,} decisions for {res['people']:,} people in {res['seconds']:.0f} s "
          f"({res['seconds'] / 60:.1f} min): {res['decisions_per_s']:,.0f} decisions/s; "
          f"{res['sends']:,} sends, {res['holds']:,} holds, {res['failed']} failed decisions, "
          f"{res['failed_batches']} failed batches")
    print(f"server peak memory (whole process tree): {res['server_peak_rss_mb']:.0f} MB "
          f"(at start {res['server_rss_at_start_mb']:.0f} MB); store {res['store_mb']:.0f} MB")
    if res["last_error"]:
        print("last error:", res["last_error"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0 if not res["failed_batches"] and not res["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
