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

SCENARIOS = REPO_ROOT / "examples" / "scenarios"
OFFENSIVE = SCENARIOS / "offensive.toml"


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


@pytest.mark.slow
def test_breaker_study_script_small(tmp_path):
    """scripts/breaker_study.py end to end, on small runs of the real decision code: its figures and
    its section. In `offensive` the breaker trips after the incident, on the offending content and
    nothing else, and from then on the content reaches only the probe share of people; the runs
    with and without a breaker decide alike until it acts. In `standard`, where nothing changes,
    it never trips."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "breaker_study.py"), "--small", "--seeds", "1",
                           "--offensive-decisions", "12000", "--offensive-seed", "2", "--standard-decisions", "12000",
                           "--no-progress", "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "breaker.json").read_text())
    a = data["offensive"]
    runs = a["runs"]
    assert a["same_decisions_until_the_first_event"]
    assert all(r["violations"] == 0 for r in runs.values())
    trips = [e for e in runs["breaker"]["events"] if e["kind"] in ("trip", "reopen")]
    assert trips, "the breaker never tripped"
    first = min(trips, key=lambda e: e["day"])
    assert first["kind"] == "trip" and first["target"] == f"content:{a['content']}"
    assert {e["target"] for e in trips} == {f"content:{a['content']}"}  # nothing else
    assert a["incident_day"] <= first["day"] < 21 and runs["breaker"]["trip"]["day"] == first["day"]
    # the week after the trip's week: the content reaches far fewer people than the week before
    # the incident, and fewer than without a breaker
    week1, week3 = runs["breaker"]["content_sends_by_week"][1], runs["breaker"]["content_sends_by_week"][3]
    assert week1 > 140 and week3 < week1 / 4, runs["breaker"]["content_sends_by_week"]
    assert runs["no-breaker"]["content_sends_by_week"][3] > week3
    assert runs["no-breaker"]["events"] == [] and runs["no-breaker"]["trip"] is None
    assert a["saved"]["breaker"]["unsubscribes"] == runs["no-breaker"]["unsubscribes"] - runs["breaker"]["unsubscribes"]
    b = data["standard"]
    assert b["false_trips"] == 0 and len(b["seeds"]) == 1
    assert b["seeds"][0]["violations"] == 0 and b["seeds"][0]["sends"] > 5000
    section = (tmp_path / "breaker.md").read_text()
    assert section.startswith("## Circuit breaker\n") and "0 false trips" in section
