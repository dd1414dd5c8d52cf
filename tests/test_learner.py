"""The online learner: shaped rewards, new model versions, exactly-once resume after a kill."""
from __future__ import annotations

import os
import sqlite3
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from models.featurize import history_features, shared_line
from service.clock import ManualClock, RequestClock
from service.decision.engine import DecideInput, DecisionEngine, OutcomeInput
from service.policy import load_policies
from service.runtime import build_engine, build_learner, numbered_ids
from service.store import Store, open_store
from service.store.decisions import DECISION_ROWS

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "examples" / "policies"
START = 1_780_000_000.0  # 2026-05-28, a fixed virtual start
DAY = 86400.0


def make_engine(db: Path, clock) -> DecisionEngine:
    policies = load_policies(POLICIES)
    store = open_store(str(db))
    engine = build_engine(store, policies, clock, new_id=numbered_ids("ev", 6), refresh_seconds=0)
    engine.ensure_models()
    return engine


def drive(engine: DecisionEngine, clock, n: int, seed: int = 0, step: float = 600.0) -> list[str]:
    """n decisions for a small population, clicks on email sends, time moving `step` each."""
    rng = np.random.default_rng(seed)
    for u in range(50):
        engine.people.set_consent(f"u{u}", {"email": True, "push": True, "sms": True}, "test", None)
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
    learner = build_learner(engine.store, engine.policies, clock)
    # decisions of the last two days are still open: only the closed ones are learned, in order
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
    clock.advance(engine.policies["lifecycle"].spec.reward.window + 1)
    ack = engine.record_outcome(r["event_id"], OutcomeInput("click"))
    assert ack["counted"] is False and "after" in ack["note"]
    e = engine.event(r["event_id"])
    assert e["status"] == "final" and e["reward"] == 0.0
    assert [o["counted"] for o in e["outcomes"]] == [False]


def _predictions(store: Store, policy) -> np.ndarray:
    from service.policy.bandit import arm_lines
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
    store_b = open_store(str(tmp_path / "b.db"))

    # a: learns in three chunks, with a brand-new learner (a restart) for each chunk
    for _ in range(3):
        build_learner(engine.store, engine.policies, clock, batch=100).step("lifecycle")
    # b: one learner, one go
    build_learner(store_b, engine.policies, clock, batch=1000).step("lifecycle")

    for store in (engine.store, store_b):
        rows = store.query(f"SELECT count(*), count(learned_version) FROM {DECISION_ROWS}")[0]
        assert rows[0] == rows[1] == 300
        assert sum(v["n_learned"] for v in store.versions("lifecycle")) == 300
    policy = engine.policies["lifecycle"]
    np.testing.assert_allclose(_predictions(engine.store, policy), _predictions(store_b, policy), rtol=1e-6)


@pytest.mark.slow  # starts and kills a real `tactful learn` twice
def test_killed_learner_process_learns_every_decision_once(tmp_path):
    """SIGKILL the real `tactful learn` process mid-run, start it again: every decision ends up
    learned by exactly one version, and the versions' ranges tile the log without overlap."""
    db = tmp_path / "k.db"
    store = open_store(str(db))
    clock = RequestClock(store)
    store.clock_advance(START)
    engine = make_engine(db, clock)

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
            if store.query(f"SELECT count(*) FROM {DECISION_ROWS} WHERE learned_version IS NULL")[0][0] == 0:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert store.query(f"SELECT count(*) FROM {DECISION_ROWS} WHERE learned_version IS NULL")[0][0] == 0
    versions = [v for v in store.versions("lifecycle") if v["source"] == "online"]
    assert sum(v["n_learned"] for v in versions) == 400
    ranges = sorted((json_note(v)["first_seq"], json_note(v)["last_seq"]) for v in versions)
    assert ranges[0][0] == 1 and ranges[-1][1] == 400
    for (a, b), (c, d) in zip(ranges, ranges[1:]):
        assert c == b + 1, f"gap or overlap between {a}-{b} and {c}-{d}"
    # every decision is learned by the version whose range holds it
    for v in versions:
        note = json_note(v)
        n = store.query("SELECT count(*) FROM decision_rewards WHERE learned_version=?", (v["version"],))[0][0]
        assert n == note["last_seq"] - note["first_seq"] + 1 == v["n_learned"]


def json_note(v: dict) -> dict:
    import json

    return json.loads(v["note"])


def _truth_log(tmp_path, n: int, seed: int):
    """The known-truth world's 17-arm policy on the real engine and SQLite store; every decision
    made so far learned by online versions trained with the policy's own vw_args."""
    from service.simulation.known_truth import default_world, generate_log, make_engine as truth_engine, world_policy

    policy = world_policy(logging="engine")
    world = default_world(policy, seed=seed)
    engine, clock = truth_engine(tmp_path / "truth.db", {policy.name: policy})
    generate_log(world, policy, None, n, seed=seed, learn_every=0, engine=engine, clock=clock)
    learner = build_learner(engine.store, engine.policies, clock)
    assert learner.step(policy.name) == n
    more = lambda k, s: generate_log(world, policy, None, k, seed=s, learn_every=0, engine=engine,  # noqa: E731
                                     clock=clock)
    return policy, engine, clock, learner, more


def test_learner_continues_a_retrained_candidate_with_its_own_vw_args(tmp_path):
    """A retrained candidate is trained with arguments the policy does not have, one of which
    (`--l2`) its model file does not carry. Once it is active, the online learner must go on
    learning with exactly those arguments, also after a restart, and record them on every version
    it publishes: each published model is byte for byte the candidate, kept in memory, having
    learned the same decisions."""
    from models.reward import to_cost
    from service.policy.bandit import reward_spec
    from service.offline.export import final_decisions
    from service.learning.registry import VersionRegistry
    from service.learning.retrain import train

    policy, engine, clock, learner, more = _truth_log(tmp_path, 400, seed=3)
    store = engine.store
    assert {v["vw_args"] for v in store.versions(policy.name)} == {policy.spec.learner.vw_args}
    args = "--epsilon 0.1 -q UA -q HA -l 0.5 --l2 1e-4 --clip_p 0.1 -b 20"
    assert args != policy.spec.learner.vw_args
    reference = train(policy, list(final_decisions(store, policy, now=clock.now())), args)
    ops = VersionRegistry(store)
    candidate = ops.add_version(policy.name, reference.to_bytes(), args, "retrain", clock.now())
    ops.activate(policy.name, candidate, "retrained candidate looked better", clock.now())
    spec = reward_spec(policy)
    parent = candidate
    for restart, seed in ((False, 4), (True, 5)):
        more(200, seed)
        if restart:  # a new learner process: it loads the latest online version from the store
            learner = build_learner(store, engine.policies, clock)
        assert learner.step(policy.name) == 200
        version = store.active_version(policy.name)
        row = store.model(policy.name, version)
        assert (row["source"], row["parent"], row["vw_args"]) == ("online", parent, args)
        learned = [r for r in final_decisions(store, policy, now=clock.now()) if r.decision.learned_version == version]
        assert len(learned) == 200
        for r in sorted(learned, key=lambda r: r.decision.seq):
            d = r.decision
            reference.learn(shared_line(d.context, d.history), [policy.arm_index[a] for a in d.allowed], r.chosen,
                            to_cost(spec, r.reward), d.probability)
        assert row["model"] == reference.to_bytes(), f"version {version} did not learn as its parent's args say"
        parent = version
    reference.close()


def test_learner_does_not_trust_recorded_args_that_contradict_the_model(tmp_path):
    """A version recorded with arguments that are not its model's (as online versions were
    recorded with the policy's args before the learner knew better): loading it with them would
    change the model (other interactions) or fail (other bits). The learner goes on with the
    options the model file carries, and records those."""
    from models.vw_policy import VWPolicy, resume_conflicts, stored_options
    from service.policy.bandit import arm_lines
    from service.learning.registry import VersionRegistry

    policy, engine, clock, learner, more = _truth_log(tmp_path, 200, seed=6)
    store = engine.store
    model = VWPolicy(arm_lines(policy), "--epsilon 0.2 -q UA -q HA -b 20")
    stale = policy.spec.learner.vw_args  # -q UA -b 18 --squarecb ...
    assert resume_conflicts(model.to_bytes(), stale)
    ops = VersionRegistry(store)
    v = ops.add_version(policy.name, model.to_bytes(), stale, "import", clock.now())
    model.close()
    ops.activate(policy.name, v, "imported", clock.now())
    more(100, 7)
    assert learner.step(policy.name) == 100
    row = store.model(policy.name, store.active_version(policy.name))
    assert row["parent"] == v and row["vw_args"] != stale
    options = stored_options(row["model"])
    assert options["quadratic"] == ["HA", "UA"] and options["bit_precision"] == ["20"] and "squarecb" not in options
    assert resume_conflicts(row["model"], row["vw_args"]) == []


@pytest.mark.slow  # a script run end to end
def test_learning_reliability_script_runs():
    """scripts/learning_reliability.py (docs/policies.md's table) end to end, one short run."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "learning_reliability.py"), "--seeds", "1",
                           "--decisions", "1500", "--learn-every", "300"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(load_policies(POLICIES)["lifecycle"].spec.learner.vw_args)  # the example's
    assert lines[1].startswith("seed 1: reward over the last third ")
    assert lines[-1].split(" runs learned a wrong favourite")[0] in ("0 of 1", "1 of 1")


def test_the_learner_publishes_at_most_once_per_interval_unless_a_version_is_full(tmp_path):
    """Run as `tactful learn` runs it (lease, ticks): a backlog larger than a version holds is
    learned a version per tick; then nothing more until the interval has passed, however many
    decisions close meanwhile; a step that fails is retried at the next tick, not after the
    interval."""
    clock = ManualClock(START)
    engine = make_engine(tmp_path / "t.db", clock)
    drive(engine, clock, 25, step=60.0)
    clock.advance(2 * DAY)
    store = engine.store
    learner = build_learner(store, engine.policies, clock, batch=10)
    failures = []

    def flaky(policy, now):  # the first step fails, as with the store briefly away
        if not failures:
            failures.append(now)
            raise ConnectionError("store away")

    learner.before_step = (flaky,) + learner.before_step
    stop = threading.Event()
    runner = threading.Thread(target=learner.run, args=(stop, 3 * DAY, 0.3))  # tick 0.1 s
    runner.start()
    try:
        wait_until(lambda: store.learner_cursor("lifecycle") == store.decision_count())
        assert [v["n_learned"] for v in store.versions("lifecycle")] == [0, 10, 10, 5]
        drive(engine, clock, 5, step=60.0)  # five more decisions close
        clock.advance(2 * DAY)
        time.sleep(1.0)  # ten ticks: the interval (3 days of the clock's time) has not passed
        assert len(store.versions("lifecycle")) == 4
        clock.advance(DAY)  # now it has: paced by the clock that takes timestamps, not by real time
        wait_until(lambda: store.learner_cursor("lifecycle") == store.decision_count())
        assert [v["n_learned"] for v in store.versions("lifecycle")] == [0, 10, 10, 5, 5]
    finally:
        stop.set()
        runner.join(10)
    assert failures and not runner.is_alive()
    assert store.query("SELECT count(*) FROM leases")[0][0] == 0  # released on the way out


def wait_until(condition, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "not within the time allowed"
        time.sleep(0.05)


def test_decisions_the_model_cannot_learn_publish_no_version(tmp_path):
    """Decisions whose arms the policy no longer has (renamed since) are passed over: their
    rewards and the cursor are recorded, but no new version is published for an unchanged model."""
    clock = ManualClock(START)
    engine = make_engine(tmp_path / "t.db", clock)
    drive(engine, clock, 5, step=60.0)
    with engine.store.write() as conn:  # as if every arm had been renamed since
        conn.execute("UPDATE decisions SET arm='gone', allowed='[\"gone\"]'")
    clock.advance(2 * DAY)
    learner = build_learner(engine.store, engine.policies, clock)
    assert learner.step("lifecycle") == 5
    store = engine.store
    assert [v["version"] for v in store.versions("lifecycle")] == [1] and store.active_version("lifecycle") == 1
    assert store.learner_cursor("lifecycle") == store.decision_count()
    final_unlearned = f"SELECT count(*) FROM {DECISION_ROWS} WHERE reward IS NOT NULL AND learned_version IS NULL"
    assert store.query(final_unlearned)[0][0] == 5
    assert learner.step("lifecycle") == 0
