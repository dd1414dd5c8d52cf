"""What a worker of `tactful serve` does that an app built in a test does not: it keeps what it
loaded to serve out of the garbage collector's way (the app's FREEZE_HEAP): a full collection,
which walked some 150,000 objects and stalled every queued request for 100-200 ms on the
benchmark machine, then walks only what serving made since; and it checkpoints SQLite's WAL in a
thread of its own (CHECKPOINT_SECONDS; tests/test_checkpoints.py tests the mechanism)."""
from __future__ import annotations

import gc
import os
import re
import time

import pytest
import requests

from serving import start_serve
from service.api.app import create_app

POLICIES = "examples/policies"


def _decide(client, i: int) -> None:
    r = client.post("/v1/policies/lifecycle/decide", json={"user_id": f"heap-{i}", "context": {"segment": "loyal"}})
    assert r.status_code == 200, r.get_data(as_text=True)


def test_an_app_built_to_serve_freezes_what_it_loaded(tmp_path):
    assert gc.get_freeze_count() == 0
    try:
        app = create_app({"DB": str(tmp_path / "t.db"), "POLICIES": POLICIES, "FREEZE_HEAP": True,
                          "ACCESS_LOG": False})
        frozen = gc.get_freeze_count()
        assert frozen > 20_000  # the modules, the policies, the app
        tracked = {id(o) for o in gc.get_objects()}  # what a full collection walks: not the frozen
        assert id(app.extensions["tactful"]) not in tracked and id(app.view_functions) not in tracked
        client = app.test_client()
        for i in range(200):
            _decide(client, i)
        # what a full collection walks now: what was made since, not what was loaded
        assert len(gc.get_objects()) < frozen / 4, (len(gc.get_objects()), frozen)
    finally:
        gc.unfreeze()


def test_an_app_built_in_a_test_freezes_nothing(tmp_path):
    app = create_app({"DB": str(tmp_path / "t.db"), "POLICIES": POLICIES, "ACCESS_LOG": False})
    _decide(app.test_client(), 0)
    assert gc.get_freeze_count() == 0


@pytest.mark.e2e
def test_each_served_worker_freezes_its_heap(tmp_path):
    log = tmp_path / "serve.log"
    proc, _ = start_serve(["--db", str(tmp_path / "s.db"), "--workers", "2"], log)
    try:
        deadline = time.monotonic() + 20  # /healthz answers once one worker is up
        while True:
            ready = re.findall(r"worker \d+ ready \((\d+) objects kept out of the garbage collector's way\)",
                               log.read_text())
            if len(ready) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(ready) == 2 and all(int(n) > 20_000 for n in ready), log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.e2e
def test_served_workers_copy_the_wal_back_within_seconds(tmp_path):
    """SQLite's own checkpoint waits for 8,000 pages of WAL (the store's AUTOCHECKPOINT_PAGES); a
    served worker's thread copies what its commits wrote back into the database file within about
    a second of them. Without the learner, whose store checkpoints in a thread of its own too."""
    db = tmp_path / "s.db"
    proc, base = start_serve(["--db", str(db), "--workers", "2", "--no-learner"], tmp_path / "serve.log")
    try:
        before = os.path.getsize(db)
        for i in range(40):  # a few hundred pages of WAL: far below SQLite's own threshold
            r = requests.post(f"{base}/v1/policies/lifecycle/decide", timeout=10,
                              json={"user_id": f"wal-{i}", "context": {"segment": "loyal"}})
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while os.path.getsize(db) <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.getsize(db) > before, (before, os.path.getsize(db), os.path.getsize(f"{db}-wal"))
    finally:
        proc.terminate()
        proc.wait(30)
