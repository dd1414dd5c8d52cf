#!/usr/bin/env python
"""Benchmark the two store backends side by side, SQLite and PostgreSQL, on this machine (issue
"Beyond one machine: a PostgreSQL store, many replicas, one elected learner, bounded storage"),
and print a Markdown report.

    PYTHONPATH=. .venv/bin/python scripts/bench_store.py --quick     # smoke run of every part (1-2 min)
    PYTHONPATH=. .venv/bin/python scripts/bench_store.py --json out/bench_store.json  # full (~10 min)
    PYTHONPATH=. .venv/bin/python scripts/bench_store.py --parts http --rounds 5 --seconds 15

PostgreSQL is the server TACTFUL_TEST_PG names (default postgresql://postgres@127.0.0.1:5432/test);
every measurement on it uses a fresh schema, dropped afterwards. The http part needs wrk
(`apt-get install wrk`). Every server this script starts is stopped when it ends, Ctrl-C included.

learner   Decisions learned per second by the online learner. A decision log is simulated once
          (examples/scenarios/standard.toml with its own policy; --decisions asks plus the
          scenario's warm-up week). For each backend, 3 runs: a fresh store imports the log's
          decisions and outcomes and gets the policy's first model version, then one
          `OnlineLearner.step` learns every decision (batch larger than the log, the clock after
          the last reward window closed). The step is timed: reading the decisions and outcomes,
          the rewards, VW learning, publishing the version with every decision's reward and the
          cursor. The store is opened as `tactful learn` opens it: on SQLite its WAL is
          checkpointed by a thread every second, not in the step's commit. Median of 3. Target:
          20,000 decisions/s on both.
storage   Bytes per decision (the decisions, decision_rewards, contacts and outcomes tables with
          their indexes, divided by the decisions) and per model version (model_versions /
          versions), of that simulated log: SQLite from the dbstat virtual table (pages in use, as the simulator left
          the file), PostgreSQL from pg_total_relation_size (heap, TOAST and indexes) after copying
          every table of the log into a fresh schema and VACUUM ANALYZE. (PostgreSQL compresses
          the long JSON columns of a decision row, allowed, probabilities and removed; SQLite not.)
http      Decide throughput and latency under wrk (POST /v1/policies/lifecycle/decide for a
          consented person drawn at random; examples/policies, --clock system) for SQLite with one
          replica (`tactful serve --workers 2`), PostgreSQL with one replica (--workers 2) and
          PostgreSQL with two replicas on this machine (--workers 1 each; one wrk per replica with
          half the connections, their requests summed, the slower one's latency). Each run has a
          fresh store; the configurations alternate in rounds (rotating which goes first) so that
          drift of the machine's speed hits all alike. Target: PostgreSQL with one replica at
          least 0.70x SQLite's throughput.
failover  Two replicas (--workers 1 each, --clock request, learn_every_seconds = 1) on one fresh
          schema. Decisions are made and learned; more are made (their windows still open); the
          replica whose learner holds the lease is killed with SIGKILL, its whole process group;
          the request clock is moved two days ahead so those windows close. Measured from the
          kill: until the other replica's learner holds the lease, and until every closed decision
          is learned; then exactly-once is checked (the online versions' n_learned add up to the
          decisions learned, every closed decision is learned, the versions' cursors increase).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_decide  # noqa: E402  wrk (run_wrk, WRK_LUA), wait_http, stop, CPU accounting, machine
from service.clock import ManualClock  # noqa: E402
from service.policy import load_policy  # noqa: E402
from service.policy.bandit import ensure_active_version  # noqa: E402
from service.runtime import CHECKPOINT_SECONDS, build_learner  # noqa: E402
from service.store import Decision, open_store  # noqa: E402
from service.store.decisions import DECISION_ROW, DECISION_ROWS  # noqa: E402
from service.store.postgres import safe_location  # noqa: E402

PG_URL = os.environ.get("TACTFUL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
SCENARIO = ROOT / "examples" / "scenarios" / "standard.toml"
POLICIES = ROOT / "examples" / "policies"
PARTS = ("learner", "storage", "http", "failover")
BACKENDS = ("sqlite", "postgresql")
LEARNER_RUNS = 3
LEARNER_TARGET = 20_000  # decisions per second, both backends
HTTP_TARGET = 0.70       # PostgreSQL one replica / SQLite, decide throughput
HTTP_CONFIGS = {         # key -> (backend, replicas, gunicorn workers per replica, label)
    "sqlite_1x2": ("sqlite", 1, 2, "SQLite, 1 replica x 2 workers"),
    "postgresql_1x2": ("postgresql", 1, 2, "PostgreSQL, 1 replica x 2 workers"),
    "postgresql_2x1": ("postgresql", 2, 1, "PostgreSQL, 2 replicas x 1 worker"),
    "postgresql_1x4": ("postgresql", 1, 4, "PostgreSQL, 1 replica x 4 workers"),
    "sqlite_1x4": ("sqlite", 1, 4, "SQLite, 1 replica x 4 workers"),
    "postgresql-async_1x2": ("postgresql-async", 1, 2, "PostgreSQL (synchronous_commit off), 1 replica x 2 workers"),
}
DEFAULT_HTTP = "sqlite_1x2,postgresql_1x2,postgresql_2x1"
PER_DECISION_TABLES = ("decisions", "decision_rewards", "contacts", "outcomes")
START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)  # the failover part's request clock
ALL_CHANNELS = {"email": True, "push": True, "sms": True, "in_app": True}
T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- stores and servers, each cleaned up on the way out ----------------------------------------

def with_schema(url: str, schema: str) -> str:
    """`url` with its search_path set to `schema` (libpq's `options` parameter)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextlib.contextmanager
def pg_schema():
    """The URL of a fresh, empty schema of the PostgreSQL server, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield with_schema(PG_URL, name)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@contextlib.contextmanager
def store_address(backend: str, workdir: Path):
    """Where a fresh store of `backend` lives: a new SQLite file, or a new schema."""
    if backend.startswith("postgresql"):
        with pg_schema() as url:
            # postgresql-async: commits return before the WAL is flushed, as SQLite's WAL mode
            # with synchronous=NORMAL (the SQLite store's setting) does
            yield url.replace("options=", "options=-csynchronous_commit%3Doff%20") if backend.endswith("async") else url
        return
    path = workdir / f"store-{uuid.uuid4().hex[:8]}.db"
    try:
        yield str(path)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def serving(db: str, policies: Path, workdir: Path, workers: int, clock: str = "system"):
    """`tactful serve` (gunicorn workers and a learner candidate) leading a session of its own:
    yields (process, port) once /healthz answers; stopped with SIGINT, then its whole process
    group killed, whatever happens."""
    port = bench_decide.free_port()
    log_path = workdir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--db", db,
           "--policies", str(policies), "--clock", clock, "--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        try:
            bench_decide.wait_http(port, "/healthz", "GET", 60, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"tactful serve did not start ({exc}):\n{log_path.read_text()[-3000:]}") from None
        yield proc, port
    finally:
        bench_decide.stop(proc, signal.SIGINT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its session that outlived it


class Refused(RuntimeError):
    """A part that cannot be measured on this machine as it is (reported without a traceback)."""


class Client:
    """One keep-alive HTTP connection to a local server; JSON in and out."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def expect(self, status: int, method: str, path: str, body: dict | None = None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.conn.request(method, path, body=None if body is None else json.dumps(body),
                          headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.close()
        if resp.status != status:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} (expected {status}): {data[:300]!r}")
        return json.loads(data) if data else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- part 1: the learner --------------------------------------------------------------------

def build_log(path: Path, decisions: int) -> None:
    """The simulator's decision log of the standard scenario, in a SQLite store at `path`."""
    from service.simulation.run import simulate  # the simulator is only needed here
    simulate(SCENARIO, monotonic=time.monotonic, decisions=decisions, db=str(path), progress=False)


def scenario_policy():
    """The policy the standard scenario names (its `policy` key, relative to the scenario)."""
    name = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))["policy"]
    path = SCENARIO.parent / name
    return load_policy(path), str(path.relative_to(ROOT))


def read_log(path: Path) -> tuple[list, list]:
    """Every decision of the log, in order, and every outcome of theirs (read only: the log is
    measured as the simulator left it)."""
    log = open_store(str(path), migrate=False)
    try:
        rows = log.query(f"SELECT {DECISION_ROW} FROM decisions ORDER BY seq")
        decisions = [Decision.from_row(dict(r)) for r in rows]
        by_event = log.outcomes_for([d.event_id for d in decisions])
    finally:
        log.close()
    return decisions, [o for d in decisions for o in by_event[d.event_id]]


def learn_once(address: str, policy, decisions: list, outcomes: list) -> dict:
    """A fresh store at `address` with the log imported; one learner step over all of it, timed."""
    store = open_store(address)
    try:
        t0 = time.perf_counter()
        store.import_logged(decisions, outcomes)
        store.checkpoint_in_background(CHECKPOINT_SECONDS)  # as `tactful learn` opens its store
        imported = time.perf_counter() - t0
        ensure_active_version(store, policy, decisions[0].decided_at)
        clock = ManualClock(max(d.closes_at for d in decisions) + 1.0)
        learner = build_learner(store, {policy.name: policy}, clock, batch=len(decisions) + 1)
        t0 = time.perf_counter()
        learned = learner.step(policy.name)
        seconds = time.perf_counter() - t0
    finally:
        store.close()
    if learned != len(decisions):
        raise RuntimeError(f"the learner learned {learned} of {len(decisions)} decisions")
    return {"learned": learned, "seconds": seconds, "per_second": learned / seconds, "import_seconds": imported}


def bench_learner(args, workdir: Path, log_path: Path) -> dict:
    policy, policy_file = scenario_policy()
    decisions, outcomes = read_log(log_path)
    policies = {d.policy for d in decisions}
    if policies != {policy.name}:
        raise RuntimeError(f"the log's decisions are of {policies}, the scenario's policy is {policy.name!r}")
    runs: dict[str, list] = {b: [] for b in BACKENDS}
    for i in range(LEARNER_RUNS):
        for backend in BACKENDS:
            progress(f"learner: run {i + 1}/{LEARNER_RUNS} on {backend} ({len(decisions)} decisions) ...")
            with store_address(backend, workdir) as address:
                r = learn_once(address, policy, decisions, outcomes)
            runs[backend].append(r)
            progress(f"learner: {backend}: {r['per_second']:,.0f} decisions/s (import {r['import_seconds']:.1f} s)")
    return {"policy": policy_file, "arms": len(policy.arms), "decisions": len(decisions),
            "outcomes": len(outcomes), "mean_allowed_arms": sum(len(d.allowed) for d in decisions) / len(decisions),
            "runs": runs, "target": LEARNER_TARGET,
            "median_per_second": {b: statistics.median(r["per_second"] for r in rs) for b, rs in runs.items()}}


# -- part 2: storage ------------------------------------------------------------------------

def sqlite_sizes(path: Path) -> dict[str, dict]:
    """Bytes of every table (pages in use, dbstat), its indexes' share, and its rows."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes: dict[str, dict] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name)  # sqlite_schema itself has no row of its own
            if table is None or table.startswith("sqlite_"):
                continue
            entry = sizes.setdefault(table, {"bytes": 0, "index_bytes": 0})
            entry["bytes"] += size
            if name != table:
                entry["index_bytes"] += size
        for t, entry in sizes.items():
            entry["rows"] = conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        return dict(sorted(sizes.items()))


def copy_to_postgres(log_path: Path, url: str) -> list[str]:
    """Every table of the SQLite log into the PostgreSQL store's own tables at `url` (created by
    `open_store`), column by column as SQLite names them; then VACUUM ANALYZE. Returns the tables."""
    open_store(url).close()
    with contextlib.closing(sqlite3.connect(f"file:{log_path}?mode=ro", uri=True)) as src, \
            psycopg.connect(url) as dst:
        tables = [r[0] for r in src.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
            names = ", ".join(f'"{c}"' for c in cols)
            insert = (f'INSERT INTO "{table}" ({names}) VALUES ({", ".join(["%s"] * len(cols))}) '
                      "ON CONFLICT DO NOTHING")  # meta's rows are the new store's own
            rows = src.execute(f'SELECT {names} FROM "{table}"')
            with dst.cursor() as cur:
                while batch := rows.fetchmany(2000):
                    cur.executemany(insert, batch)
        dst.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE " + ", ".join(f'"{t}"' for t in tables))  # our tables, not the database
    return tables


def postgres_sizes(url: str) -> dict[str, dict]:
    """pg_total_relation_size (heap, TOAST, indexes) of every table of the schema, its indexes'
    share, and its rows."""
    sql = "SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass)"
    sizes: dict[str, dict] = {}
    with psycopg.connect(url) as conn:
        for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                 "ORDER BY tablename").fetchall():
            total, indexes = conn.execute(sql, (f'"{t}"', f'"{t}"')).fetchone()
            rows = conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            sizes[t] = {"bytes": total, "index_bytes": indexes, "rows": rows}
    return sizes


def ratios(sizes: dict[str, dict]) -> dict:
    decisions, versions = sizes["decisions"]["rows"], sizes["model_versions"]["rows"]
    per_decision = sum(sizes[t]["bytes"] for t in PER_DECISION_TABLES) / max(decisions, 1)
    per_version = sizes["model_versions"]["bytes"] / max(versions, 1)
    return {"bytes_per_decision": per_decision, "bytes_per_version": per_version,
            "decisions": decisions, "versions": versions}


def bench_storage(args, workdir: Path, log_path: Path) -> dict:
    progress("storage: SQLite (dbstat) ...")
    out = {"sqlite": {"tables": sqlite_sizes(log_path)}}
    progress("storage: copying the log into a fresh PostgreSQL schema, VACUUM ANALYZE ...")
    with pg_schema() as url:
        copy_to_postgres(log_path, url)
        out["postgresql"] = {"tables": postgres_sizes(url)}
    for backend in BACKENDS:
        out[backend].update(ratios(out[backend]["tables"]))
        progress(f"storage: {backend}: {out[backend]['bytes_per_decision']:,.0f} bytes per decision, "
                 f"{out[backend]['bytes_per_version']:,.0f} per model version")
    return out


# -- part 3: HTTP decide ------------------------------------------------------------------------

def consent_users(port: int, n: int, threads: int = 4) -> None:
    """Users bench-0 .. bench-(n-1) (those the wrk script asks about) consent to three channels."""
    body = {"channels": {"email": True, "push": True, "sms": True}, "source": "bench"}

    def some(first: int) -> None:
        client = Client(port)
        try:
            for i in range(first, n, threads):
                client.expect(200, "PUT", f"/v1/users/bench-{i}/consent", body)
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(some, range(threads)))


def wrk_each(ports: list[int], seconds: int, connections: int, script: Path) -> list[dict]:
    """One wrk per port at the same time, the connections shared out between them."""
    each = max(1, connections // len(ports))
    with ThreadPoolExecutor(len(ports)) as pool:
        return list(pool.map(lambda port: bench_decide.run_wrk(port, seconds, each, 1, script), ports))


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL server process (all of the server's, not ours only)."""
    return {pid: cpu for pid, (_, cpu, cmd) in bench_decide._proc_table().items() if cmd.startswith("postgres")}


def measured_load(servers: list, args, script: Path) -> dict:
    """One measured wrk run against every server, with the CPU each side used."""
    before = [bench_decide.cpu_by_role(proc.pid) for proc, _ in servers]
    pg_before = postgres_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    all0, idle0 = bench_decide._cpu_sample()
    runs = wrk_each([port for _, port in servers], args.seconds, args.connections, script)
    all1, idle1 = bench_decide._cpu_sample()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tactful = sum(sum(bench_decide.cpu_delta(b, bench_decide.cpu_by_role(proc.pid)).values())
                  for b, (proc, _) in zip(before, servers))
    pg = sum(cpu - pg_before.get(pid, 0.0) for pid, cpu in postgres_cpu().items())
    wrk = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    requests = sum(r["requests"] for r in runs)
    per_request = {k: 1000 * v / max(requests, 1) for k, v in (("tactful", tactful), ("postgresql", pg), ("wrk", wrk))}
    return {"rps": sum(r["rps"] for r in runs), "requests": requests,
            "p50_ms": max(r["p50_us"] for r in runs) / 1000, "p99_ms": max(r["p99_us"] for r in runs) / 1000,
            "errors": sum(r["errors"] for r in runs), "tool": runs[0]["tool"], "wrk": runs,
            "cpu_ms_per_request": per_request, "machine_busy": 1.0 - (idle1 - idle0) / max(all1 - all0, 1)}


def http_run(key: str, args, workdir: Path, script: Path) -> dict:
    """One configuration on a fresh store: start its replicas, consent the users, warm up, measure."""
    backend, replicas, workers, _ = HTTP_CONFIGS[key]
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(store_address(backend, workdir))
        servers = [stack.enter_context(serving(address, POLICIES, workdir, workers)) for _ in range(replicas)]
        consent_users(servers[0][1], args.users)
        wrk_each([port for _, port in servers], args.warmup, args.connections, script)
        return measured_load(servers, args, script)


def bench_http(args, workdir: Path, log_path: Path | None = None) -> dict:
    if not shutil.which("wrk"):
        raise Refused("the http part needs wrk, which is not installed: apt-get install wrk")
    script = workdir / "decide.lua"
    script.write_text(bench_decide.WRK_LUA.replace("POOL", str(args.users)))
    keys = args.configs
    runs: dict[str, list] = {k: [] for k in keys}
    for rnd in range(args.rounds):
        for key in keys[rnd % len(keys):] + keys[:rnd % len(keys)]:
            progress(f"http: round {rnd + 1}/{args.rounds}: {HTTP_CONFIGS[key][3]} ...")
            r = http_run(key, args, workdir, script)
            r["round"] = rnd + 1
            runs[key].append(r)
            progress(f"http: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                     f"{r['errors']} errors")
    median = {k: {m: statistics.median(r[m] for r in rs) for m in ("rps", "p50_ms", "p99_ms")}
              for k, rs in runs.items()}
    # the target compares one replica of each backend with the same workers: 2, else the first shape run on both
    shapes = [k.removeprefix("sqlite_") for k in keys if k.startswith("sqlite_")
              and "postgresql_" + k.removeprefix("sqlite_") in runs]
    shape = "1x2" if "1x2" in shapes else (shapes[0] if shapes else None)
    ratio, round_ratios = None, []
    if shape is not None:
        lite, pg = runs[f"sqlite_{shape}"], runs[f"postgresql_{shape}"]
        ratio = median[f"postgresql_{shape}"]["rps"] / median[f"sqlite_{shape}"]["rps"]
        round_ratios = [b["rps"] / a["rps"] for a, b in zip(lite, pg)]
    return {"runs": runs, "median": median, "ratio_shape": shape, "ratio_pg1_sqlite": ratio,
            "round_ratios": round_ratios,
            "target": HTTP_TARGET, "users": args.users, "connections": args.connections,
            "seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds}


# -- part 4: learner failover -----------------------------------------------------------------

def at(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def failover_policies(workdir: Path) -> Path:
    """A copy of examples/policies whose lifecycle policy learns every second."""
    out = workdir / "failover-policies"
    if not out.exists():
        shutil.copytree(POLICIES, out)
        toml = out / "lifecycle.toml"
        text, n = re.subn(r"(?m)^learn_every_seconds = .*$", "learn_every_seconds = 1", toml.read_text())
        if n != 1:
            raise RuntimeError("examples/policies/lifecycle.toml has no `learn_every_seconds = ` line to set")
        toml.write_text(text)
    return out


class Traffic:
    """Decisions on the request clock, 3 minutes apart (300 span 15 hours, less than the policy's
    one-day reward window), for users u0 .. u(users-1), taking turns over the clients; every fourth
    one gets a click."""

    def __init__(self, users: int):
        self.users = users
        self.when = START

    def consent(self, client: Client) -> None:
        for i in range(self.users):
            client.expect(200, "PUT", f"/v1/users/u{i}/consent", {"channels": ALL_CHANNELS, "timestamp": at(START)})

    def decide(self, clients: list[Client], n: int) -> None:
        for i in range(n):
            body = {"user_id": f"u{i % self.users}", "timestamp": at(self.when),
                    "context": {"segment": "s", "country": "FR", "tenure_days": 30}}
            d = clients[i % len(clients)].expect(200, "POST", "/v1/policies/lifecycle/decide", body)
            if i % 4 == 0:
                clients[0].expect(202, "POST", f"/v1/events/{d['event_id']}/outcomes",
                                  {"type": "click", "outcome_id": "c", "timestamp": at(self.when)})
            self.when += timedelta(minutes=3)

    def close_windows(self, client: Client) -> None:
        """One decision two days later: the request clock moves, every window before it closes."""
        self.when += timedelta(days=2)
        self.decide([client], 1)


CLOSED = "SELECT count(*) FROM decisions WHERE closes_at <= (SELECT now FROM clock WHERE id=1)"
LEARNED = f"SELECT count(*) FROM {DECISION_ROWS} WHERE learned_version IS NOT NULL"


def one(conn, sql: str):
    row = conn.execute(sql).fetchone()
    return row[0] if row else None


def wait_learned(conn, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while one(conn, LEARNED) < one(conn, CLOSED):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the closed decisions were not learned within {timeout:.0f} s")
        time.sleep(0.1)


def watch_takeover(conn, old_holder: str, killed: float, timeout: float = 90.0) -> dict:
    """Seconds from the kill until another learner holds the lease, and until every closed
    decision is learned."""
    lease = None
    while True:
        elapsed = time.monotonic() - killed
        holder = one(conn, "SELECT holder FROM leases WHERE name='learner'")
        if lease is None and holder not in (None, old_holder):
            lease = elapsed
        if one(conn, LEARNED) >= one(conn, CLOSED):
            return {"lease_seconds": lease if lease is not None else elapsed, "learned_seconds": elapsed,
                    "new_holder": holder}
        if elapsed > timeout:
            raise RuntimeError(f"the surviving replica did not learn within {timeout:.0f} s of the kill")
        time.sleep(0.05)


def exactly_once(conn) -> dict:
    learned, closed = one(conn, LEARNED), one(conn, CLOSED)
    n_learned = int(one(conn, "SELECT coalesce(sum(n_learned), 0) FROM model_versions WHERE source='online'"))
    cursors = [r[0] for r in conn.execute(
        "SELECT learned_through_seq FROM model_versions WHERE source='online' ORDER BY version")]
    ok = n_learned == learned == closed and cursors == sorted(set(cursors))
    return {"decisions": one(conn, "SELECT count(*) FROM decisions"), "closed": closed, "learned": learned,
            "sum_n_learned": n_learned, "online_versions": len(cursors), "exactly_once": ok}


def failover_once(args, workdir: Path, policies: Path) -> dict:
    n = 100 if args.quick else 300
    traffic = Traffic(users=150)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_schema())
        servers = [stack.enter_context(serving(url, policies, workdir, 1, clock="request")) for _ in range(2)]
        clients = [Client(port) for _, port in servers]
        for c in clients:
            stack.callback(c.close)
        conn = stack.enter_context(psycopg.connect(url, autocommit=True))
        traffic.consent(clients[0])
        traffic.decide(clients, n)
        traffic.close_windows(clients[0])
        wait_learned(conn, 60)
        traffic.decide(clients, n)  # windows open: nobody can learn these before the kill
        holder = one(conn, "SELECT holder FROM leases WHERE name='learner'")
        pgid = os.getpgid(int(holder.rsplit(":", 1)[1]))  # the learner's serve leads its group
        leader = next(i for i, (proc, _) in enumerate(servers) if proc.pid == pgid)
        os.killpg(pgid, signal.SIGKILL)
        killed = time.monotonic()
        servers[leader][0].wait(timeout=10)
        traffic.close_windows(clients[1 - leader])
        out = watch_takeover(conn, holder, killed)
        out.update(exactly_once(conn), killed_replica=leader + 1, old_holder=holder)
        return out


def bench_failover(args, workdir: Path, log_path: Path | None = None) -> dict:
    policies = failover_policies(workdir)
    runs = []
    for i in range(args.repeats):
        progress(f"failover: run {i + 1}/{args.repeats}: two replicas, traffic, kill the leader ...")
        r = failover_once(args, workdir, policies)
        runs.append(r)
        progress(f"failover: lease taken {r['lease_seconds']:.1f} s after the kill, all learned after "
                 f"{r['learned_seconds']:.1f} s, exactly once: {r['exactly_once']}")
    return {"runs": runs, "decisions_per_phase": 100 if args.quick else 300}


# -- report -----------------------------------------------------------------------------------

def machine() -> dict:
    m = bench_decide.machine()
    with psycopg.connect(PG_URL) as conn:
        m["postgresql"] = one(conn, "SHOW server_version")
    m["postgresql_url"] = safe_location(PG_URL)
    if m.get("wrk"):
        m["wrk"] = m["wrk"].split(" Copyright")[0]
    return m


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def md_machine(res: dict) -> list[str]:
    m = res["machine"]
    return [f"Machine: {m['nproc']} cores ({m['cpu']}); Python {m['python']}, PostgreSQL {m['postgresql']} "
            f"({m['postgresql_url']}), SQLite {m['sqlite']}, VW {m['vowpalwabbit']}, gunicorn {m['gunicorn']}"
            + (f", {m['wrk']}" if m.get("wrk") else ", no wrk") + f"; {m['platform']}.",
            f"CPU busy before the benchmark started (other processes): {100 * res['busy_before_start']:.0f}%. "
            f"Command: `{res['command']}`" + (" (--quick: a smoke run, not figures)" if res["quick"] else ""), ""]


def md_learner(r: dict) -> list[str]:
    lines = ["## Learner: decisions learned per second", "",
             f"One `OnlineLearner.step` over a simulated log of {r['decisions']:,} decisions and "
             f"{r['outcomes']:,} outcomes (examples/scenarios/standard.toml, policy {r['policy']}, "
             f"{r['arms']} arms, {r['mean_allowed_arms']:.1f} allowed arms per decision on average), "
             "on a fresh store each run.", "",
             "| backend | " + " | ".join(f"run {i + 1}" for i in range(LEARNER_RUNS))
             + " | median | import (not timed) | target 20,000/s |", "|---|" + "---:|" * (LEARNER_RUNS + 2) + "---|"]
    for b in BACKENDS:
        med = r["median_per_second"][b]
        cells = " | ".join(f"{x['per_second']:,.0f}" for x in r["runs"][b])
        imports = ", ".join(f"{x['import_seconds']:.1f}" for x in r["runs"][b])
        lines.append(f"| {b} | {cells} | {med:,.0f} | {imports} s | {verdict(med >= r['target'])} "
                     f"({med / r['target']:.2f}x) |")
    return lines + [""]


def md_storage(r: dict) -> list[str]:
    lite, pg = r["sqlite"], r["postgresql"]
    lines = ["## Storage", "",
             f"The simulated log: {lite['decisions']:,} decisions, {lite['versions']:,} model versions. "
             "SQLite: dbstat (pages in use, indexes included); PostgreSQL: pg_total_relation_size after "
             "copying every table and VACUUM ANALYZE.", "",
             "| | SQLite | PostgreSQL | PostgreSQL / SQLite |", "|---|---:|---:|---:|"]
    for key, label in (("bytes_per_decision", "bytes per decision (" + " + ".join(PER_DECISION_TABLES)
                        + ", with their indexes)"), ("bytes_per_version", "bytes per model version")):
        lines.append(f"| {label} | {lite[key]:,.0f} | {pg[key]:,.0f} | {pg[key] / lite[key]:.2f} |")
    lines += ["", "| table | rows | SQLite bytes | of which indexes | PostgreSQL bytes | of which indexes |",
              "|---|---:|---:|---:|---:|---:|"]
    for t in sorted(set(lite["tables"]) | set(pg["tables"])):
        a, b = lite["tables"].get(t, {}), pg["tables"].get(t, {})
        lines.append(f"| {t} | {a.get('rows', b.get('rows', 0)):,} | {a.get('bytes', 0):,} "
                     f"| {a.get('index_bytes', 0):,} | {b.get('bytes', 0):,} | {b.get('index_bytes', 0):,} |")
    return lines + [""]


def md_http(r: dict) -> list[str]:
    lines = ["## HTTP decide", "",
             f"wrk -t1 -c{r['connections']} -d{r['seconds']}s after {r['warmup']} s of warm-up (two replicas: "
             f"one wrk each with -c{max(1, r['connections'] // 2)}, summed), POST /v1/policies/lifecycle/decide, "
             f"{r['users']:,} consented users, examples/policies, --clock system, a fresh store each run. "
             "CPU in ms per request: tactful = every process of the replicas; postgresql = every process "
             "of the PostgreSQL server (others' included).", "",
             "| round | configuration | req/s | p50 ms | p99 ms | errors | CPU tactful | CPU postgresql "
             "| CPU wrk | machine busy |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, rs in r["runs"].items():
        for x in rs:
            c = x["cpu_ms_per_request"]
            lines.append(f"| {x['round']} | {HTTP_CONFIGS[key][3]} | {x['rps']:,.0f} | {x['p50_ms']:.2f} "
                         f"| {x['p99_ms']:.2f} | {x['errors']} | {c['tactful']:.2f} | {c['postgresql']:.2f} "
                         f"| {c['wrk']:.2f} | {100 * x['machine_busy']:.0f}% |")
    shape = r.get("ratio_shape") or "1x2"
    base = r["median"].get(f"sqlite_{shape}", {}).get("rps")
    lines += ["", f"| configuration (median of the rounds) | req/s | p50 ms | p99 ms | vs SQLite {shape} |",
              "|---|---:|---:|---:|---:|"]
    for key, m in r["median"].items():
        vs = f"{m['rps'] / base:.2f}" if base else "n/a"
        lines.append(f"| {HTTP_CONFIGS[key][3]} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {vs} |")
    if r["ratio_pg1_sqlite"] is None:
        return lines + ["", "- PostgreSQL / SQLite: not compared (no shape run on both backends)", ""]
    rounds = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
    lines += ["", f"- PostgreSQL one replica / SQLite throughput ({shape} on both) at least {r['target']:.2f}: "
              f"{verdict(r['ratio_pg1_sqlite'] >= r['target'])} ({r['ratio_pg1_sqlite']:.2f}x; "
              f"round by round: {rounds})", ""]
    return lines


def md_failover(r: dict) -> list[str]:
    lines = ["## Learner failover (PostgreSQL, two replicas)", "",
             f"{r['decisions_per_phase']} decisions learned, {r['decisions_per_phase']} more made, the leader's "
             "process group killed (SIGKILL), the request clock moved two days; seconds from the kill.", "",
             "| run | killed | other learner holds the lease | all closed decisions learned | decisions closed "
             "| learned | sum of n_learned | online versions | exactly once |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for i, x in enumerate(r["runs"], 1):
        lines.append(f"| {i} | replica {x['killed_replica']} | {x['lease_seconds']:.1f} s "
                     f"| {x['learned_seconds']:.1f} s | {x['closed']} | {x['learned']} | {x['sum_n_learned']} "
                     f"| {x['online_versions']} "
                     f"| {'yes' if x['exactly_once'] else '**NO**'} |")
    return lines + [""]


def markdown(res: dict) -> str:
    lines = ["# Store backends: SQLite and PostgreSQL", ""] + md_machine(res)
    for part, render in (("learner", md_learner), ("storage", md_storage), ("http", md_http),
                         ("failover", md_failover)):
        if part in res["errors"]:
            lines += [f"## {part}", "", f"**Not measured**: {res['errors'][part]}", ""]
        elif part in res:
            lines += render(res[part])
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default all)")
    ap.add_argument("--quick", action="store_true", help="a smoke run of every part (about 2 minutes)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    ap.add_argument("--decisions", type=int, help="simulated asks of the log (default 20000; quick 2000)")
    ap.add_argument("--rounds", type=int, help="rounds of the http configurations (default 3; quick 1)")
    ap.add_argument("--seconds", type=int, help="measured wrk seconds per run (default 10; quick 3)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections in all (default 16)")
    ap.add_argument("--users", type=int, help="consented users of the http part (default 5000; quick 200)")
    ap.add_argument("--warmup", type=int, help="wrk warm-up seconds before each run (default 3; quick 1)")
    ap.add_argument("--repeats", type=int, help="failover runs (default 3; quick 1)")
    ap.add_argument("--configs", default=DEFAULT_HTTP,
                    help=f"http configurations, of {', '.join(HTTP_CONFIGS)} (default {DEFAULT_HTTP})")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts: {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(args.configs) - set(HTTP_CONFIGS):
        ap.error(f"unknown configurations: {', '.join(sorted(set(args.configs) - set(HTTP_CONFIGS)))}")
    q = args.quick
    for name, full, quick in (("decisions", 20000, 2000), ("rounds", 3, 1), ("seconds", 10, 3),
                              ("users", 5000, 200), ("warmup", 3, 1), ("repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    return args


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every server stopped, every schema dropped


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    res: dict = {"machine": machine(), "command": " ".join(["bench_store.py"] + (argv or sys.argv[1:])),
                 "quick": args.quick, "parts": args.parts, "errors": {}}
    res["busy_before_start"] = bench_decide.other_cpu_load(2.0)
    if res["busy_before_start"] > 0.1:
        progress(f"warning: the machine is {100 * res['busy_before_start']:.0f}% busy before the benchmark "
                 "starts; figures will be noisy")
    runners = {"learner": bench_learner, "storage": bench_storage, "http": bench_http, "failover": bench_failover}
    workdir = Path(tempfile.mkdtemp(prefix="tactful-bench-store-"))
    try:
        log_path = workdir / "log.db"
        if {"learner", "storage"} & set(args.parts):
            progress(f"simulating the standard scenario, {args.decisions} decisions (the log) ...")
            build_log(log_path, args.decisions)
        for part in PARTS:
            if part in args.parts:
                try:
                    res[part] = runners[part](args, workdir, log_path)
                except Exception as exc:  # noqa: BLE001 -- the other parts still run; reported below
                    if not isinstance(exc, Refused):
                        traceback.print_exc()
                    progress(f"{part}: not measured: {exc}")
                    res["errors"][part] = str(exc).splitlines()[0]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(markdown(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
