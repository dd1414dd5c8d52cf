"""Faults under load, end to end on a real `tactful serve` (docs/reliability.md): while a client
sends decisions and outcomes steadily, kill -9 of one gunicorn worker and of the learner. Every
acknowledged decision and outcome is in the store afterwards, every closed decision is learned
exactly once, the service answers throughout and both processes come back. The run itself is
tests/faultrun.py, which scripts/faults.py also runs to record the figures."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import faultrun
from backends import store_address
from serving import start_serve, wait_healthy
from service.cli.serve import Children
from service.learning.learner import LEASE
from service.store import open_store


def test_a_dead_learner_is_started_again_at_once_and_one_that_keeps_dying_after_growing_pauses(tmp_path):
    """A learner that dies is started again at once; one that cannot start (here: it exits at
    once) is not restarted in a tight loop: from its second quick death on, the pauses between
    its starts double (from 1 s in `serve`, 0.2 s here)."""
    marker = tmp_path / "starts"
    learner = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"]
    web = [sys.executable, "-c", "import time; time.sleep(60)"]
    db = str(tmp_path / "c.db")
    open_store(db).close()
    children = Children(db, dict(os.environ), web, learner, pauses=(0.2, 30.0))
    starts, pauses = [time.monotonic()], []
    pid = children.learner.pid
    try:
        while len(starts) < 4:
            children.tend_learner()
            if children.learner is not None and children.learner.pid != pid:
                pid = children.learner.pid
                starts.append(time.monotonic())
                pauses.append(children.pause)
            time.sleep(0.02)
    finally:
        children.stop()
    assert pauses == [0.0, 0.2, 0.4]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps  # each pause was kept
    assert len(marker.read_text()) >= 3  # each start really ran (the last may be stopped first)
    assert children.web.poll() is not None and children.learner.poll() is not None  # both stopped


@pytest.mark.e2e
def test_serve_replaces_a_killed_learner_and_frees_its_lease_at_once(tmp_path):
    """A learner killed with SIGKILL used to stop `tactful serve` whole (gunicorn included). Now
    `serve` starts another, and frees the dead one's lease so that the new one leads without
    waiting for it to run out."""
    db = tmp_path / "s.db"
    proc, base = start_serve(["--db", str(db)], tmp_path / "serve.log", new_session=True)
    store = open_store(str(db))
    try:
        learner = faultrun.child_running(proc.pid, "learn")
        assert faultrun._wait(lambda: (store.lease_left(LEASE) or ("",))[0].endswith(f":{learner}"), 30)
        os.kill(learner, signal.SIGKILL)
        seen = []

        def new_leader():
            lease = store.lease_left(LEASE)
            seen.append(None if lease is None else lease[0])
            return lease is not None and not lease[0].endswith(f":{learner}")

        assert faultrun._wait(new_leader, 60), f"no learner took the lease again: {(tmp_path / 'serve.log').read_text()}"
        assert proc.poll() is None, "tactful serve stopped when its learner died"
        assert None in seen, "the dead learner's lease was not freed: it had to run out"
        successor = faultrun.child_running(proc.pid, "learn")
        assert successor not in (None, learner) and store.lease_left(LEASE)[0].endswith(f":{successor}")
        assert wait_healthy(base, 5)
        assert "the learner process" in (tmp_path / "serve.log").read_text()
    finally:
        store.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_acknowledged_data_survives_kill_9_of_a_worker_and_of_the_learner(backend, tmp_path):
    with store_address(backend, tmp_path) as db:
        result = faultrun.run(db, tmp_path, seconds=24, faults=("worker", "learner"), rate=40)
    print(faultrun.markdown([result]))
    assert result["decisions_acknowledged"] > 300 and result["outcomes_acknowledged"] > 150, result
    assert result["decisions_lost"] == 0 and result["outcomes_lost"] == 0, result
    assert not result["decisions_refused"] and not result["outcomes_refused"], result  # no 5xx, no 4xx
    assert result["serve_exit"] == 0, result
    assert result["caught_up"] and result["learned_exactly_once"], result
    assert result["decisions_learned"] == result["decisions_closed"] > 0, result
    worker, learner = result["faults"]
    assert worker["replacement"] not in (None, worker["pid"]) and worker["recovered_s"] is not None, worker
    assert learner["replacement"] not in (None, learner["pid"]) and learner["recovered_s"] is not None, learner
    for fault in (worker, learner):
        assert fault["answered_s"] is not None, fault
