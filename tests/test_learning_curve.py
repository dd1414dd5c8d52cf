"""scripts/learning_curve.py (docs/quality.md, "Learning curves (issue 15)") and the three scenarios
it added (many-similar, hold-mostly, tenure-driven)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from service.simulation.world import build_world

REPO_ROOT = Path(__file__).resolve().parent.parent
NEW = ("many-similar", "hold-mostly", "tenure-driven")


def _script():
    spec = importlib.util.spec_from_file_location("learning_curve", REPO_ROOT / "scripts" / "learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interval_is_the_student_t_interval_of_the_mean():
    lc = _script()
    mean, lo, hi = lc.interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd 1.5811, t(4) 2.776: half-width 1.963
    assert mean == 3.0 and lo == pytest.approx(3.0 - 1.963, abs=1e-3) and hi == pytest.approx(3.0 + 1.963, abs=1e-3)
    assert lc.interval([2.0, 2.0])[1:] == (2.0, 2.0)


def test_tactful_runs_the_example_learner_everywhere(tmp_path):
    lc = _script()
    example = tomllib.loads((REPO_ROOT / "examples" / "policies" / "lifecycle.toml").read_text())["learner"]
    for scenario in lc.ALL_SCENARIOS:
        path = lc.study_policy(scenario, tmp_path)
        data = tomllib.loads(path.read_text())
        assert data["learner"] == example, scenario
        own = tomllib.loads(lc.load_scenario(REPO_ROOT / "examples" / "scenarios" / f"{scenario}.toml")
                            .policy_path.read_text())
        # only the learner changes: reward, guardrails, features and arms stay the scenario policy's
        assert {k: v for k, v in data.items() if k != "learner"} == {k: v for k, v in own.items() if k != "learner"}
    assert lc.study_policy("hold-mostly", tmp_path).is_relative_to(REPO_ROOT / "examples")  # shipped with it


def test_new_learner_arguments_rerun_tactful_alone_and_a_new_holdout_reruns_all(tmp_path):
    lc = _script()
    policy = lc.study_policy("standard", tmp_path)
    text = policy.read_text()
    learner = tomllib.loads(text)["learner"]
    variants = {"same": text,
                "vw_args": text.replace(learner["vw_args"], learner["vw_args"].replace("-l 0.1", "-l 0.2")),
                "holdout": text.replace(f"holdout_share = {learner['holdout_share']}", "holdout_share = 0.2")}
    prints = {}
    for name, body in variants.items():
        assert name == "same" or body != text, name
        path = tmp_path / f"{name}.toml"
        path.write_text(body)
        prints[name] = {m: lc.maker_print(lc.fingerprint("standard", path), m) for m in lc.MAKERS}
    assert prints["same"] == {m: lc.maker_print(lc.fingerprint("standard", policy), m) for m in lc.MAKERS}
    for m in lc.MAKERS:
        # a baseline takes the VW model's place: its runs stand when only the model's arguments change
        assert (prints["vw_args"][m] != prints["same"][m]) == (m == "tactful"), m
        # the holdout group decides for every maker
        assert prints["holdout"][m] != prints["same"][m], m


def test_runs_made_with_other_settings_are_named_stale(tmp_path):
    lc = _script()
    policy = lc.study_policy("standard", tmp_path)
    prints = lc.fingerprint("standard", policy)
    runs = {lc.key("standard", m, 1, 200): {"fingerprint": lc.maker_print(prints, m)} for m in lc.MAKERS}
    results = {"runs": runs}
    assert lc.stale_runs(results, tmp_path, ["standard"], [1], [200]) == []
    runs[lc.key("standard", "tactful", 1, 200)]["fingerprint"] = "made with other vw_args"
    assert lc.stale_runs(results, tmp_path, ["standard"], [1, 2], [200, 400]) == ["standard/tactful/1/200"]


def test_a_failed_run_in_parallel_leaves_the_others_kept(tmp_path, monkeypatch):
    lc = _script()
    monkeypatch.setitem(sys.modules, "learning_curve", lc)  # the worker processes find _worker_entry by name
    policies = {"standard": lc.study_policy("standard", tmp_path), "tenure-driven": tmp_path / "missing.toml"}
    prints = {"standard": lc.fingerprint("standard", policies["standard"]), "tenure-driven": ("x", "y")}
    todo = [("tenure-driven", 1, 200, ["uniform"]), ("standard", 1, 200, ["uniform", "oracle"])]
    path = tmp_path / "results.json"
    results = {"runs": {}}
    with pytest.raises(SystemExit, match=r"1 runs failed \(the 2 others are kept\):\n"
                       r"tenure-driven/uniform/1/200: RuntimeError\('PolicyError: .*missing\.toml.*cannot be read"):
        lc._run_parallel(path, results, todo, policies, prints, progress=False, jobs=2)
    kept = json.loads(path.read_text())["runs"]
    assert sorted(kept) == ["standard/oracle/1/200", "standard/uniform/1/200"]
    assert kept["standard/uniform/1/200"]["totals"]["decisions"] == 200


def test_a_short_run_is_not_a_checkpoint_of_a_longer_one():
    lc = _script()
    ck = lc.check_checkpoints(small=400, large=1000)
    assert ck["people"][0] < ck["people"][1]
    small_days, large_days = ck["days_spanned_by_first_small_decisions"]
    assert small_days > 2 * large_days


def test_new_scenarios_are_what_they_claim():
    worlds = {s: build_world(REPO_ROOT / "examples" / "scenarios" / f"{s}.toml", decisions=400, seed=1) for s in NEW}
    # many similar contents: twelve contents, and within a segment their effects differ by little
    many = worlds["many-similar"]
    assert len(many.policy.spec.content) == 12
    for seg in many.scenario.spec.segments:
        effects = list(seg.content.values())
        assert len(effects) == 12 and max(effects) - min(effects) <= 0.6
    # holding usually best: once a person has had one contact in the fatigue window, every send is
    # worth less than holding, except to the fans; to a rested person, little more than holding
    hold = worlds["hold-mostly"]
    t = hold.truth
    sends = np.flatnonzero(~t.is_hold)
    for seg, spec in enumerate(hold.scenario.spec.segments):
        best = {}
        for contacts in (0, 1):
            probs = t.probabilities(seg, float(hold.ask_t[0]), sends, np.full(len(sends), 12),
                                    np.full(len(sends), float(contacts)))
            best[contacts] = t.expected_reward(probs, contacts).max() - t.default
        if spec.name == "fans":
            assert best[1] > 0.2 and spec.share <= 0.3
        else:
            assert best[1] < 0 and best[0] < 0.01, spec.name
    # no segment label: the policy declares none, and every segment shares the same regions
    tenure = worlds["tenure-driven"]
    assert "segment" not in tenure.policy.spec.features
    regions = {tuple(sorted((r.country, r.share) for r in s.regions)) for s in tenure.scenario.spec.segments}
    assert len(regions) == 1


def test_the_section_replaces_its_own_and_keeps_the_rest():
    lc = _script()
    page = "# Q\n\n## A\n\na\n\n" + lc.HEADING + "\n\nold\n\n## B\n\nb\n"
    new = lc.replace_section(page, lc.HEADING + "\n\nnew\n\n")
    assert "old" not in new and "new" in new and "## A\n\na" in new and new.endswith("## B\n\nb\n")
    assert lc.replace_section("# Q\n", lc.HEADING + "\n\nx\n").endswith(lc.HEADING + "\n\nx\n")


@pytest.mark.slow
def test_learning_curve_small_end_to_end(tmp_path):
    lc = _script()
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "learning_curve.py"), "--small", "--quiet", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    small = lc.SMALL
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert len(runs) == len(small["scenarios"]) * len(small["seeds"]) * len(small["points"]) * len(lc.MAKERS)
    for r in runs.values():
        assert r["totals"]["decisions"] == r["n"] and r["violations"] == 0
    rows = json.loads((tmp_path / "points.json").read_text())
    assert {(r["scenario"], r["n"], r["maker"]) for r in rows} == \
           {(s, n, m) for s in small["scenarios"] for n in small["points"] for m in lc.MAKERS}
    for r in rows:
        for what in ("share", "gap", "unsubscribes", "clicks", "holds"):
            mean, lo, hi = r[what]
            assert lo <= mean <= hi, (r, what)
        if r["maker"] == "oracle":
            assert r["share"] == [1.0, 1.0, 1.0]
        assert ("minus_thompson" in r) == (r["maker"] == "tactful")
    tactful = [r for r in rows if r["maker"] == "tactful"]
    assert any(r["share"][0] != 0 for r in tactful)

    # two processes make the same runs: each builds its own world, the same one the makers of a
    # world share in one process
    two = subprocess.run(cmd[:-1] + [str(tmp_path / "two"), "--jobs", "2"], capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    parallel = json.loads((tmp_path / "two" / "results.json").read_text())
    assert {k: (r["fingerprint"], r["totals"]) for k, r in parallel["runs"].items()} == \
           {k: (r["fingerprint"], r["totals"]) for k, r in runs.items()}
    assert parallel["machine"].endswith("2 processes")

    # resumable: nothing is run again; a run whose settings changed is
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "\n0 runs made" in again.stdout, again.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    stale = next(iter(data["runs"]))
    data["runs"][stale]["fingerprint"] = "changed"
    (tmp_path / "results.json").write_text(json.dumps(data))
    (tmp_path / "results.lock").write_text("12345")  # another process keeps its results there
    locked = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert locked.returncode != 0 and "results.lock exists" in locked.stderr
    assert json.loads((tmp_path / "results.json").read_text())["runs"][stale]["fingerprint"] == "changed"
    (tmp_path / "results.lock").unlink()
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "\n1 runs made" in third.stdout and not (tmp_path / "results.lock").exists(), third.stdout
    rendered = subprocess.run(cmd + ["--no-run"], capture_output=True, text=True, timeout=300)
    assert "\n0 runs made" in rendered.stdout and "| tenure-driven | 400 | oracle | 100.0%" in rendered.stdout

    # the document's section renders from these results, with a plot per scenario
    results = lc.load_results(tmp_path / "results.json")
    text = "\n".join(lc.section(results, rows, small["scenarios"], small["seeds"], small["points"], "cmd"))
    assert text.startswith(lc.HEADING) and "Still to run: 2,000, 5,000, 20,000, 50,000, 200,000" in text
    for s in small["scenarios"]:
        assert f"### `{s}`" in text
        lc.plot(rows, s, tmp_path / f"curve-{s}.png")
        assert (tmp_path / f"curve-{s}.png").stat().st_size > 10_000


def test_a_no_run_query_leaves_the_kept_points_table_as_it_is(tmp_path):
    """`--no-run` with a few points prints them; the points.json kept beside the repository's
    results.json (the table docs/quality.md is made from) is rewritten only with --docs."""
    lc = _script()
    lc.KEPT = tmp_path  # the kept study's place, for this test
    kept = tmp_path / "points.json"
    kept.write_text('[{"kept": true}]')
    assert lc.main(["--no-run", "--out", str(tmp_path), "--scenarios", "standard", "--seeds", "1",
                    "--points", "2000"]) == 0
    assert kept.read_text() == '[{"kept": true}]'
