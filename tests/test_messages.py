"""Every message says what is wrong and what to do, in the user's terms: the cases a newcomer met
(issue 18) -- a store with no final decision yet, a shadow set that has not scored, `models
activate` without a reason, the parquet install hint, the Open Bandit import's next step."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.cli.offline import obd_next_step
from service.clock import ManualClock
from service.decision.engine import DecideInput
from service.offline.export import PARQUET_INSTALL
from service.policy import load_policies
from service.runtime import build_engine
from service.store import open_store

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "examples" / "policies"


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def served(tmp_path) -> Path:
    """A store as `tactful serve` leaves it an hour after it started: 5 decisions, none final
    (the example policy's reward window is two days)."""
    db = tmp_path / "tactful.db"
    store = open_store(str(db))
    engine = build_engine(store, load_policies(POLICIES), ManualClock(time.time() - 3600), refresh_seconds=0)
    engine.ensure_models()
    for i in range(5):
        engine.people.set_consent(f"u{i}", {"email": True}, "test", None)
        engine.decide("lifecycle", DecideInput(f"u{i}", {"segment": "loyal"}))
    store.close()
    return db


def _common(db):
    return ["--db", db, "--policies", POLICIES, "--policy", "lifecycle"]


def test_evaluate_without_final_decisions_says_the_data_is_missing_and_when_it_will_not_be(served):
    r = cli("evaluate", *_common(served), "--candidate", "1")
    assert r.exit_code == 1
    assert "Invalid value" not in r.output and "--candidate" not in r.output
    assert "policy 'lifecycle' has no final decisions in" in r.output
    assert "reward window (2d)" in r.output and "5 are logged, 5 still inside their window" in r.output
    assert "the next becomes final at" in r.output and "--now" in r.output and "See it learn" in r.output


def test_evaluate_on_a_store_that_never_decided_says_so(tmp_path):
    db = tmp_path / "empty.db"
    open_store(str(db)).close()
    r = cli("evaluate", *_common(db), "--candidate", "active")
    assert r.exit_code == 1 and "has no decisions in" in r.output and "nothing was decided with it" in r.output


def test_a_wrong_candidate_still_names_the_option(served):
    r = cli("evaluate", *_common(served), "--candidate", "nope", "--now", "2100-01-01")
    assert r.exit_code == 2 and "--candidate/--baseline" in r.output and "neither a model version" in r.output


def test_retrain_with_too_few_final_decisions_says_how_many_and_why(served):
    r = cli("retrain", *_common(served))
    assert r.exit_code == 1
    assert "has 0 final decisions in" in r.output and "retraining needs at least 50" in r.output
    assert "reward window (2d)" in r.output and "--now" in r.output


def test_an_empty_export_says_why(served, tmp_path):
    r = CliRunner().invoke(main, ["export", *map(str, _common(served)), "--format", "csv",
                                                  "--out", str(tmp_path / "log.csv")])
    assert r.exit_code == 0 and "exported 0 final decisions" in r.stdout
    assert "note: policy 'lifecycle' has no final decisions" in r.stderr and "reward window (2d)" in r.stderr


def test_evaluate_shadow_right_after_setting_one_says_it_is_set_but_has_not_scored(served):
    r = cli("evaluate", *_common(served), "--shadow")
    assert r.exit_code == 1 and "has no shadow candidate: set one with `tactful models shadow" in r.output
    assert cli("models", "shadow", *_common(served), "1").exit_code == 0
    r = cli("evaluate", *_common(served), "--shadow")
    assert r.exit_code == 1 and "no shadow" not in r.output
    assert "version 1 shadows policy 'lifecycle' but has scored no decision yet" in r.output


def test_models_activate_needs_no_reason_on_the_command_line_as_over_http(served):
    store = open_store(str(served))
    version = store.add_version("lifecycle", store.model("lifecycle", 1)["model"], "", "import", time.time(), {})
    store.close()
    r = cli("models", "activate", *_common(served), str(version))
    assert r.exit_code == 0, r.output
    assert f"version {version} active (was 1): activated from the command line" in r.output
    r = cli("models", "activate", *_common(served), "1", "--reason", "back to the first")
    assert r.exit_code == 0 and "back to the first" in r.output


def test_the_parquet_hint_is_the_readmes(served, tmp_path):
    assert f"`{PARQUET_INSTALL}`" in (ROOT / "README.md").read_text()
    assert f"`{PARQUET_INSTALL}`" in (ROOT / "docs" / "ope.md").read_text()
    # without pyarrow (made unimportable for this process): the export says what to install
    code = ("import sys; sys.modules['pyarrow'] = None; from service.cli import main; "
            "sys.argv = ['tactful'] + sys.argv[1:]; main()")
    r = subprocess.run([sys.executable, "-c", code, "export", *map(str, _common(served)), "--format", "parquet",
                        "--out", str(tmp_path / "log.parquet"), "--now", "2100-01-01"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"parquet export needs pyarrow, an optional extra: {PARQUET_INSTALL}" in r.stderr


def test_the_obd_import_suggests_the_protocols_command():
    both = [{"policy": "obd-men-bts", "logger": "bts"}, {"policy": "obd-men-random", "logger": "random"},
            {"policy": "obd-women-random", "campaign": "women", "logger": "random"}]
    hint = obd_next_step(both, "obd.db", "out/obd-policies")
    assert ("tactful evaluate --db obd.db --policies out/obd-policies --policy obd-men-random "
            "--candidate bts-zozotown --baseline uniform") in hint
    assert ("tactful evaluate --db obd.db --policies out/obd-policies --policy obd-women-random "
            "--candidate bts-zozotown --baseline uniform") in hint
    assert "none were imported" in obd_next_step(both[:1], "obd.db", "out/obd-policies")


def test_a_missing_store_says_what_to_name(tmp_path):
    r = cli("export", *_common(tmp_path / "missing.db"), "--format", "csv", "--out", tmp_path / "x.csv")
    assert r.exit_code == 2 and "does not exist: name the store `tactful serve` wrote" in r.output
