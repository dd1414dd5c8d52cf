"""Replay simulation: scenarios are validated like policies, the simulator's own guardrail check
catches what it must, and small runs of the real decision code -- in process and against a real
`tactful serve --clock request` -- write their reports with zero violations."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import POLICIES_DIR, REPO_ROOT
from serving import serve  # noqa: F401  (fixture)
from service.cli import main
from service.decision.explain import MODES
from service.policy import load_policy
from service.simulation.referee import (CapRule, Checker, ConsentRule, CooldownRule, MinGapRule, PersonRecord,
                                        QuietHoursRule, rules_for)
from service.simulation.run import run_maker, simulate
from service.simulation.scenario import ScenarioError, load_scenario
from service.simulation.world import build_world
from service.store import open_store

SCENARIOS = REPO_ROOT / "examples" / "scenarios"
STANDARD = SCENARIOS / "standard.toml"
LIFECYCLE = POLICIES_DIR / "lifecycle.toml"
DAY = 86400.0


# -- scenario files ------------------------------------------------------------------------

def _scenario_with(tmp_path, edit) -> str:
    text = STANDARD.read_text()
    text = edit(text)
    path = tmp_path / "scenario.toml"
    path.write_text(text.replace('policy = "policies/lifecycle-sim.toml"',
                                 f'policy = "{SCENARIOS / "policies" / "lifecycle-sim.toml"}"'))
    return str(path)


INCIDENT = '\n[[incidents]]\ncontent = "spring_sale"\nat = "14d"\nunsubscribe = 3.0\ncomplaint = 1.0\n'


@pytest.mark.parametrize("edit, key, reason", [
    (lambda t: t.replace("share = 0.35", "share = 0.45", 1), "segments", "add up to 1.1, not 1"),
    (lambda t: t.replace("promotion = 1.2", "promo = 1.2", 1), "segments[1].topics.promo", "unknown topic 'promo'"),
    (lambda t: t.replace('half_life = "3d"', 'half_life = "three days"'), "fatigue.half_life", "is not a duration"),
    (lambda t: t.replace("days = 28", "days = 28\nweeks = 4"), "weeks", "unknown key"),
    (lambda t: t.replace('timezone = "Europe/Berlin"', 'timezone = "Europe/Atlantis"'),
     "segments[0].regions[1].timezone", "not an IANA time zone"),
    (lambda t: t.replace("[consent]", "[consent]\nfax = 0.5"), "consent.fax", "unknown channel 'fax'"),
    (lambda t: t + '\n[[drift]]\nsegment = "nobody"\nat = "14d"\n', "drift[0].segment", "unknown segment 'nobody'"),
    (lambda t: t + INCIDENT.replace("spring_sale", "summer_sale"), "incidents[0].content",
     "unknown content 'summer_sale'"),
    (lambda t: t + INCIDENT.replace('"14d"', '"28d"'), "incidents[0].at", "after the run ends (28 days)"),
    (lambda t: t + INCIDENT.replace('"14d"', '"two weeks"'), "incidents[0].at", "is not a duration"),
    (lambda t: t + INCIDENT.replace("unsubscribe = 3.0", "unsubscribe = 0").replace("complaint = 1.0", ""),
     "incidents[0]", "shifts the unsubscribe or the complaint hazard"),
    (lambda t: t + INCIDENT + "clicks = -1.0\n", "incidents[0].clicks", "unknown key"),
])
def test_bad_scenarios_name_file_key_and_reason(tmp_path, edit, key, reason):
    path = _scenario_with(tmp_path, edit)
    with pytest.raises(ScenarioError) as err:
        build_world(path, decisions=100)
    assert err.value.path == path
    assert err.value.key == key
    assert reason in err.value.reason


def test_cli_reports_a_bad_scenario_clearly(tmp_path):
    path = _scenario_with(tmp_path, lambda t: t.replace("share = 0.35", "share = 0.45", 1))
    result = CliRunner().invoke(main, ["simulate", path, "--decisions", "100", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"invalid scenario: {path}: segments: segment shares add up to 1.1, not 1" in result.output


def test_shipped_scenarios_load():
    for name in ("standard", "fatigue-heavy", "drift", "offensive"):
        sc = load_scenario(SCENARIOS / f"{name}.toml")
        assert sc.name == name
        assert sc.policy_path.exists()
    assert load_scenario(SCENARIOS / "drift.toml").spec.drift
    assert load_scenario(SCENARIOS / "offensive.toml").spec.incidents


# -- the independent check --------------------------------------------------------------------

def test_independent_rules():
    paris = ZoneInfo("Europe/Paris")
    t = 1_773_000_000.0  # 2026-03-08 21:00 in Paris
    person = PersonRecord(paris, {"email": True, "push": False},
                          sends=[("push", t - 20 * 3600), ("email", t - 3 * DAY), ("email", t - 2 * DAY)])
    consent = ConsentRule({"email": "opt_in", "push": "opt_in", "sms": "opt_in", "in_app": "opt_out"})
    assert consent.blocks(person, "email", t, t) is None
    assert "refused" in consent.blocks(person, "push", t, t)
    assert "no opt-in" in consent.blocks(person, "sms", t, t)
    assert consent.blocks(person, "in_app", t, t) is None
    push_daily = CapRule("push", 1, DAY)
    assert push_daily.blocks(person, "push", t, t) is not None            # 20 h after the last push
    assert push_daily.blocks(person, "push", t + 5 * 3600, t) is None     # 25 h after it
    email_weekly = CapRule("email", 2, 7 * DAY)
    assert email_weekly.blocks(person, "email", t, t) is not None
    assert email_weekly.blocks(person, "email", t + 5 * DAY, t) is None   # the first email has left the window
    # a send scheduled *before* existing ones counts too: windows are sliding, by send time
    assert CapRule("*", 3, 7 * DAY).blocks(person, "sms", t - 4 * DAY, t) is not None
    assert QuietHoursRule(21, 8).blocks(person, "email", t + 2 * 3600, t) is not None   # 23:00 Paris
    assert QuietHoursRule(21, 8).blocks(person, "email", t + 14 * 3600, t) is None      # 11:00 Paris
    assert MinGapRule(4 * 3600).blocks(person, "email", t - 2 * DAY + 3600, t) is not None
    person.left["email"] = ("complaint", t - DAY)
    assert CooldownRule(7 * DAY).blocks(person, "push", t, t) is not None
    assert CooldownRule(7 * DAY).blocks(person, "push", t + 7 * DAY, t + 7 * DAY) is None


def test_rules_come_from_the_policy_file():
    rules, unchecked = rules_for(load_policy(LIFECYCLE))
    assert [r.name for r in rules] == ["consent", "frequency_cap", "frequency_cap", "frequency_cap", "min_gap",
                                       "quiet_hours", "cooldown_unsubscribe", "cooldown_complaint"]
    assert {(r.channel, r.limit, r.window) for r in rules[1:4]} == {("push", 1, DAY), ("email", 3, 7 * DAY),
                                                                   ("*", 5, 7 * DAY)}
    quiet = rules[5]
    assert (quiet.start_hour, quiet.end_hour, quiet.channels) == (21, 8, ("email", "push", "sms"))
    assert quiet.timezone is None  # judged in each person's own zone
    assert unchecked == ["suppression"]  # needs per-send engagement, which the check does not track
    noon = 12 * 3600.0
    assert Checker(rules).allows(PersonRecord(ZoneInfo("UTC"), {"email": True}), "email", noon, noon)
    assert not Checker(rules).allows(PersonRecord(ZoneInfo("UTC"), {"email": True}), "email", 0.0, 0.0)


@pytest.mark.slow  # two simulations of 1,500 decisions
def test_the_check_catches_sends_a_rule_forbids():
    """The scenario's policy declares no quiet hours, so the engine does not keep to them: asked
    to check them, the simulator finds the sends that fall inside them, and still finds none
    against the policy's own rules."""
    world = build_world(STANDARD, decisions=1500, seed=3)
    run = run_maker(world, "uniform", monotonic=time.monotonic, progress=False, extra_rules=[QuietHoursRule(21, 8)])
    assert set(run.violation_reasons) == {"quiet_hours"}
    assert run.violations.sum() > 0
    clean = run_maker(world, "uniform", monotonic=time.monotonic, progress=False)
    assert clean.violations.sum() == 0


@pytest.mark.slow  # two simulations of 1,500 decisions
def test_quiet_hours_hold_in_each_persons_own_zone():
    """The example policy keeps email, push and SMS out of 21:00-08:00. The simulator registers
    every person's time zone with the service (their preferences) and judges quiet hours in that
    zone: no violations. Left unregistered, the service falls back to the policy's zone (Paris),
    and the independent check catches the sends that reach New York at night."""
    world = build_world(STANDARD, policy=LIFECYCLE, decisions=1500, seed=4)
    zones = set(world.population.timezone)
    assert {"Europe/Paris", "America/New_York"} <= zones
    run = run_maker(world, "uniform", monotonic=time.monotonic, progress=False)
    assert "quiet_hours" in run.rules_checked
    assert run.violations.sum() == 0 and run.warmup_violations == 0
    wrong_zone = run_maker(world, "uniform", monotonic=time.monotonic, progress=False, register_timezones=False)
    assert set(wrong_zone.violation_reasons) == {"quiet_hours"}
    assert wrong_zone.violations.sum() > 0
    # the sends caught are at night outside Paris' zone (Paris' 08:00 is 02:00 in New York,
    # 07:00 in London); Paris and Berlin share the policy's offset and are never caught
    caught = {world.population.timezone[p] for p in world.ask_person[wrong_zone.violations > 0]}
    assert "America/New_York" in caught
    assert not caught & {"Europe/Paris", "Europe/Berlin"}


# -- small runs of the real decision code -------------------------------------------------------

@pytest.mark.slow
def test_small_comparison_in_process(tmp_path):
    out = tmp_path / "out"
    results = simulate(STANDARD, monotonic=time.monotonic, decisions=3000, seed=5, out=out, db=str(tmp_path / "log.db"),
                       makers=["tactful", "uniform", "oracle"], compare=True, progress=False)
    runs = results["runs"]
    for name, m in runs.items():
        assert m["guardrail_violations"]["total"] == 0, (name, m["guardrail_violations"])
        assert m["totals"]["decisions"] == 3000
        for f in ("metrics.json", "report.md", "cumulative_reward.png", "unsubscribe_rate.png",
                  "contacts_per_person.png", "arm_share.png"):
            assert (out / name / f).stat().st_size > 0, f
    assert runs["oracle"]["totals"]["shaped_reward"] > runs["uniform"]["totals"]["shaped_reward"]
    assert runs["oracle"]["totals"]["expected_shaped_reward"] > runs["uniform"]["totals"]["expected_shaped_reward"]
    # the oracle's in-place figure bounds its own choice (the holdout group gets uniform choice)
    o = runs["oracle"]["totals"]
    assert o["expected_shaped_reward"] <= o["oracle_in_place_expected_reward"] + 1e-6
    assert (out / "comparison.md").read_text().count("| tactful |") == 1
    assert (out / "comparison.png").stat().st_size > 0
    metrics = json.loads((out / "tactful" / "metrics.json").read_text())
    assert {"shaped_reward", "clicks", "conversions", "unsubscribes", "complaints",
            "contacts_per_person_week"} <= set(metrics["totals"])
    assert metrics["regret"]["cumulative_regret_vs_oracle_run"]
    assert 0 < metrics["totals"]["contacts_per_person_week"] <= 5  # the overall cap is 5 a week
    # the decision log is the real one, and the learner learned from it
    store = open_store(str(tmp_path / "log-tactful.db"))
    warmup = metrics["warmup_decisions"]
    assert warmup == 3000 * 7 // 28  # a week of business as usual before the 28 measured days
    assert store.policy_counts("lifecycle", 1e12)["decisions"] == 3000 + warmup
    assert store.active_version("lifecycle") > 1
    store.close()


@pytest.mark.slow
def test_runs_are_reproducible():
    world = build_world(STANDARD, decisions=800, seed=11)
    a = run_maker(world, "tactful", monotonic=time.monotonic, progress=False)
    b = run_maker(world, "tactful", monotonic=time.monotonic, progress=False)
    assert np.array_equal(a.arm, b.arm)
    assert a.realized.sum() == b.realized.sum()


@pytest.mark.e2e
def test_simulation_against_a_real_server(serve, tmp_path):
    http, base = serve(clock="request")
    out = tmp_path / "http"
    results = simulate(STANDARD, monotonic=time.monotonic, policy=LIFECYCLE, decisions=600, seed=2, url=base,
                       out=out, progress=False)
    m = results["runs"]["tactful"]
    assert m["mode"] == "http"
    assert m["guardrail_violations"]["total"] == 0
    assert (out / "report.md").exists()
    counts = http.get(f"{base}/v1/policies/lifecycle").json()["counts"]
    assert counts["decisions"] == 600 + m["warmup_decisions"]
    assert counts["outcomes"] > 0


@pytest.mark.e2e
def test_url_refuses_a_server_with_another_policy(serve, tmp_path):
    mine = tmp_path / "policies"
    mine.mkdir()
    text = (POLICIES_DIR / "lifecycle.toml").read_text()
    (mine / "lifecycle.toml").write_text(text.replace('[reward]\nwindow = "2d"', '[reward]\nwindow = "3d"', 1))
    http, base = serve(clock="request", policies=mine)
    with pytest.raises(Exception, match="other reward window"):
        # the scenario's policy: a 2-day window, the server's 3 days
        simulate(STANDARD, monotonic=time.monotonic, decisions=50, url=base, progress=False)


@pytest.mark.slow
def test_quality_script_small(tmp_path):
    """What CI runs: the quality script's small mode, end to end."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "quality.py"), "--small",
                           "--out", str(tmp_path / "q")], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert summary["violations"] == 0
    assert (tmp_path / "q" / "quality.md").exists()


def test_outside_the_holdout_the_oracle_takes_the_best_arm_the_independent_rules_allow():
    """The engine's allowed sets match the simulator's own rules: wherever the oracle decides
    (everyone but the policy's holdout group, who get uniform choice), it gets the best arm that
    the independent check allows."""
    world = build_world(STANDARD, decisions=1500, seed=5)
    run = run_maker(world, "oracle", monotonic=time.monotonic, progress=False)
    holdout = run.mode_code == MODES.index("holdout")
    assert holdout.any() and (~holdout).sum() > 1000
    assert np.allclose(run.expected[~holdout], run.best[~holdout])
