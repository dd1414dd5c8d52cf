"""scripts/drift_study.py (docs/quality.md, "Drift recovery (issue 15)") and the sections of
docs/quality.md that scripts/quality.py --docs keeps when it rewrites the page."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_setting_replaces_the_policys_own_option():
    # VW keeps the first of two `-l`: a candidate's must replace the policy's, not follow it
    ds = _script("drift_study")
    base = "--squarecb --gamma_scale 3000 --epsilon 0.05 -q UA -q UI --clip_p 0.5 -l 0.05 -b 22"
    merged = ds.merge_args(base, "--power_t 0 -l 0.005")
    assert merged.split().count("-l") == 1 and merged.endswith("--power_t 0 -l 0.005")
    assert "-q UA -q UI" in merged and "--epsilon 0.05" in merged
    assert ds.merge_args(base, "") == base
    assert ds.merge_args("--epsilon 0.05 --power_t", "--power_t 0.25") == "--epsilon 0.05 --power_t 0.25"


def test_days_count_the_change_day_as_the_first():
    ds = _script("drift_study")
    shares = [0.9, 0.9, -0.3, 0.5, 0.85, 0.7, 0.9, None, 0.95]
    assert ds.days_stays_above(shares, 2, 0.8) == 5   # from index 6 on
    assert ds.days_stays_above([0.9, 0.9, 0.5], 0, 0.8) is None


def test_the_reset_keeps_the_weights_and_restarts_the_step_sizes():
    # what the oracle-timed reset does to a model: the same predictions, then a new model's steps
    import vowpalwabbit as vw

    from models.vw_policy import _load, _save
    ds = _script("drift_study")
    trained = vw.Workspace("--quiet")
    for _ in range(2000):  # the adaptive sums grow: each step gets smaller
        trained.learn("1 |x a b")
    saved = _save(trained)
    kept, reset = _load(saved), _load(ds.weights_only(saved))
    assert kept.predict("|x a b") == pytest.approx(reset.predict("|x a b")) == pytest.approx(1.0, abs=0.05)
    for ws in (kept, reset):  # the truth changes: 0 from now on
        ws.learn("0 |x a b")
    moved_kept, moved_reset = 1.0 - kept.predict("|x a b"), 1.0 - reset.predict("|x a b")
    assert moved_reset > 1.2 * moved_kept > 0, (moved_reset, moved_kept)  # 0.58 against 0.44
    for ws in (trained, kept, reset):
        ws.finish()


def test_bad_setting_is_refused():
    ds = _script("drift_study")
    with pytest.raises(Exception, match="NAME=EXTRA_VW_ARGS"):
        ds.parse_setting("--power_t 0.25")


def test_quality_docs_keep_the_sections_other_scripts_write():
    q = _script("quality")
    page = REPO_ROOT.joinpath("docs", "quality.md").read_text()
    for heading in q.KEPT:
        section = q.kept_section(page, heading)
        assert section.startswith(heading + "\n"), heading
        assert "\n## " not in section.rstrip("\n")[1:]


@pytest.mark.slow
def test_drift_study_small_end_to_end(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "drift_study.py"), "--drift-decisions", "1500",
                           "--standard-decisions", "1500", "--seeds", "1", "--setting", "current=",
                           "--setting", "pt=--power_t 0.25", "--standard-settings", "pt", "--json", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["scenario"], r["setting"]) for r in rows] == [("drift", "current"), ("drift", "pt"), ("standard", "pt")]
    drift = rows[0]
    assert len(drift["daily"]) >= 14 and drift["violations"] == 0
    assert drift["best_case_days"] is None or drift["best_case_days"] >= 1
    assert "| pt | `--power_t 0.25` |" in proc.stdout
