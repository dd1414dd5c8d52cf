"""Off-policy evaluation on logs with a known truth, on the Open Bandit Dataset sample, offline
retraining, shadow mode and the automatic revert guard, all over the real engine and store."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_export import write_world_policy

from models.ope import (DM, DR, IPS, SNIPS, BanditData, OffPolicyEvaluation, Replay, RewardModel, SwitchDR,
                        bootstrap_mean_interval, satterthwaite_df, weights)
from models.vw_policy import VWPolicy
from service.cli import main
from service.policy import load_policies
from service.policy.bandit import arm_lines
from service.offline.evaluate import bandit_data, evaluate
from service.offline.target_policies import logged_target, uniform_target
from service.offline.export import final_decisions
from service.learning.registry import VersionRegistry
from service.learning.shadow_report import shadow_report
from service.offline.obd import bts_action_dist
from service.learning.retrain import grid, retrain
from service.store import open_store
from service.simulation.known_truth import best_arm_target, default_world, generate_log, make_engine, true_value, world_policy

REPO = Path(__file__).resolve().parents[1]
OBD = REPO.parent / "shared" / "data" / "obd-men"  # ../shared/data beside the repository


def _log(tmp_path, logging="uniform", n=2000, seed=0, unsub=0.0):
    policy = world_policy(logging=logging)
    world = default_world(policy, seed=seed, unsub=unsub)
    run = generate_log(world, policy, tmp_path / f"{logging}.db", n, seed=seed)
    rows = list(final_decisions(run.engine.store, policy, now=run.clock.now()))
    return run, policy, world, rows


def test_estimators_cover_the_known_truth_on_a_uniform_log(tmp_path):
    run, policy, world, rows = _log(tmp_path)
    data = bandit_data(policy, rows)
    segments = [run.segments[r.decision.event_id] for r in rows]
    arm_ids = [a.id for a in policy.arms]
    best = [int(np.argmax([world.expected_reward(s, a) for a in arm_ids])) for s in segments]
    pi = uniform_target(data) * 0.5
    pi[np.arange(len(rows)), best] += 0.5
    truth = true_value(world, segments, [r.decision.allowed for r in rows], pi, arm_ids)
    ope = OffPolicyEvaluation(data, [IPS(), SNIPS(), DM(), DR(), SwitchDR(), Replay(n_boot=500)], RewardModel())
    estimates = {e.estimator: e for e in ope.run(pi)}
    for e in estimates.values():
        assert e.lo <= truth <= e.hi, (e, truth)
    assert estimates["IPS"].ess < len(rows)
    # the logging policy evaluated on its own log is its observed mean reward, exactly, for IPS
    on_policy = {e.estimator: e for e in ope.run(logged_target(data))}
    assert on_policy["IPS"].value == pytest.approx(float(data.reward.mean()))
    assert on_policy["IPS"].ess == pytest.approx(len(rows))


def test_intervals_on_a_log_of_the_engines_own_adaptive_exploration(tmp_path):
    """A greedy logger (the engine's learner with the example's former settings, known_truth's
    "greedy") soon stops exploring unlucky arms, so about ten decisions with weights near 100 carry
    the estimate (docs/ope.md). A percentile bootstrap rests on a variance estimate of those few
    decisions; Student's t with the weights' Satterthwaite degrees of freedom is wider by what
    that few decisions warrant. On this log (seed 2 of the coverage study) every interval covers
    the truth, and Switch-DR declines to switch the heavy decisions to the model."""
    run, policy, world, rows = _log(tmp_path, logging="greedy", n=3000, seed=2)
    data = bandit_data(policy, rows)
    segments = [run.segments[r.decision.event_id] for r in rows]
    pi = best_arm_target(world, policy, segments, data.allowed)
    truth = true_value(world, segments, [r.decision.allowed for r in rows], pi, [a.id for a in policy.arms])
    ope = OffPolicyEvaluation(data, [IPS(), SNIPS(), DR(), SwitchDR()], RewardModel(), seed=2)
    estimates = {e.estimator: e for e in ope.run(pi)}
    df = satterthwaite_df(weights(data, pi))
    assert 5 < df < 20 and weights(data, pi).max() > 100
    dr = DR().rounds(data, pi, ope.q_cross())
    lo, hi = bootstrap_mean_interval(dr, 0.05, 1000, 2)
    assert estimates["DR"].hi - estimates["DR"].lo > 1.05 * (hi - lo), "t with few degrees of freedom is wider"
    for e in estimates.values():
        assert e.lo <= truth <= e.hi, (e, truth)
    # Switch-DR would switch the heavy decisions to a model that is wrong there: it declines
    assert SwitchDR().chosen_tau(data, pi, ope.q_cross()) > weights(data, pi).max()
    assert estimates["SwitchDR"].value == pytest.approx(estimates["DR"].value)


def test_satterthwaite_df_counts_the_decisions_that_carry_the_variance():
    assert satterthwaite_df(np.ones(1000)) == 999
    heavy = np.r_[np.full(10, 100.0), np.full(990, 0.5)]
    assert 9 < satterthwaite_df(heavy) < 11
    assert satterthwaite_df(np.zeros(50)) == 49  # nothing carries anything: no correction to make


@pytest.mark.parametrize("unique_users", [False, True])  # a dense design, and a sparse one (> 2000 columns)
def test_reward_model_influence_is_the_derivative_of_refitting(unique_users):
    """DM's interval rests on h_j, the influence of decision j's reward on sum G * q_hat through
    the ridge fit: refitting with r_j raised by one must move that sum by h_j."""
    rng = np.random.default_rng(0)
    n, K = 400, 5
    users = [[(f"seg={rng.integers(3)}", 1.0), ("spend", float(rng.random()))]
             + ([(f"user={i}", 1.0)] if unique_users else []) for i in range(n)]
    data = BanditData(rng.random(n), rng.integers(0, K, n), np.full(n, 1 / K), np.ones((n, K), bool), users,
                      [[(f"arm={k}", 1.0), (f"content={k % 2}", 1.0)] for k in range(K)])
    model = RewardModel()
    G = rng.random((n, K)) / n
    everyone = np.arange(n)
    h = model.influence(data, everyone, G)
    base = np.sum(G * model.fit_predict(data, everyone))
    for j in (0, 7, 123):
        data.reward[j] += 1.0
        moved = np.sum(G * model.fit_predict(data, everyone)) - base
        data.reward[j] -= 1.0
        assert h[j] == pytest.approx(moved, rel=1e-6 if not unique_users else 5e-3)
    assert isinstance(model.design(data), np.ndarray) != unique_users


def _starved_log(target_share: float, starved: float, n: int = 4000) -> tuple[BanditData, np.ndarray, np.ndarray]:
    """Three arms; in every other decision the logger gives arm 0 a probability of `starved` (it
    had given up on it), and it was drawn in as many of them as that makes likely; the target puts
    `target_share` on arm 0. Returns the log, the target and the exact reward model."""
    rng = np.random.default_rng(1)
    K = 3
    pmf = np.tile([1 / 3, 1 / 3, 1 / 3], (n, 1))
    pmf[::2] = [starved, (1 - starved) / 2, (1 - starved) / 2]
    action = np.where(np.arange(n) % 2 == 0, rng.integers(1, 3, n), rng.integers(0, 3, n))
    action[np.arange(0, 2 * max(4, round(n / 2 * starved)), 2)] = 0
    means = np.array([0.6, 0.3, 0.2])
    reward = (rng.random(n) < means[action]).astype(float)
    data = BanditData(reward, action, pmf[np.arange(n), action], np.ones((n, K), bool),
                      [[("segment=all", 1.0)]] * n, [[(f"arm={k}", 1.0)] for k in range(K)], pmf, (0.0, 1.0))
    pi = np.tile([target_share, (1 - target_share) / 2, (1 - target_share) / 2], (n, 1))
    return data, pi, np.tile(means, (n, 1))


def test_switch_dr_switches_only_where_the_target_puts_little_probability():
    """Wang et al.'s rule: switch the heavy decisions to the model when the target's probability
    there, times the reward range, is a smaller risk than the variance they bring."""
    # 1% on an arm logged with probability 0.0001: weights of 100 on a bias of at most 0.003
    data, pi, q = _starved_log(0.01, 0.0001)
    sw, dr = SwitchDR(), DR()
    tau = sw.chosen_tau(data, pi, q)
    assert tau < weights(data, pi).max() == pytest.approx(100.0)
    bound = SwitchDR.bias_bound(data, pi, q, tau)
    assert 0 < bound <= 0.01 * 0.5 * 0.6 + 1e-12
    lo, hi = sw.interval(data, pi, q)
    dlo, dhi = dr.interval(data, pi, q)
    assert hi - lo < dhi - dlo
    assert hi - lo > 2 * bound  # the interval carries the bias it accepted
    # 60% on an arm logged with probability 0.01: weights of 60 on a third of the target's value
    data, pi, q = _starved_log(0.6, 0.01)
    assert sw.chosen_tau(data, pi, q) > weights(data, pi).max() == pytest.approx(60.0)
    assert sw.estimate(data, pi, q) == dr.estimate(data, pi, q)
    assert sw.interval(data, pi, q) == dr.interval(data, pi, q)
    # forced to switch anyway, its interval owns up to the bias it risks: 0.3 of the value times 0.6
    lo, hi = SwitchDR(tau=50.0).interval(data, pi, q)
    assert hi - lo > 2 * SwitchDR.bias_bound(data, pi, q, 50.0) == pytest.approx(2 * 0.3 * 0.6)


@pytest.mark.slow  # imports and evaluates 20,000 logged impressions
@pytest.mark.skipif(not OBD.is_dir(), reason="the OBD sample is not in ../shared/data/obd-men")
def test_obd_protocol_random_logs(tmp_path):
    """Import the OBD sample; on the uniform-random logs, the random policy's own value reproduces
    its observed click rate inside every interval, and the Bernoulli TS policy's DR interval holds
    its observed on-policy click rate."""
    runner = CliRunner()
    db, pol = tmp_path / "obd.db", tmp_path / "pol"
    r = runner.invoke(main, ["import-obd", str(OBD), "--db", str(db), "--policies", str(pol)])
    assert r.exit_code == 0, r.output
    assert "obd-men-random: 10000 impressions, 46 clicks" in r.output
    assert "obd-men-bts: 10000 impressions, 69 clicks" in r.output
    again = runner.invoke(main, ["import-obd", str(OBD), "--db", str(db), "--policies", str(pol)])
    assert again.exit_code == 0  # idempotent
    store = open_store(str(db))
    assert store.query("SELECT count(*) FROM decisions")[0][0] == 20000
    policies = load_policies(pol)
    result = evaluate(store, policies["obd-men-random"], "bts-zozotown", ("uniform",), now=2e9, n_boot=500)
    rows = {(r["target"], r["estimator"]): r for r in result.rows}
    for est in ("IPS", "SNIPS", "DM", "DR", "SwitchDR"):
        u = rows[("uniform", est)]
        assert u["lo"] <= 0.0046 <= u["hi"], u
    dr = rows[("bts-zozotown", "DR")]
    assert dr["lo"] <= 0.0069 <= dr["hi"], dr
    assert 1000 < dr["ess"] < 10000


def test_bts_action_distribution_is_a_distribution_per_position():
    dist = bts_action_dist("men", n_sim=20000)
    assert dist.shape == (34, 3)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)
    # item 13 has by far the highest prior click rate (518 / 111844) and is at the top most often
    assert int(np.argmax(dist[:, 0])) == int(np.argmax(np.array([47, 8, 62, 142, 3, 6, 100, 48, 23, 71, 61, 13, 16, 518])
                                                       / np.array([12198, 3566, 15993, 35522, 2367, 3100, 24665, 13210,
                                                                   7061, 18061, 17449, 5644, 6787, 111326])))


def test_retrain_writes_an_inactive_candidate_with_its_evaluation(tmp_path):
    run, policy, world, rows = _log(tmp_path, logging="engine", n=1500, seed=2)
    store = run.engine.store
    before = store.active_version(policy.name)
    configs = grid(interactions=("-q UA",), bits=18)
    r = retrain(store, policy, now=run.clock.now(), configs=configs, n_boot=200)
    assert r["train"] == 900 and r["select"] == 300 and r["held_out"] == 300
    assert store.active_version(policy.name) == before  # a candidate, not active
    ops = VersionRegistry(store)
    v = ops.version(policy.name, r["version"])
    assert v["source"] == "retrain" and v["parent"] == before and not v["active"]
    assert v["note"]["chosen"] in configs and len(v["note"]["search"]) == 2
    ev = v["evaluation"]
    assert ev["n"] == 300 and ev["held_out"] and ev["lift"]["lo"] <= ev["lift"]["value"] <= ev["lift"]["hi"]
    # the stored version serves: it loads and scores every arm
    model = VWPolicy(arm_lines(policy), model_bytes=store.model(policy.name, r["version"])["model"])
    assert model.predict("shared |User segment=loyal", list(range(len(policy.arms)))).sum() == pytest.approx(1)
    model.close()


def test_retraining_on_the_same_decisions_writes_no_second_candidate(tmp_path):
    run, policy, world, rows = _log(tmp_path, logging="engine", n=1500, seed=2)
    store = run.engine.store
    configs = grid(interactions=("-q UA",), bits=18)
    first = retrain(store, policy, now=run.clock.now(), configs=configs, n_boot=50)
    again = retrain(store, policy, now=run.clock.now(), configs=configs, n_boot=50)
    assert first["new"] and not again["new"] and again["version"] == first["version"]
    versions = VersionRegistry(store).versions(policy.name)
    assert [v["version"] for v in versions if v["source"] == "retrain"] == [first["version"]]
    # its evaluation is stored again (what promote reads: the latest, the one this retrain printed)
    assert store.evaluation_counts(policy.name)[first["version"]] == 2
    assert VersionRegistry(store).latest_evaluation(policy.name, first["version"])["n"] == again["held_out"]
    # on other decisions (a narrower span), a new candidate
    other = retrain(store, policy, now=run.clock.now(), configs=configs, n_boot=50, since=rows[100].decision.decided_at)
    assert other["new"] and other["version"] != first["version"]


def _bad_model(policy, arm: str) -> bytes:
    """A version that learned to send `arm` to everyone."""
    model = VWPolicy(arm_lines(policy), policy.spec.learner.vw_args)
    rng = np.random.default_rng(0)
    target = policy.arm_index[arm]
    for _ in range(6000):  # many: the learner takes small steps (-l 0.1, importance weights of at most 2)
        seg = ["bargain", "newbie", "loyal", "lapsed"][rng.integers(4)]
        chosen = int(rng.integers(len(policy.arms)))
        model.learn(f"shared |User segment={seg} |History contacts_7d:0 recency=never",
                    list(range(len(policy.arms))), chosen, 0.0 if chosen == target else 1.0, 1 / len(policy.arms))
    data = model.to_bytes()
    model.close()
    return data


def test_shadow_candidate_is_logged_never_served(tmp_path):
    policy = world_policy(logging="engine")
    world = default_world(policy, seed=4)
    engine, clock = make_engine(tmp_path / "s.db", {policy.name: policy})
    ops = VersionRegistry(engine.store)
    bad = ops.add_version(policy.name, _bad_model(policy, "sale:email:now"), policy.spec.learner.vw_args,
                          "import", clock.now())
    ops.set_shadow(policy.name, bad, clock.now())
    served = []
    run = generate_log(world, policy, None, 400, seed=4, learn_every=0, engine=engine, clock=clock,
                       on_decision=served.append)
    assert all(d["model_version"] == 1 for d in served)  # the candidate never serves
    shadows = engine.store.query("SELECT arm, version FROM shadow_decisions")
    assert len(shadows) == 400 and {s[1] for s in shadows} == {bad}
    assert sum(s[0] == "sale:email:now" for s in shadows) > 300  # it would have sent that arm
    report = shadow_report(ops.store, policy, run.clock.now())
    assert report["n"] == 400 and 0 <= report["agreement"] < 0.5
    assert "agreement with the served arm" in report["text"]


def test_guard_reverts_a_planted_bad_version_without_anyone_acting(tmp_path):
    """A version that sends an arm with a 30% unsubscribe rate is activated; the learner's guard
    reverts to the version that served before within its first decisions, and records why."""
    policy = world_policy(logging="engine", extra={"promotion": {"guard": {"decisions": 400, "min_decisions": 100,
                                                                          "max_unsubscribe_rate": 0.05}}})
    world = default_world(policy, seed=5)
    for s in world.segments:
        world.unsub[(s, "sale:email:now")] = 0.3
    engine, clock = make_engine(tmp_path / "g.db", {policy.name: policy})
    ops = VersionRegistry(engine.store)
    generate_log(world, policy, None, 300, seed=5, learn_every=100, engine=engine, clock=clock)
    good = engine.store.active_version(policy.name)
    bad = ops.add_version(policy.name, _bad_model(policy, "sale:email:now"), policy.spec.learner.vw_args,
                          "import", clock.now())
    ops.activate(policy.name, bad, "planted bad version", clock.now())
    served = []
    generate_log(world, policy, None, 600, seed=6, learn_every=50, engine=engine, clock=clock,
                 on_decision=served.append)
    last = ops.activations(policy.name, 100)
    reverts = [a for a in last if a["reason"].startswith("guard:")]
    assert len(reverts) == 1, last
    assert reverts[0]["version"] == good and "unsubscribe rate" in reverts[0]["reason"]
    watch = engine.store.query("SELECT status, reason FROM guard_watches")[-1]
    assert watch[0] == "reverted"
    # after the revert, decisions are served by the good version's line again, not the bad one's
    assert served[-1]["model_version"] != bad
    assert engine.store.active_version(policy.name) not in (bad,)


def test_retrain_shadow_and_promote_commands(tmp_path):
    """The data scientist's loop on the command line: retrain a candidate, shadow it on live
    decisions, report its agreement and value, and ask to promote it."""
    run, policy, world, rows = _log(tmp_path, logging="engine", n=1200, seed=7)
    pdir = tmp_path / "policies"
    pdir.mkdir()
    write_world_policy(pdir / "truth.toml", logging="engine")
    db = str(tmp_path / "engine.db")
    base = ["--db", db, "--policies", str(pdir), "--policy", "truth"]
    runner = CliRunner()
    r = runner.invoke(main, ["retrain", *base, "--now", str(run.clock.now()), "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    assert "trained on 720 decisions, chose on the next 240" in r.output
    assert "trained again on those 960 decisions, evaluated on the 240 latest (held out)" in r.output
    assert r.output.count("-q UA") == 6 and r.output.count("-q UI") == 2 and "*" in r.output
    assert r.output.count("--clip_p 0.5 -b 22") == 6 and "--clip_p 0.1" not in r.output
    version = int(r.output.split("candidate version ")[1].split()[0])
    again = runner.invoke(main, ["retrain", *base, "--now", str(run.clock.now()), "--bootstrap", "100"])
    assert again.exit_code == 0 and (f"the same model as version {version} of truth, which an earlier retrain wrote: "
                                     "no new version") in again.output, again.output
    r = runner.invoke(main, ["models", "shadow", *base, str(version)])
    assert r.exit_code == 0, r.output
    generate_log(world, policy, None, 300, seed=8, learn_every=0, engine=run.engine, clock=run.clock)
    r = runner.invoke(main, ["evaluate", *base, "--shadow", "--now", str(run.clock.now()), "--bootstrap", "100",
                             "--out", str(tmp_path / "shadow")])
    assert r.exit_code == 0, r.output
    assert f"shadow candidate version(s) [{version}] of truth: 300 final decisions" in r.output
    assert "agreement with the served arm" in r.output
    r = runner.invoke(main, ["models", "list", *base])
    assert any(line.startswith("s ") and line.split()[1] == str(version) for line in r.output.splitlines()), r.output
    # 240 held-out decisions are fewer than the policy's default minimum of 1000: refused, and said why
    r = runner.invoke(main, ["models", "promote", *base, str(version)])
    assert r.exit_code == 1 and "min_decisions: evaluated on 240 decisions" in r.output, r.output


@pytest.mark.slow
def test_the_winners_curse_script_runs_both_schemes_on_the_same_log(tmp_path):
    """scripts/winners_curse.py (docs/models.md), two small seeds: both schemes evaluate on the
    latest 20% and store a model trained on the earliest 80%, so when they choose the same
    configuration their estimates and true lifts agree; only the slice that chose differs."""
    out = tmp_path / "curse.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "winners_curse.py"), "--seeds", "2", "--n", "600",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "| chosen on one slice, evaluated on a later one (now) |" in proc.stdout
    result = json.loads(out.read_text())
    assert [s["scheme"] for s in result["summary"]] == ["same_slice", "held_out"]
    for run in result["runs"]:
        a, b = run["same_slice"], run["held_out"]
        assert np.isfinite([a["estimated"], a["true"], b["estimated"], b["true"]]).all()
        if a["chosen"] == b["chosen"]:
            assert a["estimated"] == pytest.approx(b["estimated"]) and a["true"] == pytest.approx(b["true"])
