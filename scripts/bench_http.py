#!/usr/bin/env python
"""HTTP throughput of `tactful serve` side by side with an empty Flask endpoint, measured by wrk
(issue 16): single decides, batch decides, and single decides at half the saturating rate.

    apt-get install -y wrk                                    # Debian package `wrk`
    .venv/bin/python scripts/bench_http.py                    # 3 alternating pairs, 10 s each
    .venv/bin/python scripts/bench_http.py --pairs 1 --seconds 3   # a smoke run
    .venv/bin/python scripts/bench_http.py --loadgen python   # no wrk: a labelled fallback only

Each pair starts an empty Flask app (scripts/_empty_app.py) under gunicorn with the settings
`tactful serve` uses (sync workers, --workers of them) and a `tactful serve` on a fresh SQLite
store with examples/policies; the two alternate which goes first. Against each, wrk
(`-t1 -c16`, a Lua script that makes a new person for every request) posts decide bodies to
/v1/policies/lifecycle/decide for --seconds after a short warm-up. Against tactful it then
  - posts batches of --batch new people to /v1/policies/lifecycle/decide/batch (decisions/s), and
  - posts single decides at about half the saturating rate just measured, for the latency a
    campaign tool sees below saturation: with fewer connections (1, 2, ... until one reaches
    90% of half the rate), since wrk's `delay()` does not pace the connections gunicorn's sync
    workers close after every answer.
For every run: requests (decisions) per second, p50/p99 latency, and the CPU per request of the
server's whole process tree (from /proc) and of wrk (rusage of the child).

The latencies are wrk's, corrected for coordinated omission: wrk adds, for every latency of at
least twice the mean interval between one connection's requests, samples at that latency minus
one, two... intervals. At half load with one connection a single 100 ms stall thus adds some 65
samples, over 1% of a 10 s run: the p99 reports stalls as a client sending at a steady rate
would meet them, not only as the requests that met them (docs/benchmarks.md, stop 34).

Without wrk the script refuses to report the headline figures; `--loadgen python` then measures
with the Python load generator of scripts/bench_decide.py (which competes for the same cores: a
fallback, labelled as such, never the headline).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decide import (ROOT, _cpu_sample, cpu_by_role, cpu_delta, free_port, machine,  # noqa: E402
                          other_cpu_load, run_python_load, stop, wait_http)

DECIDE = "/v1/policies/lifecycle/decide"
LUA = r"""
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  n = 0
  prefix = "RUN-" .. id .. "-"
end
local segments = {"new_users", "bargain_hunters", "loyal", "dormant"}
local headers = {["Content-Type"] = "application/json"}
local function one()
  n = n + 1
  return string.format('{"user_id":"%s%d","context":{"segment":"%s","country":"FR","tenure_days":%d}}',
                       prefix, n, segments[n % 4 + 1], n % 1500)
end
request = function()
  if BATCH > 0 then
    local items = {}
    for i = 1, BATCH do items[i] = one() end
    return wrk.format("POST", "PATH", headers, '{"requests":[' .. table.concat(items, ",") .. ']}')
  end
  return wrk.format("POST", "PATH", headers, one())
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write("WRKJSON " .. string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max) .. "\n")
end
"""


def lua(workdir: Path, run: str, path: str, batch: int = 0) -> Path:
    script = workdir / f"{run}.lua"
    script.write_text(LUA.replace("RUN", run).replace("PATH", path).replace("BATCH", str(batch)))
    return script


def wrk(port: int, script: Path, seconds: float, connections: int) -> dict:
    """One wrk run; its own CPU from the rusage of this process's waited-for children."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--timeout", "10s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=seconds + 60,
                         check=True).stdout
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(next(line for line in out.splitlines() if line.startswith("WRKJSON "))[8:])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["loadgen_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return r


def measured(proc: subprocess.Popen, port: int, script: Path, args, per_request: int = 1,
             loadgen: str = "wrk", connections: int | None = None) -> dict:
    """A measured run with the CPU of the server's process tree and of the load generator."""
    before = cpu_by_role(proc.pid)
    all0, idle0 = _cpu_sample()
    seconds, connections = args.seconds, connections or args.connections
    if loadgen == "wrk":
        r = wrk(port, script, seconds, connections)
    else:  # the fallback: Python processes posting decides for a pool of people
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = run_python_load(port, int(seconds), connections, 1_000_000)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r["loadgen_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    all1, idle1 = _cpu_sample()
    server = sum(cpu_delta(before, cpu_by_role(proc.pid)).values())
    n = max(r["requests"], 1)
    r.update(per_request=per_request, connections=connections, decisions_per_s=r["rps"] * per_request,
             server_cpu_ms=1000 * server / n, loadgen_cpu_ms=1000 * r["loadgen_cpu_s"] / n,
             server_cpu_ms_per_decision=1000 * server / (n * per_request),
             machine_busy=1.0 - (idle1 - idle0) / max(all1 - all0, 1))
    return r


def start_empty(args, workdir: Path, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen([str(gunicorn), "-w", str(args.workers), "-k", "sync", "-b", f"127.0.0.1:{port}",
                             "--timeout", "30", "--graceful-timeout", "10", "--no-control-socket",
                             "--chdir", str(ROOT / "scripts"), "_empty_app:app"],
                            cwd=ROOT, stdout=open(workdir / "empty.log", "ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    wait_http(port, DECIDE, "POST", 30, proc)
    return proc, port


def start_tactful(args, workdir: Path, env: dict, name: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    tactful = Path(sys.executable).parent / "tactful"
    proc = subprocess.Popen([str(tactful), "serve", "--workers", str(args.workers), "--port", str(port),
                             "--db", str(workdir / f"{name}.db"), "--policies", str(ROOT / "examples" / "policies")],
                            cwd=ROOT, stdout=open(workdir / f"{name}.log", "ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    wait_http(port, "/healthz", "GET", 60, proc)
    return proc, port


def empty_side(args, workdir: Path, env: dict, pair: int, loadgen: str) -> dict:
    proc, port = start_empty(args, workdir, env)
    try:
        script = lua(workdir, f"e{pair}", DECIDE)
        if loadgen == "wrk":
            wrk(port, lua(workdir, f"ew{pair}", DECIDE), args.warmup, args.connections)
        return measured(proc, port, script, args, loadgen=loadgen)
    finally:
        stop(proc, signal.SIGTERM)


def tactful_side(args, workdir: Path, env: dict, pair: int, loadgen: str) -> dict:
    proc, port = start_tactful(args, workdir, env, f"serve{pair}")
    out: dict = {}
    try:
        if loadgen == "wrk":
            wrk(port, lua(workdir, f"dw{pair}", DECIDE), args.warmup, args.connections)
        out["decide"] = measured(proc, port, lua(workdir, f"d{pair}", DECIDE), args, loadgen=loadgen)
        if loadgen != "wrk":
            return out
        batch_script = lua(workdir, f"b{pair}", DECIDE + "/batch", batch=args.batch)
        wrk(port, lua(workdir, f"bw{pair}", DECIDE + "/batch", batch=args.batch), args.warmup, args.batch_connections)
        out["batch"] = measured(proc, port, batch_script, args, per_request=args.batch,
                                connections=args.batch_connections)
        # about half the saturating rate: gunicorn's sync workers close every connection, which
        # wrk's `delay()` does not pace, so fewer connections (closed loop) are tried, 1 up, until
        # one reaches half the rate just measured
        target = out["decide"]["rps"] / 2
        # unmeasured single decides first: when the batch run stops, up to --batch-connections
        # batches it sent are still being decided (each some 0.4 s of a worker), and a closed
        # loop started at once measures that backlog draining, not the service at half load
        # (p99 137-278 ms when measured so, 4-5 ms after a warm-up)
        wrk(port, lua(workdir, f"hw{pair}", DECIDE), args.warmup, 1)
        for connections in range(1, args.connections + 1):
            half = measured(proc, port, lua(workdir, f"h{pair}-{connections}", DECIDE), args,
                            connections=connections)
            if half["rps"] >= 0.9 * target:
                break
        out["half"] = half | {"target_rps": target, "connections": connections}
    finally:
        stop(proc, signal.SIGINT)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="alternating pairs (default 3)")
    ap.add_argument("--seconds", type=float, default=10, help="measured seconds per run (default 10)")
    ap.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each (default 2)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers of both servers (default 2)")
    ap.add_argument("--batch", type=int, default=500, help="people per batch request (default 500)")
    ap.add_argument("--batch-connections", type=int, default=4,
                    help="wrk connections posting batches (default 4: a batch keeps a worker busy for a while)")
    ap.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    args = ap.parse_args(argv)
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed: the headline figures need it (Debian: apt-get install -y wrk).\n"
              "--loadgen python measures with the Python load generator instead, as a labelled fallback.",
              file=sys.stderr)
        return 2
    res = {"machine": machine(), "busy_before": other_cpu_load(), "loadgen": args.loadgen, "pairs": [],
           "settings": {k: getattr(args, k) for k in ("seconds", "warmup", "connections", "workers", "batch",
                                                      "batch_connections")}}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        for pair in range(args.pairs):
            sides = [("empty", empty_side), ("tactful", tactful_side)]
            if pair % 2:
                sides.reverse()
            row = {"order": [s for s, _ in sides]}
            for name, side in sides:
                row[name] = side(args, Path(tmp), env, pair, args.loadgen)
            row["ratio"] = row["tactful"]["decide"]["rps"] / row["empty"]["rps"]
            res["pairs"].append(row)
            print(f"pair {pair + 1}: " + summary_line(row), flush=True)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def summary_line(row: dict) -> str:
    d, e = row["tactful"]["decide"], row["empty"]
    line = f"empty {e['rps']:.0f} req/s, decide {d['rps']:.0f} req/s ({row['ratio']:.2f}x)"
    if "batch" in row["tactful"]:
        b, h = row["tactful"]["batch"], row["tactful"]["half"]
        line += (f", batch {b['decisions_per_s']:.0f} decisions/s, at {h['rps']:.0f} req/s "
                 f"p99 {h['p99_us'] / 1000:.1f} ms")
    return line


def report(res: dict) -> str:
    m = res["machine"]
    fallback = res["loadgen"] != "wrk"
    lines = [f"Machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}, gunicorn {m['gunicorn']}, "
             f"SQLite {m['sqlite']}, {m.get('wrk') or 'no wrk'}; busy before the start: "
             f"{100 * res['busy_before']:.0f}%", ""]
    if fallback:
        lines += ["FALLBACK: the Python load generator competed for the same cores; these are not the "
                  "headline figures (install wrk).", ""]
    lines += ["| pair | order | run | wrk -c | req/s | decisions/s | p50 ms | p99 ms | server CPU ms/req | "
              "load generator CPU ms/req | machine busy |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, row in enumerate(res["pairs"], 1):
        runs = [("empty endpoint", row["empty"])] + [(k, v) for k, v in row["tactful"].items()]
        for name, r in runs:
            label = {"decide": "decide", "batch": f"batch of {r.get('per_request')}",
                     "half": f"decide, half load (half is {r.get('target_rps', 0):.0f} req/s)"}.get(name, name)
            lines.append(f"| {i} | {' then '.join(row['order'])} | {label} | {r['connections']} | {r['rps']:.0f} | "
                         f"{r['decisions_per_s']:.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
                         f"{r['server_cpu_ms']:.2f} | {r['loadgen_cpu_ms']:.3f} | {100 * r['machine_busy']:.0f}% |")
    ratios = [row["ratio"] for row in res["pairs"]]
    lines += ["", f"decide / empty: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})"]
    if not fallback:
        batch = [row["tactful"]["batch"]["decisions_per_s"] for row in res["pairs"]]
        single = [row["tactful"]["decide"]["rps"] for row in res["pairs"]]
        p99 = [row["tactful"]["half"]["p99_us"] / 1000 for row in res["pairs"]]
        lines += [f"batch decisions/s: {', '.join(f'{x:.0f}' for x in batch)} (median {statistics.median(batch):.0f}); "
                  f"batch / single: {', '.join(f'{b / s:.1f}' for b, s in zip(batch, single))}",
                  f"p99 at half the saturating rate: {', '.join(f'{x:.1f}' for x in p99)} ms"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
