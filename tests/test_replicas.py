"""Several replicas on one PostgreSQL, end to end: two real `tactful serve` processes (gunicorn
workers and a learner candidate each) on one database. Caps hold across replicas, a model version
activated through one is served by the other within 2 seconds, and when the leading learner's
whole process group is killed with SIGKILL the other replica's learner takes over within 30
seconds and learning goes on exactly once."""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import requests

from backends import pg_schema
from serving import ROOT, start_serve
from service.store.decisions import DECISION_ROWS

pytestmark = pytest.mark.e2e

START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
CHANNELS = {"email": True, "push": True, "sms": True, "in_app": True}


def at(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def replicas(tmp_path):
    """`replicas(n)` -> [(process, base URL)], all serving one fresh PostgreSQL schema with the
    request clock and the example policies learning every second."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "policies", policies)
    toml = policies / "lifecycle.toml"
    toml.write_text(re.sub(r"(?m)^learn_every_seconds = .*$", "learn_every_seconds = 1", toml.read_text()))
    started: list = []
    with pg_schema() as url:
        def start(n: int):
            for _ in range(n):
                started.append(start_serve(["--db", url, "--policies", str(policies), "--clock", "request",
                                            "--workers", "2"], tmp_path / f"replica-{len(started)}.log",
                                           new_session=True))
            return url, started[-n:]
        yield start
        for proc, _ in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


def consent(base: str, user: str, channels=CHANNELS, when: datetime = START) -> None:
    r = requests.put(f"{base}/v1/users/{user}/consent", json={"channels": channels, "timestamp": at(when)}, timeout=30)
    assert r.status_code == 200, r.text


def decide(base: str, user: str, when: datetime | None = None) -> dict:
    body = {"user_id": user, "context": {"segment": "s", "country": "FR", "tenure_days": 30}}
    if when is not None:
        body["timestamp"] = at(when)
    r = requests.post(f"{base}/v1/policies/lifecycle/decide", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def one_row(url: str, sql: str, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()


def test_fifty_decisions_for_one_person_over_two_replicas_send_once(replicas):
    _, ((_, a), (_, b)) = replicas(2)
    # at 10:00 the request clock's "now" and "next morning" are 22 hours apart: one push a day
    consent(a, "carol", {"push": True, "in_app": False, "email": False, "sms": False}, START + timedelta(hours=2))

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda i: decide((a, b)[i % 2], "carol"), range(50)))
    sends = [d for d in answers if not d["action"]["hold"]]
    assert len(sends) == 1 and sends[0]["action"]["channel"] == "push", [(d["action"], d["removed"]) for d in sends]


def test_a_version_activated_on_one_replica_is_served_by_the_other_within_two_seconds(replicas):
    url, ((_, a), (_, b)) = replicas(2)
    for i in range(60):
        consent(a, f"u{i}")
        decide((a, b)[i % 2], f"u{i}", START + timedelta(minutes=i))
    decide(a, "clock-mover", START + timedelta(days=3))  # every window above (2 days) is closed now
    deadline = time.time() + 60
    while one_row(url, "SELECT active_version FROM policy_state WHERE policy='lifecycle'")[0] < 2:
        assert time.time() < deadline, "the learner published nothing"
        time.sleep(0.2)
    published = time.monotonic()
    served_after(b, 2, published, "a version the learner published")
    r = requests.post(f"{a}/v1/policies/lifecycle/models/1/activate", json={"reason": "test"}, timeout=30)
    assert r.status_code == 200, r.text
    served_after(b, 1, time.monotonic(), "a version activated through replica a")


def served_after(base: str, version: int, since: float, what: str) -> None:
    """Decisions on `base` name `version` (at least it, for 2: the learner may publish more) within
    2 seconds of `since`; on both of its workers (fresh connections take turns)."""
    n = 0
    while True:
        served = [decide(base, f"probe-{version}-{n + i}")["model_version"] for i in range(4)]
        if all((v >= version) if version > 1 else (v == version) for v in served):
            break
        n += 4
        assert time.monotonic() - since < 2.0, f"{what} was not served by the other replica within 2 s"


def test_the_other_replica_learns_on_exactly_once_when_the_leader_is_killed(replicas):
    url, ((pa, a), (pb, b)) = replicas(2)
    when = START

    def traffic(bases, n):
        nonlocal when
        for i in range(n):
            user = f"u{i % 150}"
            d = decide(bases[i % len(bases)], user, when)
            if i % 4 == 0:
                r = requests.post(f"{bases[0]}/v1/events/{d['event_id']}/outcomes",
                                  json={"type": "click", "outcome_id": "c", "timestamp": at(when)}, timeout=30)
                assert r.status_code == 202, r.text
            when += timedelta(minutes=7)

    for i in range(150):
        consent(a, f"u{i}")
    traffic([a, b], 300)
    when += timedelta(days=2)
    traffic([a, b], 1)  # moves the clock: the 300 decisions' windows are closed
    learned = f"SELECT count(*) FROM {DECISION_ROWS} WHERE learned_version IS NOT NULL"
    deadline = time.time() + 60
    while one_row(url, learned)[0] < 300:
        assert time.time() < deadline, "nothing was learned"
        time.sleep(0.2)

    holder = one_row(url, "SELECT holder FROM leases WHERE name='learner'")[0]
    leader_pgid = os.getpgid(int(holder.rsplit(":", 1)[1]))  # the learner's serve leads its group
    assert leader_pgid in (pa.pid, pb.pid)
    leader, survivor = (pa, b) if leader_pgid == pa.pid else (pb, a)
    os.killpg(leader_pgid, signal.SIGKILL)
    killed = time.monotonic()
    leader.wait(timeout=10)

    traffic([survivor], 300)  # the survivor keeps deciding while nobody learns
    when += timedelta(days=2)
    traffic([survivor], 1)
    deadline = time.time() + 90
    taken = None
    while one_row(url, learned)[0] < 601:
        if taken is None and one_row(url, "SELECT holder FROM leases WHERE name='learner'")[0] != holder:
            taken = time.monotonic() - killed
        assert time.time() < deadline, "the surviving replica did not take over learning"
        time.sleep(0.2)
    if taken is None:
        taken = time.monotonic() - killed
    print(f"learner failover took {taken:.1f}s")
    assert taken < 30
    # exactly once: every closed decision learned, by one version; the versions' counts add up
    assert one_row(url, f"SELECT count(*) FROM {DECISION_ROWS} WHERE learned_version IS NULL AND closes_at <= "
                        "(SELECT now FROM clock WHERE id=1)")[0] == 0
    n_learned = one_row(url, "SELECT sum(n_learned) FROM model_versions WHERE source='online'")[0]
    assert n_learned == one_row(url, learned)[0] == 601
    with psycopg.connect(url) as conn:
        cursors = [r[0] for r in conn.execute(
            "SELECT learned_through_seq FROM model_versions WHERE source='online' ORDER BY version")]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
