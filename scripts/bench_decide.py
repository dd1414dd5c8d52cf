#!/usr/bin/env python
"""Benchmark the decision path: in-process `DecisionEngine.decide` against a bare VW predict, and
HTTP throughput of `tactful serve` against an empty Flask endpoint under the same gunicorn setup.

    .venv/bin/python scripts/bench_decide.py                 # full run (about two minutes)
    .venv/bin/python scripts/bench_decide.py --quick         # smoke run (about half a minute)
    .venv/bin/python scripts/bench_decide.py --json out/bench.json --profile

Part 1 (in process). A policy derived from examples/policies/lifecycle.toml, with generated
content items so that 4 channels x 3 timings x N contents + hold reaches about 50 and 200 arms,
runs on a temporary SQLite store with a ManualClock. Every person is granted consent on every
channel, so all arms are allowed and decide scores exactly the arms the bare predicts score. The
model is first trained on a few hundred simulated decisions (OnlineLearner, after the reward
window), then three things are timed on that same model version:
  decide        engine.decide(...): validation, person state and guardrails (SQLite reads),
                featurization, VW scoring, sampling, the decision log + contact reservation
                (one SQLite write transaction) and the response body
  text predict  VWPolicy.predict_text(shared, all arms): VW parses every line
  pre-parsed    VWPolicy.predict(shared, all arms): cached action examples, shared line parsed
Targets: decide p50 <= 3x text-predict p50 (must); decide p50 <= 3x pre-parsed p50 (goal).

Part 2 (HTTP). `tactful serve --workers 2` (gunicorn, sync workers, plus the learner) with
examples/policies, and an empty Flask app (scripts/_empty_app.py) under gunicorn with 2 sync
workers, both loaded over loopback by wrk (or a Python load generator when wrk is missing) with
POST /v1/policies/lifecycle/decide and varied users and contexts.
Target: decide throughput >= half the empty endpoint's. The headline HTTP figures (issue 16)
come from scripts/bench_http.py: wrk only, alternating pairs, batch decides, CPU per request of
the server and of wrk.
"""
from __future__ import annotations

import argparse
import cProfile
import contextlib
import http.client
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.featurize import history_features, shared_line  # noqa: E402
from service.decision import guardrails  # noqa: E402
from service.clock import ManualClock, request_time  # noqa: E402
from service.decision.context import validate_context  # noqa: E402
from service.decision.explain import render  # noqa: E402
from service.decision.engine import DecideInput, OutcomeInput  # noqa: E402
from service.policy import Policy, parse_policy  # noqa: E402
from service.runtime import build_engine, build_learner  # noqa: E402
from service.store import Store, open_store# noqa: E402

LIFECYCLE = ROOT / "examples" / "policies" / "lifecycle.toml"
POLICY = "lifecycle"
SEGMENTS = ("new_users", "bargain_hunters", "loyal", "dormant")
COUNTRIES = ("FR", "DE", "US", "GB", "ES")
TOPICS = ("onboarding", "product", "promotion", "loyalty", "reactivation")
TAGS = ("education", "new", "seasonal", "cross-sell", "retention")
CHANNELS_GRANTED = {"email": True, "push": True, "sms": True, "in_app": True}
# simulated preferences of each segment: (topic, channel, timing)
PREFERS = {
    "new_users": ("product", "push", "next_morning"),
    "bargain_hunters": ("promotion", "email", "evening"),
    "loyal": ("loyalty", "in_app", "now"),
    "dormant": ("reactivation", "email", "next_morning"),
}
START = 1_750_000_000.0  # a fixed epoch for the manual clock


# -- helpers -----------------------------------------------------------------------------------

def pct(values_ns, q: float) -> float:
    """Percentile q of nanosecond samples, in microseconds."""
    return float(np.percentile(np.asarray(values_ns, dtype=float), q)) / 1000.0


def summarize(values_ns) -> dict:
    a = np.asarray(values_ns, dtype=float) / 1000.0
    return {"n": int(a.size), "p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean()), "min_us": float(a.min())}


def policy_with_contents(n_contents: int | None) -> Policy:
    """The lifecycle policy with `n_contents` generated content items instead of its own six
    (None: the example policy itself, 70 arms)."""
    data = tomllib.loads(LIFECYCLE.read_text(encoding="utf-8"))
    if n_contents is None:
        return parse_policy(data, str(LIFECYCLE), default_name=POLICY)
    rng = random.Random(n_contents)
    data["content"] = [
        {"id": f"c{i:03d}", "topic": TOPICS[i % len(TOPICS)],
         "tags": sorted({TAGS[i % len(TAGS)], TAGS[(i * 3 + 1) % len(TAGS)]}),
         "features": {"length": round(rng.random(), 2), "discount": round(rng.random() * 0.3, 2),
                      "urgency": round(rng.random(), 2)}}
        for i in range(n_contents)
    ]
    data["arms"] = {"hold": True, "exclude": []}  # the original exclusion names a removed content item
    return parse_policy(data, f"<bench {n_contents} contents>")


def random_context(rng: random.Random) -> dict:
    return {"segment": rng.choice(SEGMENTS), "country": rng.choice(COUNTRIES),
            "tenure_days": rng.randint(0, 1500)}


def click_probability(policy: Policy, segment: str, arm_id: str) -> float:
    arm = policy.arms[policy.arm_index[arm_id]]
    if arm.hold:
        return 0.0
    topic, channel, timing = PREFERS[segment]
    return (0.03 + 0.25 * (arm.content.topic == topic) + 0.2 * (arm.channel == channel)
            + 0.15 * (arm.timing.name == timing))


def grant(store: Store, user_ids) -> None:
    for uid in user_ids:
        store.set_consent(store.person_key(uid), CHANNELS_GRANTED, "bench", START)


# -- part 1: in process ------------------------------------------------------------------------

def bench_inprocess(n_contents: int | None, n_train: int, n_timed: int, workdir: Path, seed: int,
                    profile: bool) -> dict:
    policy = policy_with_contents(n_contents)
    policies = {policy.name: policy}
    n_arms = len(policy.arms)
    rng = random.Random(seed)
    store = open_store(str(workdir / f"inproc_{n_arms}.db"))
    clock = ManualClock(START)
    engine = build_engine(store, policies, clock)
    engine.ensure_models()

    # train a little: simulated clicks, then the learner once the reward windows have closed
    train_users = [f"train-{i}" for i in range(n_train)]
    grant(store, train_users)
    clicks = 0
    for uid in train_users:
        ctx = random_context(rng)
        out = engine.decide(POLICY, DecideInput(uid, ctx))
        if rng.random() < click_probability(policy, ctx["segment"], out["action"]["arm"]):
            engine.record_outcome(out["event_id"], OutcomeInput("click"))
            clicks += 1
        clock.advance(1.0)
    clock.advance(policy.spec.reward.window + 8 * 86400)  # windows closed, training contacts out of the look-back
    learned = build_learner(store, policies, clock).step(POLICY)

    # a fresh engine, as a worker that starts now: it loads the trained version
    engine = build_engine(store, policies, clock)
    version, model = engine.models.get(POLICY)
    all_arms = list(range(n_arms))

    timed_users = [f"user-{i}" for i in range(n_timed + 200)]
    grant(store, timed_users)
    contexts = [random_context(rng) for _ in range(n_timed + 200)]
    shared = [shared_line(c, history_features(0, None)) for c in contexts]

    # how far from uniform the trained model is, and that both predict paths agree
    pmfs = [model.predict(s, all_arms) for s in shared[:100]]
    max_diff = max(float(np.abs(model.predict_text(s, all_arms) - p).max()) for s, p in zip(shared[:100], pmfs))
    top_prob = float(np.mean([p.max() for p in pmfs]))

    # warm up every path
    for i in range(100):
        model.predict(shared[i], all_arms)
        model.predict_text(shared[i], all_arms)
    for i in range(n_timed, n_timed + 200):
        engine.decide(POLICY, DecideInput(timed_users[i], contexts[i]))
        clock.advance(1.0)

    # the three paths are timed in alternating blocks, so that drift of the machine's speed
    # (shared or virtual cores) affects them alike; within a block each runs back to back
    perf = time.perf_counter_ns
    decide_ns, text_ns, pre_ns, modes, allowed_counts = [], [], [], {}, []
    block = 100
    for start in range(0, n_timed, block):
        idx = range(start, min(start + block, n_timed))
        for i in idx:
            req = DecideInput(timed_users[i], contexts[i])
            t0 = perf()
            out = engine.decide(POLICY, req)
            decide_ns.append(perf() - t0)
            modes[out["mode"]] = modes.get(out["mode"], 0) + 1
            allowed_counts.append(out["explanation"]["allowed_count"])
            clock.advance(1.0)
        for i in idx:
            t0 = perf()
            model.predict_text(shared[i], all_arms)
            text_ns.append(perf() - t0)
        for i in idx:
            t0 = perf()
            model.predict(shared[i], all_arms)
            pre_ns.append(perf() - t0)

    breakdown = decide_breakdown(engine, store, policy, clock, rng, min(n_timed, 1000))
    prof_text = profile_decide(engine, store, clock, rng, min(n_timed, 1000)) if profile else None

    store.close()
    d, t, p = summarize(decide_ns), summarize(text_ns), summarize(pre_ns)
    return {
        "arms": n_arms, "contents": len(policy.spec.content),
        "policy": "examples/policies/lifecycle.toml" if n_contents is None else f"lifecycle, {n_contents} generated contents",
        "model_version": version,
        "trained_on": learned, "train_clicks": clicks,
        "mean_top_probability": top_prob, "uniform_probability": 1.0 / n_arms,
        "max_abs_diff_pre_vs_text": max_diff,
        "modes": modes, "mean_allowed": float(np.mean(allowed_counts)),
        "decide": d, "predict_text": t, "predict_preparsed": p,
        "ratio_decide_text_p50": d["p50_us"] / t["p50_us"],
        "ratio_decide_preparsed_p50": d["p50_us"] / p["p50_us"],
        "breakdown_us": breakdown, "profile": prof_text,
    }


def decide_breakdown(engine, store: Store, policy: Policy, clock: ManualClock,
                     rng: random.Random, n: int) -> dict:
    """The steps of DecisionEngine.decide, timed one by one (median microseconds per step).

    It replays decide's body with the engine's own functions; the model's predict is wrapped to
    time the VW call inside `_choose`.
    """
    perf = time.perf_counter_ns
    rules = guardrails.RuleTables.of(policy)
    _, model = engine.models.get(POLICY)
    predict_ns: list[int] = []
    inner = model.predict

    def timed_predict(shared, allowed):
        t0 = perf()
        try:
            return inner(shared, allowed)
        finally:
            predict_ns.append(perf() - t0)

    users = [f"breakdown-{rng.random()}-{i}" for i in range(n)]  # fresh people: every arm allowed
    grant(store, users)
    steps = {k: [] for k in ("validate", "person_key", "person_state", "guardrails", "choose_minus_predict",
                             "commit_decision", "render")}
    model.predict = timed_predict
    try:
        for uid in users:
            ctx = random_context(rng)
            t0 = perf()
            context = validate_context(policy, ctx)
            now = request_time(engine.clock, None)
            t1 = perf()
            key = store.person_key(uid)
            t2 = perf()
            person = store.person_state(key, now - engine._lookback[policy.name], policy.name,
                                        now - engine._signal_lookback[policy.name], None)
            t3 = perf()
            verdict = guardrails.evaluate(policy, person, now, rules=rules)
            t4 = perf()
            before = len(predict_ns)
            decision = engine._choose(policy, key, context, person, verdict, now, None)
            t5 = perf()
            ok = store.commit_decision(decision, person.marker)
            t6 = perf()
            render(policy, decision, verdict)
            t7 = perf()
            assert ok
            steps["validate"].append(t1 - t0)
            steps["person_key"].append(t2 - t1)
            steps["person_state"].append(t3 - t2)
            steps["guardrails"].append(t4 - t3)
            steps["choose_minus_predict"].append(t5 - t4 - (predict_ns[-1] if len(predict_ns) > before else 0))
            steps["commit_decision"].append(t6 - t5)
            steps["render"].append(t7 - t6)
            clock.advance(1.0)
    finally:
        del model.predict
    out = {k: pct(v, 50) for k, v in steps.items()}
    out["vw_predict"] = pct(predict_ns, 50) if predict_ns else 0.0
    return out


def profile_decide(engine, store: Store, clock: ManualClock, rng: random.Random, n: int) -> str:
    users = [f"profile-{rng.random()}-{i}" for i in range(n)]
    grant(store, users)
    reqs = [DecideInput(u, random_context(rng)) for u in users]
    prof = cProfile.Profile()
    prof.enable()
    for r in reqs:
        engine.decide(POLICY, r)
        clock.advance(1.0)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def bench_wsgi(n: int, workdir: Path, seed: int, profile: bool) -> dict:
    """Per-request cost of the HTTP handlers without sockets or gunicorn: the Flask test client
    against the real app (examples/policies) and against the empty app, plus engine.decide called
    directly on the same store. The difference is what Flask, request parsing and the JSON response
    add to a decide."""
    import importlib.util

    from service.api.app import create_app

    spec = importlib.util.spec_from_file_location("_empty_app", ROOT / "scripts" / "_empty_app.py")
    empty_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(empty_mod)
    rng = random.Random(seed)
    perf = time.perf_counter_ns
    app = create_app({"DB": str(workdir / "wsgi.db"), "POLICIES": str(ROOT / "examples" / "policies"),
                      "CLOCK": "system"})
    engine = app.extensions["tactful"]
    client = app.test_client()
    users = [f"wsgi-{i}" for i in range(3 * n + 300)]
    grant(engine.store, users)
    bodies = [{"user_id": u, "context": random_context(rng)} for u in users]
    path = f"/v1/policies/{POLICY}/decide"
    for b in bodies[:200]:
        assert client.post(path, json=b).status_code == 200
    tactful_ns, direct_ns = [], []
    for b in bodies[200:200 + n]:
        t0 = perf()
        r = client.post(path, json=b)
        tactful_ns.append(perf() - t0)
        assert r.status_code == 200
    for b in bodies[200 + n:200 + 2 * n]:
        t0 = perf()
        engine.decide(POLICY, DecideInput(b["user_id"], b["context"]))
        direct_ns.append(perf() - t0)
    empty_client = empty_mod.app.test_client()
    for b in bodies[:200]:
        empty_client.post(path, json=b)
    empty_ns = []
    for b in bodies[200:200 + n]:
        t0 = perf()
        empty_client.post(path, json=b)
        empty_ns.append(perf() - t0)
    prof_text = None
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for b in bodies[200 + 2 * n:200 + 3 * n]:
            client.post(path, json=b)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
        prof_text = buf.getvalue()
    engine.store.close()
    return {"arms": len(engine.policies[POLICY].arms), "empty": summarize(empty_ns),
            "decide_http_handler": summarize(tactful_ns), "decide_direct": summarize(direct_ns),
            "profile": prof_text}


# -- part 2: HTTP --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str, method: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request(method, path, body=b"{}" if method == "POST" else None,
                         headers={"Content-Type": "application/json"})
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer on port {port} after {timeout}s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # the whole session we started (serve and its gunicorn + learner children)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


WRK_LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end
function init(args)
  math.randomseed(os.time() * 100 + id)
end
local segments = {"new_users", "bargain_hunters", "loyal", "dormant"}
local pool = POOL
request = function()
  local uid = "bench-" .. math.random(0, pool - 1)
  local seg = segments[math.random(1, #segments)]
  local body = string.format('{"user_id":"%s","context":{"segment":"%s","country":"FR","tenure_days":%d}}',
                             uid, seg, math.random(0, 1500))
  return wrk.format("POST", "/v1/policies/lifecycle/decide", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write("WRKJSON " .. string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max) .. "\n")
end
"""


def run_wrk(port: int, seconds: int, connections: int, threads: int, script: Path) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
           f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    r["tool"] = f"wrk -t{threads} -c{connections} -d{seconds}s"
    return r


def _py_load_worker(port: int, seconds: float, pool: int, seed: int, queue) -> None:
    rng = random.Random(seed)
    lat, errors, n = [], 0, 0
    conn = None
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = json.dumps({"user_id": f"bench-{rng.randrange(pool)}",
                           "context": {"segment": rng.choice(SEGMENTS), "country": "FR",
                                       "tenure_days": rng.randint(0, 1500)}})
        t0 = time.perf_counter_ns()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/v1/policies/lifecycle/decide", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status >= 400:
                errors += 1
            if resp.will_close:
                conn.close()
                conn = None
        except OSError:
            errors += 1
            conn = None
        lat.append(time.perf_counter_ns() - t0)
        n += 1
    queue.put((n, errors, lat))


def run_python_load(port: int, seconds: int, connections: int, pool: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_py_load_worker, args=(port, seconds, pool, i, q)) for i in range(connections)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    lat = [x for r in results for x in r[2]]
    n = sum(r[0] for r in results)
    return {"requests": n, "duration_us": int(elapsed * 1e6), "rps": n / elapsed, "errors": sum(r[1] for r in results),
            "p50_us": pct(lat, 50), "p90_us": pct(lat, 90), "p99_us": pct(lat, 99),
            "mean_us": float(np.mean(lat)) / 1000, "tool": f"python http.client, {connections} processes"}


def load(port: int, seconds: int, connections: int, loadgen: str, script: Path, pool: int) -> dict:
    if loadgen == "wrk":
        return run_wrk(port, seconds, connections, 1, script)
    return run_python_load(port, seconds, connections, pool)


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, cpu seconds (user + system), command line) of every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, cmd.strip())
    return table


def cpu_by_role(root: int) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of `root` and its descendants, each labelled with its role."""
    table = _proc_table()
    out: dict[int, tuple[str, float]] = {}

    def walk(pid: int, parent_role: str | None) -> None:
        _, cpu, cmd = table[pid]
        if " learn" in cmd:
            role = "learner"
        elif parent_role == "gunicorn master":
            role = "gunicorn workers"
        elif " serve" in cmd:
            role = "serve (supervisor)"
        else:
            role = "gunicorn master"  # `tactful web`, or the gunicorn command itself
        out[pid] = (role, cpu)
        for child, (pp, _, _) in table.items():
            if pp == pid:
                walk(child, role)

    if root in table:
        walk(root, None)
    return out


def _cpu_sample() -> tuple[int, int]:
    """(all ticks, idle ticks) of every core, from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return sum(vals), vals[3] + vals[4]


def other_cpu_load(seconds: float = 1.0) -> float:
    """Share of all cores busy over `seconds`, from /proc/stat (before we start anything)."""
    sample = _cpu_sample
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    roles: dict[str, float] = {}
    for pid, (role, cpu) in after.items():
        roles[role] = roles.get(role, 0.0) + cpu - before.get(pid, (role, 0.0))[1]
    return roles


def measured_load(proc: subprocess.Popen, port: int, args, loadgen: str, script: Path, pool: int) -> dict:
    """One measured load run, with the CPU each server process and the load generator used."""
    import resource
    before = cpu_by_role(proc.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    all0, idle0 = _cpu_sample()
    r = load(port, args.seconds, args.connections, loadgen, script, pool)
    all1, idle1 = _cpu_sample()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu_delta(before, cpu_by_role(proc.pid))
    cpu["load generator"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    wall = r["duration_us"] / 1e6
    r["cpu_seconds"] = cpu
    r["cpu_ms_per_request"] = {k: 1000 * v / max(r["requests"], 1) for k, v in cpu.items()}
    r["cpu_busy_share"] = sum(cpu.values()) / (wall * (os.cpu_count() or 1))
    # every core's busy time (all processes, kernel included) over the run, from /proc/stat
    r["machine_busy_share"] = 1.0 - (idle1 - idle0) / max(all1 - all0, 1)
    return r


def bench_http(args, workdir: Path) -> dict:
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    pool = args.users
    script = workdir / "decide.lua"
    script.write_text(WRK_LUA.replace("POOL", str(pool)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results: dict = {"loadgen": loadgen, "connections": args.connections, "seconds": args.seconds,
                     "consented_users": pool}
    bin_dir = Path(sys.executable).parent
    tactful = bin_dir / "tactful"
    gunicorn = bin_dir / "gunicorn"

    # the baseline: an empty Flask endpoint, gunicorn with 2 sync workers
    port = free_port()
    log = open(workdir / "empty.log", "wb")
    empty = subprocess.Popen([str(gunicorn), "-w", str(args.workers), "-k", "sync", "-b", f"127.0.0.1:{port}",
                              "--timeout", "30", "--graceful-timeout", "10", "--no-control-socket", "--chdir", str(ROOT / "scripts"),
                              "_empty_app:app"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    try:
        wait_http(port, "/v1/policies/lifecycle/decide", "POST", 30, empty)
        load(port, args.warmup, args.connections, loadgen, script, pool)
        results["empty"] = measured_load(empty, port, args, loadgen, script, pool)
    finally:
        stop(empty, signal.SIGTERM)
        log.close()

    # tactful serve: gunicorn (2 sync workers) + the learner, on a fresh database
    port = free_port()
    db = workdir / "serve.db"
    log = open(workdir / "serve.log", "wb")
    serve = subprocess.Popen([str(tactful), "serve", "--workers", str(args.workers), "--port", str(port),
                              "--db", str(db), "--policies", str(ROOT / "examples" / "policies")],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(port, "/healthz", "GET", 60, serve)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps({"channels": {"email": True, "push": True, "sms": True}, "source": "bench"})
        t0 = time.perf_counter()
        for i in range(pool):
            conn.request("PUT", f"/v1/users/bench-{i}/consent", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"consent for bench-{i}: HTTP {resp.status}")
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()
        results["consent_seconds"] = time.perf_counter() - t0
        load(port, args.warmup, args.connections, loadgen, script, pool)
        with sqlite3.connect(db) as c:
            seq_before = c.execute("SELECT coalesce(max(seq), 0) FROM decisions").fetchone()[0]
        results["decide"] = measured_load(serve, port, args, loadgen, script, pool)
        with sqlite3.connect(db) as c:
            row = c.execute("SELECT count(*), avg(json_array_length(allowed)), sum(mode='holdout'), "
                            "sum(channel IS NULL) FROM decisions WHERE seq>?", (seq_before,)).fetchone()
            results["decide_db"] = {"decisions_logged": row[0], "mean_allowed_arms": row[1],
                                    "holdout": row[2], "hold_arm": row[3]}
    finally:
        results["serve_exit_code"] = stop(serve, signal.SIGINT)
        log.close()
    from service.policy import load_policies
    results["policy_arms"] = len(load_policies(ROOT / "examples" / "policies")[POLICY].arms)
    results["ratio_rps"] = results["decide"]["rps"] / results["empty"]["rps"]
    return results


# -- report --------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import importlib.metadata

    import gunicorn
    import vowpalwabbit
    wrk = None
    if shutil.which("wrk"):
        with contextlib.suppress(Exception):
            wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "vowpalwabbit": vowpalwabbit.__version__, "flask": importlib.metadata.version("flask"), "gunicorn": gunicorn.__version__, "sqlite": sqlite3.sqlite_version, "wrk": wrk,
            "platform": platform.platform()}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def markdown(res: dict) -> str:
    lines = []
    m = res["machine"]
    lines.append(f"Machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}, VW {m['vowpalwabbit']}, "
                 f"gunicorn {m['gunicorn']}, SQLite {m['sqlite']}" + (f", {m['wrk']}" if m.get("wrk") else ""))
    lines.append(f"CPU busy before the benchmark started (other processes): {100 * res.get('busy_before_start', 0):.0f}%")
    lines.append("")
    if res.get("inprocess"):
        lines.append("### In-process decide vs bare VW predict (microseconds)")
        lines.append("")
        lines.append("| arms | decide p50 | decide p99 | text predict p50 | text predict p99 | pre-parsed p50 "
                     "| pre-parsed p99 | decide / text (p50) | decide / pre-parsed (p50) |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["inprocess"]:
            lines.append(f"| {r['arms']} | {r['decide']['p50_us']:.0f} | {r['decide']['p99_us']:.0f} "
                         f"| {r['predict_text']['p50_us']:.0f} | {r['predict_text']['p99_us']:.0f} "
                         f"| {r['predict_preparsed']['p50_us']:.0f} | {r['predict_preparsed']['p99_us']:.0f} "
                         f"| {r['ratio_decide_text_p50']:.2f} | {r['ratio_decide_preparsed_p50']:.2f} |")
        lines.append("")
        lines.append("| arms | policy | decides timed | modes | mean allowed arms | model version (decisions learned) "
                     "| mean top probability (uniform) | max abs diff pre-parsed vs text pmf |")
        lines.append("|---:|---|---:|---|---:|---|---|---:|")
        for r in res["inprocess"]:
            modes = ", ".join(f"{k} {v}" for k, v in sorted(r["modes"].items()))
            lines.append(f"| {r['arms']} | {r['policy']} | {r['decide']['n']} | {modes} | {r['mean_allowed']:.1f} "
                         f"| v{r['model_version']} ({r['trained_on']}) "
                         f"| {r['mean_top_probability']:.3f} ({r['uniform_probability']:.3f}) "
                         f"| {r['max_abs_diff_pre_vs_text']:.2e} |")
        lines.append("")
        lines.append("Where a decide's time goes (median microseconds per step, same engine and model):")
        lines.append("")
        keys = list(res["inprocess"][0]["breakdown_us"])
        lines.append("| arms | " + " | ".join(keys) + " |")
        lines.append("|---:|" + "---:|" * len(keys))
        for r in res["inprocess"]:
            lines.append(f"| {r['arms']} | " + " | ".join(f"{r['breakdown_us'][k]:.0f}" for k in keys) + " |")
        lines.append("")
        w = res.get("wsgi")
        if w:
            lines.append(f"HTTP handlers in process (Flask test client, no sockets; examples/policies, {w['arms']} arms, "
                         "every person consented; microseconds):")
            lines.append("")
            lines.append("| path | p50 | p99 | mean |")
            lines.append("|---|---:|---:|---:|")
            for key, label in (("empty", "empty Flask endpoint"), ("decide_direct", "engine.decide, called directly"),
                               ("decide_http_handler", "POST /v1/policies/lifecycle/decide")):
                r = w[key]
                lines.append(f"| {label} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['mean_us']:.0f} |")
            lines.append("")
        for r in res["inprocess"]:
            lines.append(f"- {r['arms']} arms: decide p50 <= 3x text predict p50 (must): "
                         f"{verdict(r['ratio_decide_text_p50'] <= 3)} ({r['ratio_decide_text_p50']:.2f}x); "
                         f"decide p50 <= 3x pre-parsed p50 (goal): "
                         f"{verdict(r['ratio_decide_preparsed_p50'] <= 3)} ({r['ratio_decide_preparsed_p50']:.2f}x)")
        lines.append("")
    h = res.get("http")
    if h:
        lines.append(f"### HTTP, {h['empty']['tool']}, POST /v1/policies/lifecycle/decide "
                     f"({h['policy_arms']} arms), {h['consented_users']} consented users")
        lines.append("")
        lines.append("| target | requests | req/s | p50 ms | p90 ms | p99 ms | errors |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, label in (("empty", "empty Flask endpoint (gunicorn, 2 sync workers)"),
                            ("decide", "tactful serve --workers 2 (decide)")):
            r = h[name]
            lines.append(f"| {label} | {r['requests']} | {r['rps']:.0f} | {r['p50_us'] / 1000:.2f} "
                         f"| {r['p90_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['errors']} |")
        lines.append("")
        db = h.get("decide_db") or {}
        roles = sorted({k for name in ("empty", "decide") for k in h[name].get("cpu_ms_per_request", {})})
        if roles:
            lines.append("CPU milliseconds per request during the measured run, by process (2 cores are "
                         "shared by the servers and the load generator):")
            lines.append("")
            lines.append("| target | " + " | ".join(roles) + " | all | cores busy (ours) | cores busy (machine) |")
            lines.append("|---|" + "---:|" * (len(roles) + 3))
            for name in ("empty", "decide"):
                c = h[name]["cpu_ms_per_request"]
                cells = " | ".join(f"{c[k]:.2f}" if k in c else "-" for k in roles)
                lines.append(f"| {name} | {cells} | {sum(c.values()):.2f} | {100 * h[name]['cpu_busy_share']:.0f}% "
                             f"| {100 * h[name].get('machine_busy_share', 0):.0f}% |")
            lines.append("")
        lines.append(f"Decisions logged during the measured run: {db.get('decisions_logged')}, mean allowed arms "
                     f"{(db.get('mean_allowed_arms') or 0):.1f}, holdout {db.get('holdout')}, hold arm {db.get('hold_arm')}.")
        lines.append("")
        lines.append(f"- decide throughput >= 0.5x the empty endpoint's: {verdict(h['ratio_rps'] >= 0.5)} "
                     f"({h['ratio_rps']:.2f}x)")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a fast smoke run: fewer samples, 3 s of load")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of decide at the largest arm count")
    ap.add_argument("--contents", default="4,lifecycle,17",
                    help="content items per size (arms = 12 x N + 1; 'lifecycle': the example policy as it is, "
                         "70 arms); default 4,lifecycle,17 (49, 70 and 205 arms)")
    ap.add_argument("--decides", type=int, default=None, help="timed decides per size (default 3000; quick 300)")
    ap.add_argument("--train", type=int, default=None, help="simulated training decisions (default 600; quick 150)")
    ap.add_argument("--seconds", type=int, default=None, help="measured load per HTTP target (default 15; quick 3)")
    ap.add_argument("--warmup", type=int, default=None, help="unmeasured load before each (default 3; quick 1)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers of both servers (default 2)")
    ap.add_argument("--users", type=int, default=None, help="consented users of the HTTP run (default 5000; quick 200)")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    q = args.quick
    args.decides = args.decides or (300 if q else 3000)
    args.train = args.train or (150 if q else 600)
    args.seconds = args.seconds or (3 if q else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 3)
    args.users = args.users or (200 if q else 5000)

    res: dict = {"machine": machine(), "command": " ".join([Path(sys.executable).name] + sys.argv),
                 "quick": q, "inprocess": [], "http": None}
    res["busy_before_start"] = other_cpu_load(2.0)
    if res["busy_before_start"] > 0.1:
        print(f"warning: the machine is {100 * res['busy_before_start']:.0f}% busy before the benchmark starts; "
              "figures will be noisy", file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="tactful-bench-"))
    try:
        if not args.skip_inprocess:
            sizes = [None if x.strip() == "lifecycle" else int(x) for x in args.contents.split(",")]
            for i, n in enumerate(sizes):
                print(f"in process: {'lifecycle' if n is None else 12 * n + 1} arms ...", file=sys.stderr, flush=True)
                r = bench_inprocess(n, args.train, args.decides, workdir, args.seed + (n or 0),
                                    args.profile and i == len(sizes) - 1)
                res["inprocess"].append(r)
            print("in process: WSGI handlers through the Flask test client ...", file=sys.stderr, flush=True)
            res["wsgi"] = bench_wsgi(args.decides, workdir, args.seed, args.profile)
        if not args.skip_http:
            print("HTTP: empty endpoint, then tactful serve ...", file=sys.stderr, flush=True)
            res["http"] = bench_http(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(markdown(res))
    for r in res["inprocess"]:
        if r.get("profile"):
            print(f"cProfile of decide at {r['arms']} arms (sorted by own time):\n")
            print("```\n" + r["profile"].strip() + "\n```")
    if (res.get("wsgi") or {}).get("profile"):
        print("\ncProfile of POST /v1/policies/lifecycle/decide through the Flask test client (sorted by own time):\n")
        print("```\n" + res["wsgi"]["profile"].strip() + "\n```")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
