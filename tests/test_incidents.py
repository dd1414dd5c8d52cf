"""Incidents in simulation: a content that turns offensive on a given day. The truth (and so the
oracle) knows it from that moment on and for that content only; the scenario policies carry the
example policy's circuit breaker; and in a small run of the real decision code the breaker trips
after the incident, on that content, and never before -- nor in a run where nothing changes; and
the study script (scripts/breaker_study.py) runs end to end."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest

from conftest import POLICIES_DIR, REPO_ROOT
from service.decision.explain import MODES
from service.simulation.run import run_maker
from service.simulation.truth import sigmoid
from service.simulation.world import build_world
from service.store import open_store

SCENARIOS = REPO_ROOT / "examples" / "scenarios"
OFFENSIVE = SCENARIOS / "offensive.toml"
DAY = 86400.0


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def test_an_incident_shifts_its_contents_hazards_from_its_moment_on():
    world = build_world(OFFENSIVE, decisions=200)
    truth, policy = world.truth, world.policy
    incident = world.scenario.spec.incidents[0]
    sends = np.flatnonzero(~truth.is_hold)
    hours, pressure = np.full(len(sends), 19), np.full(len(sends), 1.0)
    at = truth.start + incident.at
    before = truth.probabilities(1, at - 1.0, sends, hours, pressure)
    after = truth.probabilities(1, at, sends, hours, pressure)
    offending = np.array([policy.arms[a].content.id == incident.content for a in sends])
    email_or_sms = np.array([policy.arms[a].channel in ("email", "sms") for a in sends])
    assert offending.any() and (~offending).any()
    # exactly the declared logit shifts, on that content's arms only
    assert np.allclose(_logit(after["unsubscribe"][offending]) - _logit(before["unsubscribe"][offending]),
                       incident.unsubscribe)
    assert np.array_equal(after["unsubscribe"][~offending], before["unsubscribe"][~offending])
    hit = offending & email_or_sms  # complaints only where the scenario has them (email, sms)
    assert np.allclose(_logit(after["complaint"][hit]) - _logit(before["complaint"][hit]), incident.complaint)
    assert not after["complaint"][~email_or_sms].any()
    for k in ("open", "click", "convert"):  # engagement does not change
        assert np.array_equal(after[k], before[k])
    # the shaped reward the oracle maximises falls for that content only
    r_before, r_after = truth.expected_reward(before, 2), truth.expected_reward(after, 2)
    assert (r_after[offending] < r_before[offending]).all()
    assert np.array_equal(r_after[~offending], r_before[~offending])
    assert after["unsubscribe"][offending].mean() > 10 * before["unsubscribe"][offending].mean()
    assert np.allclose(sigmoid(_logit(before["unsubscribe"])), before["unsubscribe"])


def test_the_oracle_stops_sending_the_offending_content():
    """The oracle knows the truth, incidents included: it sent the spring sale before the
    incident and (outside the holdout group, which gets uniform choice) never after."""
    world = build_world(OFFENSIVE, decisions=1500, seed=5)
    run = run_maker(world, "oracle", monotonic=time.monotonic, progress=False)
    incident = world.scenario.spec.incidents[0]
    spring = np.array([world.policy.arms[a].content is not None and world.policy.arms[a].content.id == incident.content
                       for a in run.arm])
    after = world.ask_t >= world.truth.start + incident.at
    decided = run.mode_code != MODES.index("holdout")
    assert (spring & ~after & decided).sum() > 20
    assert (spring & after & decided).sum() == 0
    assert np.allclose(run.expected[decided], run.best[decided])


def test_the_scenario_policies_carry_the_example_policys_circuit_breaker():
    example = tomllib.loads((POLICIES_DIR / "lifecycle.toml").read_text())["safety"]
    for path in sorted((SCENARIOS / "policies").glob("*.toml")):
        assert tomllib.loads(path.read_text()).get("safety") == example, path.name


def _trips(db: str) -> list[dict]:
    store = open_store(db)
    try:
        return [e for e in store.safety_events("lifecycle", 1000) if e["kind"] in ("trip", "reopen")]
    finally:
        store.close()


@pytest.mark.slow
def test_the_breaker_trips_on_the_offending_content_after_the_incident_and_not_before(tmp_path):
    world = build_world(OFFENSIVE, decisions=12000, seed=2)
    incident = world.scenario.spec.incidents[0]
    db = str(tmp_path / "offensive.db")
    run = run_maker(world, "tactful", monotonic=time.monotonic, db=db, progress=False)
    assert run.violations.sum() == 0
    trips = _trips(db)
    assert trips, "the breaker never tripped"
    first = min(trips, key=lambda e: e["at"])
    assert first["target"] == f"content:{incident.content}" and first["kind"] == "trip"
    assert world.truth.start + incident.at <= first["at"] < world.ask_t[-1]  # not before the incident
    assert {e["target"] for e in trips} == {f"content:{incident.content}"}  # nothing else
    # once open, the content reaches only the probe share of people: far fewer sends than before
    contents = np.array([a.content.id if a.content else "" for a in world.policy.arms])[run.arm]
    sent = run.send & (contents == incident.content)
    days = (world.ask_t - world.truth.start) / DAY
    before = sent[(days >= 7) & (days < 14)].sum() / 7
    after = sent[world.ask_t >= first["at"]].sum() / ((world.ask_t[-1] - first["at"]) / DAY)
    assert before > 20 and after < before / 4, (before, after)
    # without the breaker, the same decisions up to the trip (same event ids, same draws), more sends after
    bare = run_maker(world, "no-breaker", monotonic=time.monotonic, progress=False)
    until = world.ask_t < first["at"]
    assert np.array_equal(bare.arm[until], run.arm[until])
    assert (bare.send & (np.array([a.content.id if a.content else "" for a in world.policy.arms])[bare.arm]
                         == incident.content))[~until].sum() > sent[~until].sum()


@pytest.mark.slow
def test_the_breaker_never_trips_where_nothing_changes(tmp_path):
    world = build_world(SCENARIOS / "standard.toml", decisions=12000, seed=2)
    db = str(tmp_path / "standard.db")
    run = run_maker(world, "tactful", monotonic=time.monotonic, db=db, progress=False)
    assert run.violations.sum() == 0 and run.send.sum() > 5000
    assert _trips(db) == []


@pytest.mark.slow
def test_breaker_study_script_small(tmp_path):
    """scripts/breaker_study.py end to end, on small runs: its figures and its section."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "breaker_study.py"), "--small", "--seeds", "1",
                           "--no-progress", "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "breaker.json").read_text())
    a = data["offensive"]
    assert a["same_decisions_until_the_first_event"]
    assert a["runs"]["breaker"]["trip"]["day"] >= a["incident_day"]
    assert a["runs"]["no-breaker"]["events"] == [] and a["runs"]["no-breaker"]["trip"] is None
    assert a["saved"]["breaker"]["unsubscribes"] == (a["runs"]["no-breaker"]["unsubscribes"]
                                                     - a["runs"]["breaker"]["unsubscribes"])
    assert data["standard"]["false_trips"] == 0 and len(data["standard"]["seeds"]) == 1
    section = (tmp_path / "breaker.md").read_text()
    assert section.startswith("## Circuit breaker\n") and "0 false trips" in section
