"""The online learner: shaped rewards, new model versions, exactly-once resume after a kill."""
from __future__ import annotations

import itertools
import os
import sqlite3
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from models.featurize import history_features, shared_line
from service.clock import ManualClock, RequestClock
from service.engine import DecideInput, DecisionEngine, ModelCache, OutcomeInput
from service.learner import OnlineLearner
from service.policy import load_policies
from service.store import Store

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "examples" / "policies"
START = 1_780_000_000.0  # 2026-05-28, a fixed virtual start
DAY = 86400.0


def make_engine(db: Path, clock) -> DecisionEngine:
    policies = load_policies(POLICIES)
    store = Store(str(db))
    engine = DecisionEngine(store, policies, clock, ModelCache(store, policies, refresh_seconds=0))
    ids = itertools.count()
    engine.new_id = lambda: f"ev{next(ids):06d}"
    engine.ensure_models()
    return engine


def drive(engine: DecisionEngine, clock, n: int, seed: int = 0, step: float = 600.0) -> list[str]:
    """n decisions for a small population, clicks on email sends, time moving `step` each."""
    rng = np.random.default_rng(seed)
    for u in range(50):
        engine.set_consent(f"u{u}", {"email": True, "push": True, "sms": True}, "test", None)
    events = []
    for _ in range(n):
        user = f"u{rng.integers(50)}"
        r = engine.decide("lifecycle", DecideInput(user, {"segment": "s" + user[-1], "tenure_days": 5}))
        events.append(r["event_id"])
        if r["action"]["channel"] == "email" and rng.random() < 0.5:
            engine.record_outcome(r["event_id"], OutcomeInput("click", outcome_id="c1"))
        clock.advance(step)
    return events


def test_learner_publishes_versions_with_shaped_rewards(tmp_path):
    clock = ManualClock(START)
    engine = make_engine(tmp_path / "t.db", clock)
    events = drive(engine, clock, 120, step=1800.0)  # 60 hours
    learner = OnlineLearner(engine.store, engine.policies, clock)
    # decisions of the last day are still open: only the closed ones are learned, in order
    learned = learner.step("lifecycle")
    assert 0 < learned < 120
    assert engine.store.active_version("lifecycle") == 2
    clock.advance(2 * DAY)
    assert learner.step("lifecycle") == 120 - learned
    assert learner.step("lifecycle") == 0
    assert engine.store.active_version("lifecycle") == 3
    for event_id in events:
        e = engine.event(event_id)
        assert e["status"] == "learned"
        clicked = any(o["type"] == "click" for o in e["outcomes"])
        fatigue = 0.05 * e["explanation"]["history"]["fatigue_contacts"] if not e["action"]["hold"] else 0.0
        expected = (1.0 if clicked else 0.0) - fatigue
        assert e["reward"] == pytest.approx(expected)
    # the workers' cache serves the new version on the next decision
    r = engine.decide("lifecycle", DecideInput("u1", {"segment": "s1"}))
    assert r["model_version"] == 3


def test_outcome_after_the_window_is_stored_but_not_counted(tmp_path):
    clock = ManualClock(START)
    engine = make_engine(tmp_path / "t.db", clock)
    r = engine.decide("lifecycle", DecideInput("late", {"segment": "x"}))
    clock.advance(2 * DAY)
    ack = engine.record_outcome(r["event_id"], OutcomeInput("click"))
    assert ack["counted"] is False and "after" in ack["note"]
    e = engine.event(r["event_id"])
    assert e["status"] == "final" and e["reward"] == 0.0
    assert [o["counted"] for o in e["outcomes"]] == [False]


def _predictions(store: Store, policy) -> np.ndarray:
    from service.engine import arm_lines
    from models.vw_policy import VWPolicy

    version = store.active_version("lifecycle")
    model = VWPolicy(arm_lines(policy), model_bytes=store.model("lifecycle", version)["model"])
    shared = shared_line({"segment": "s3", "tenure_days": 5}, history_features(1, 30.0))
    return model.predict(shared, list(range(len(policy.arms))))


def test_restarted_learner_resumes_exactly_where_it_stopped(tmp_path):
    """A learner that stops between versions and a fresh one that takes over learn the same
    decisions, once each, and end with exactly the model of a learner that never stopped."""
    clock = ManualClock(START)
    engine = make_engine(tmp_path / "a.db", clock)
    drive(engine, clock, 300)
    clock.advance(2 * DAY)
    with sqlite3.connect(tmp_path / "b.db") as copy:  # a consistent copy, WAL included
        engine.store.conn.backup(copy)
    store_b = Store(str(tmp_path / "b.db"))

    # a: learns in three chunks, with a brand-new learner (a restart) for each chunk
    for _ in range(3):
        OnlineLearner(engine.store, engine.policies, clock, batch=100).step("lifecycle")
    # b: one learner, one go
    OnlineLearner(store_b, engine.policies, clock, batch=1000).step("lifecycle")

    for store in (engine.store, store_b):
        rows = store.query("SELECT count(*), count(learned_version) FROM decisions")[0]
        assert rows[0] == rows[1] == 300
        assert sum(v["n_learned"] for v in store.versions("lifecycle")) == 300
    policy = engine.policies["lifecycle"]
    np.testing.assert_allclose(_predictions(engine.store, policy), _predictions(store_b, policy), rtol=1e-6)


def test_killed_learner_process_learns_every_decision_once(tmp_path):
    """SIGKILL the real `tactful learn` process mid-run, start it again: every decision ends up
    learned by exactly one version, and the versions' ranges tile the log without overlap."""
    db = tmp_path / "k.db"
    store = Store(str(db))
    clock = RequestClock(store)
    store.clock_advance(START)
    engine = make_engine(db, clock)
    engine.clock = clock

    class Ticking:  # RequestClock moved by hand: the learner process reads the same clock
        accepts_timestamps = True

        def now(self):
            return clock.now()

        def observe(self, ts):
            return clock.observe(ts)

        def advance(self, s):
            store.clock_advance(clock.now() + s)

    drive(engine, Ticking(), 400, step=300.0)
    store.clock_advance(clock.now() + 2 * DAY)
    cmd = [sys.executable, "-m", "service.cli", "learn", "--db", str(db), "--policies", str(POLICIES),
           "--clock", "request", "--interval", "0.05", "--batch", "15"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while store.learner_cursor("lifecycle") == 0 and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cut = store.learner_cursor("lifecycle")
        assert 0 < cut < 400, "the learner should have been killed part-way"
    finally:
        if proc.poll() is None:
            proc.kill()
    # a killed learner leaves its lease until it expires; an operator who saw it die frees it
    with store.write() as conn:
        conn.execute("DELETE FROM leases")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if store.query("SELECT count(*) FROM decisions WHERE learned_version IS NULL")[0][0] == 0:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert store.query("SELECT count(*) FROM decisions WHERE learned_version IS NULL")[0][0] == 0
    versions = [v for v in store.versions("lifecycle") if v["source"] == "online"]
    assert sum(v["n_learned"] for v in versions) == 400
    ranges = sorted((json_note(v)["first_seq"], json_note(v)["last_seq"]) for v in versions)
    assert ranges[0][0] == 1 and ranges[-1][1] == 400
    for (a, b), (c, d) in zip(ranges, ranges[1:]):
        assert c == b + 1, f"gap or overlap between {a}-{b} and {c}-{d}"
    # every decision is learned by the version whose range holds it
    for v in versions:
        note = json_note(v)
        n = store.query("SELECT count(*) FROM decisions WHERE learned_version=?", (v["version"],))[0][0]
        assert n == note["last_seq"] - note["first_seq"] + 1 == v["n_learned"]


def json_note(v: dict) -> dict:
    import json

    return json.loads(v["note"])
