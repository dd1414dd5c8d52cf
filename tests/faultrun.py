"""Faults under load (docs/reliability.md), for tests/test_faults.py and scripts/faults.py.

A real `tactful serve` (gunicorn, 2 workers, and its learner) on a store; a client whose threads
send decisions and outcomes at a steady rate and record every one the service acknowledged (a
decision answered 200, an outcome answered 202); while it runs, `kill -9` of one gunicorn worker
and, later, of the learner. Then the store is read (through service/store) to check:

- lost: acknowledged decisions and outcomes the store does not hold (must be 0). A request that
  failed with a connection error was not acknowledged: it is counted as unanswered, not lost (an
  unanswered outcome is sent again with the same outcome_id, as a client should; a decision is
  not, since a repeat would be another decision); a decision the store holds that was never
  acknowledged (its worker died after the commit, before the answer) is counted apart;
- exactly once: every decision whose reward window has closed is learned by exactly one model
  version, the versions' counts add up, and their cursors only grow;
- recovery: after the worker's kill, the time until gunicorn's replacement has loaded the app (its
  "worker N ready" line in the serve log) and until a request sent after the kill is answered;
  after the learner's kill, the time until a new learner holds the lease and until it publishes a
  model version.

The policy is the example one with a 5-second reward window and a learner that publishes every
second, on the system clock: decisions close while the client runs, so the learner is busy when
it is killed.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from serving import ROOT, start_serve
from service.learning.learner import LEASE
from service.store import open_store
from service.store.decisions import DECISION_ROWS

POLICY = "lifecycle"
WINDOW = 5.0  # seconds: the reward window of the policy the runs serve
CHANNELS = {"email": True, "push": True, "sms": True, "in_app": True}
SEGMENTS = ("bargain_hunters", "loyal", "new")


def fault_policies(dest: Path) -> Path:
    """The example policies, with a 5 s reward window and a learner that publishes every second.
    Its sends go out at once, with no slot at a local time (evening, next_morning) and no quiet
    hours to wait out: a policy whose window can end before its sends go out is refused."""
    shutil.copytree(ROOT / "examples" / "policies", dest)
    toml = dest / "lifecycle.toml"
    text = re.sub(r'(?m)^(\[reward\]\nwindow = )"[^"]*"', rf'\1"{WINDOW:g}s"', toml.read_text())
    text = re.sub(r"(?m)^learn_every_seconds = .*$", "learn_every_seconds = 1", text)
    text, slots = re.subn(r'(?m)^at = "[0-9:]+"', "delay_minutes = 0", text)
    text, quiet = re.subn(r"(?m)^quiet_hours = \{.*\}\n", "", text)
    assert f'window = "{WINDOW:g}s"' in text and "learn_every_seconds = 1" in text and (slots, quiet) == (2, 1)
    toml.write_text(text)
    return dest


# -- processes -----------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def child_running(serve_pid: int, command: str) -> int | None:
    """The child of `tactful serve` that runs `python -m service.cli COMMAND` (web, learn)."""
    for pid in children(serve_pid):
        args = cmdline(pid)
        if "service.cli" in args and command in args:
            return pid
    return None


# -- the client ----------------------------------------------------------------------------------

@dataclass
class Tally:
    sent: int = 0
    acknowledged: list = field(default_factory=list)
    unanswered: int = 0                                 # connection refused, reset or timed out
    refused: Counter = field(default_factory=Counter)   # HTTP status -> count (not acknowledged)


class Client:
    """Threads sending decisions (and, for half of them, an outcome) at `rate` decisions per second
    in all, each with its own connection; every acknowledgement is recorded with its time."""

    def __init__(self, base: str, users: list[str], rate: float, threads: int = 4):
        self.base, self.users, self.rate, self.threads = base, users, rate, threads
        self.decisions, self.outcomes = Tally(), Tally()
        self.answered: list[tuple[float, float]] = []  # (sent at, answered at), monotonic, acknowledged
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = itertools.count()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(60)

    def _post(self, http: requests.Session, tally: Tally, path: str, body: dict, ok: int) -> dict | bool:
        """The answer's body when acknowledged; False when refused (an HTTP error), True when
        unanswered (a connection error or a time-out: it may be tried again)."""
        sent = time.monotonic()
        with self.lock:
            tally.sent += 1
        try:
            r = http.post(f"{self.base}{path}", json=body, timeout=30)
        except requests.RequestException:
            with self.lock:
                tally.unanswered += 1
            return True
        with self.lock:
            if r.status_code != ok:
                tally.refused[r.status_code] += 1
                return False
            self.answered.append((sent, time.monotonic()))
        return r.json()

    def _loop(self, index: int) -> None:
        http = requests.Session()
        period = self.threads / self.rate
        due = time.monotonic() + index * period / self.threads
        while not self.stop.is_set():
            n = next(self.counter)
            body = {"user_id": self.users[n % len(self.users)],
                    "context": {"segment": SEGMENTS[n % len(SEGMENTS)], "country": "FR", "tenure_days": n % 400}}
            # a decision is not tried again: the API has no idempotency key for it, so a repeat
            # would be another decision
            d = self._post(http, self.decisions, f"/v1/policies/{POLICY}/decide", body, 200)
            if isinstance(d, dict):
                with self.lock:
                    self.decisions.acknowledged.append(d["event_id"])
                if n % 2 == 0:
                    self._outcome(http, d["event_id"], ("open", "click", "convert")[n % 3], n)
            due = max(due + period, time.monotonic() - period)  # no burst to catch up after an outage
            self.stop.wait(max(0.0, due - time.monotonic()))

    def _outcome(self, http: requests.Session, event_id: str, kind: str, n: int) -> None:
        """Report an outcome; one left unanswered is sent again (up to twice), with the same
        outcome_id, as a client should: the store counts it once whichever attempt landed."""
        for attempt in range(3):
            answer = self._post(http, self.outcomes, f"/v1/events/{event_id}/outcomes",
                                {"type": kind, "outcome_id": f"{kind}-{n}"}, 202)
            if isinstance(answer, dict):
                with self.lock:
                    self.outcomes.acknowledged.append((event_id, f"{kind}-{n}"))
                return
            if answer is False:
                return
            time.sleep(0.1)

    def first_answer_sent_after(self, t: float) -> float | None:
        """When the first acknowledged request sent after `t` was answered."""
        with self.lock:
            after = [answered for sent, answered in self.answered if sent >= t]
        return min(after) if after else None


# -- faults ----------------------------------------------------------------------------------------

def _wait(check, seconds: float, pause: float = 0.02):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(pause)
    return None


def kill_worker(serve_pid: int, log: Path, client: Client, patience: float = 60.0) -> dict:
    """kill -9 one gunicorn worker (one caught handling a request, when one is within 2 s); how
    long until its replacement has loaded the app, and until a request sent after the kill is
    answered."""
    master = child_running(serve_pid, "web")
    workers = children(master)
    busy = _busy(workers)
    victim = busy or workers[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    new = _wait(lambda: [p for p in children(master) if p not in workers], patience)
    ready = new and _wait(lambda: f" worker {new[0]} ready" in log.read_text(), patience)
    ready_at = time.monotonic() if ready else None
    answered = _wait(lambda: client.first_answer_sent_after(killed), patience)
    return {"fault": "kill -9 gunicorn worker", "pid": victim, "busy": busy is not None, "replacement": new[0] if new else None,
            "answered_s": answered - killed if answered else None,
            "recovered_s": ready_at - killed if ready_at else None}


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat[stat.rindex(")") + 2]


def _busy(pids: list[int], patience: float = 2.0) -> int | None:
    """One of `pids` seen running (a worker handling a request, rather than waiting in accept),
    so that the kill cuts a request in flight; None if none was within `patience` seconds."""
    return _wait(lambda: next((p for p in pids if _state(p) == "R"), None), patience, pause=0.0005)


def kill_learner(serve_pid: int, store, client: Client, patience: float = 60.0) -> dict:
    """kill -9 the learner; how long until a new learner holds the lease, and until it publishes."""
    victim = child_running(serve_pid, "learn")
    holder = _wait(lambda: (store.lease_left(LEASE) or ("", 0))[0].endswith(f":{victim}"), patience)
    assert holder, f"the learner {victim} never took the lease"
    version = max(v["version"] for v in store.versions(POLICY))
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()

    def new_holder():
        lease = store.lease_left(LEASE)
        return lease is not None and not lease[0].endswith(f":{victim}") and lease[1] > 0

    led = _wait(new_holder, patience)
    led_at = time.monotonic() if led else None
    published = _wait(lambda: max(v["version"] for v in store.versions(POLICY)) > version, patience)
    published_at = time.monotonic() if published else None
    answered = _wait(lambda: client.first_answer_sent_after(killed), patience)
    return {"fault": "kill -9 learner", "pid": victim, "replacement": child_running(serve_pid, "learn"),
            "answered_s": answered - killed if answered else None,
            "leads_s": led_at - killed if led_at else None,
            "recovered_s": published_at - killed if published_at else None}


# -- a run ------------------------------------------------------------------------------------------

def run(db: str, workdir: Path, seconds: float = 30.0, faults: tuple[str, ...] = ("worker", "learner"),
        rate: float = 40.0, users: int = 200, threads: int = 4) -> dict:
    """Serve `db` (a SQLite path or a PostgreSQL URL) for `seconds` of steady traffic with the
    `faults` spread evenly over it; then let the learner learn every closed decision, stop the
    service and check the store (see the module's docstring). The figures, as a dict."""
    policies = fault_policies(workdir / "policies")
    log = workdir / "serve.log"
    proc, base = start_serve(["--db", db, "--policies", str(policies), "--workers", "2"], log, new_session=True)
    store = open_store(db)
    people = [f"fault-{i}" for i in range(users)]
    client = Client(base, people, rate, threads)
    try:
        for i, user in enumerate(people):
            if i % 2 == 0:  # half the people opted in to every channel; in_app needs no opt-in
                r = requests.put(f"{base}/v1/users/{user}/consent", json={"channels": CHANNELS}, timeout=30)
                assert r.status_code == 200, r.text
        started = time.monotonic()
        client.start()
        done = []
        for i, kind in enumerate(faults):
            time.sleep(max(0.0, started + seconds * (i + 1) / (len(faults) + 1) - time.monotonic()))
            done.append(kill_worker(proc.pid, log, client) if kind == "worker" else
                        kill_learner(proc.pid, store, client))
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        client.finish()
        elapsed = time.monotonic() - started
        closed_by = time.time() + WINDOW  # every decision of the run is closed by then
        caught_up = learned_all_closed(store, closed_by)
        _stop(proc)
        return {"backend": store.kind, "seconds": round(elapsed, 1), "faults": done,
                "serve_exit": proc.returncode, "caught_up": caught_up,
                **delivery(store, client), **learning(store, closed_by)}
    finally:
        client.finish()
        _stop(proc)
        store.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def learned_all_closed(store, closed_by: float, patience: float = 90.0) -> bool:
    """Wait until every decision whose window closes by `closed_by` is closed and learned."""
    time.sleep(max(0.0, closed_by - time.time()))
    return bool(_wait(lambda: store.query(
        f"SELECT count(*) FROM {DECISION_ROWS} WHERE learned_version IS NULL AND closes_at <= ?",
        (closed_by,))[0][0] == 0, patience, pause=0.2))


def delivery(store, client: Client) -> dict:
    """What the client sent and had acknowledged, and what of it the store does not hold."""
    decided = {r[0] for r in store.query("SELECT event_id FROM decisions WHERE policy=?", (POLICY,))}
    acked = client.decisions.acknowledged
    events = sorted({e for e, _ in client.outcomes.acknowledged})
    stored = {(o.event_id, o.outcome_id) for os_ in store.outcomes_for(events).values() for o in os_}
    d, o = client.decisions, client.outcomes
    return {
        "decisions_sent": d.sent, "decisions_acknowledged": len(acked), "decisions_unanswered": d.unanswered,
        "decisions_refused": dict(d.refused), "decisions_lost": len(set(acked) - decided),
        "decisions_stored_unacknowledged": len(decided - set(acked)),
        "outcomes_sent": o.sent, "outcomes_acknowledged": len(o.acknowledged), "outcomes_unanswered": o.unanswered,
        "outcomes_refused": dict(o.refused), "outcomes_lost": len(set(o.acknowledged) - stored),
    }


def learning(store, closed_by: float) -> dict:
    """Whether every decision closed by `closed_by` was learned exactly once: by one version each,
    the versions' counts adding up to the decisions they marked, their cursors growing."""
    closed = store.query("SELECT count(*) FROM decisions WHERE policy=? AND closes_at <= ?",
                         (POLICY, closed_by))[0][0]
    learned = store.query(f"SELECT count(learned_version) FROM {DECISION_ROWS} WHERE policy=?", (POLICY,))[0][0]
    versions = [v for v in store.versions(POLICY) if v["source"] == "online"]
    marked = {r[0]: r[1] for r in store.query(
        f"SELECT learned_version, count(*) FROM {DECISION_ROWS} WHERE policy=? AND learned_version IS NOT NULL "
        "GROUP BY learned_version", (POLICY,))}
    cursors = [v["learned_through_seq"] for v in versions]
    once = (all(marked.get(v["version"], 0) == v["n_learned"] for v in versions)
            and set(marked) <= {v["version"] for v in versions}
            and sum(v["n_learned"] for v in versions) == learned
            and all(a < b for a, b in zip(cursors, cursors[1:])))
    return {"decisions_closed": closed, "decisions_learned": learned, "versions": len(versions),
            "learned_exactly_once": once and closed == learned}


def markdown(results: list[dict]) -> str:
    """The runs as the Markdown table of docs/reliability.md: one row per run."""
    lines = ["| store | kill -9 | decisions sent / acknowledged / unanswered / stored unacknowledged | outcomes "
             "sent / acknowledged / unanswered | lost | learned exactly once | answered again after | "
             "recovered after |", "|" + " --- |" * 8]
    for r in results:
        faults = ", ".join(f["fault"].removeprefix("kill -9 ") for f in r["faults"]) or "none"
        answered = ", ".join(_s(f["answered_s"]) for f in r["faults"]) or "-"
        recovered = ", ".join(f"{'replacement ready' if 'worker' in f['fault'] else 'new learner publishes'} "
                              f"{_s(f['recovered_s'])}" for f in r["faults"]) or "-"
        lines.append(
            f"| {r['backend']} | {faults} | {r['decisions_sent']} / {r['decisions_acknowledged']} / "
            f"{r['decisions_unanswered']} / {r['decisions_stored_unacknowledged']} | {r['outcomes_sent']} / "
            f"{r['outcomes_acknowledged']} / {r['outcomes_unanswered']} | {r['decisions_lost'] + r['outcomes_lost']} | "
            f"{'yes' if r['learned_exactly_once'] else 'NO'} ({r['decisions_learned']} of "
            f"{r['decisions_closed']}) | {answered} | {recovered} |")
    return "\n".join(lines)


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"
