"""Commands that take --db and --policies notice when the policy is not the one the store was
written with (its name, fingerprint, spec and file are recorded when the service starts), and
refuse with what differs and what to do, or go on when told to."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.api.app import create_app
from service.cli import main
from service.policy import load_policies
from service.policy.stored import fingerprint, mismatch, remember
from service.store import open_store
from service.store.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "policies"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def served_with_own_policies(tmp_path) -> tuple[Path, Path]:
    """A store an app wrote with its own policy directory: lifecycle with a 3-day window."""
    mine = tmp_path / "my-policies"
    mine.mkdir()
    text = (EXAMPLE / "lifecycle.toml").read_text()
    assert text.count('window = "2d"                  # longer than the latest send') == 1
    text = text.replace('window = "2d"                  # longer', 'window = "3d"  # longer')
    (mine / "lifecycle.toml").write_text(text)
    db = tmp_path / "tactful.db"
    app = create_app({"DB": str(db), "POLICIES": str(mine), "CLOCK": "system", "ACCESS_LOG": False})
    app.extensions["tactful"].store.close()
    return db, mine


@pytest.mark.parametrize("command", [
    ["export", "--format", "csv", "--out", "OUT"], ["evaluate", "--candidate", "1"], ["retrain"],
    ["models", "list"], ["models", "activate", "1"], ["models", "shadow", "--off"]])
def test_the_example_policy_on_a_store_written_with_another_is_refused(served_with_own_policies, tmp_path, command):
    db, mine = served_with_own_policies
    command = [str(tmp_path / "out.csv") if a == "OUT" else a for a in command]
    r = cli(*command, "--db", db, "--policy", "lifecycle")  # --policies left at its default, the example's
    assert r.exit_code == 1, r.output
    assert "policy 'lifecycle' of examples/policies/lifecycle.toml is not the one" in r.output
    assert f"from {mine / 'lifecycle.toml'}" in r.output
    assert "It differs in: reward.window: 259200.0 in the store, 172800.0 here. Pass" in r.output
    assert f"--policies {mine}" in r.output and "--ignore-policy-mismatch" in r.output


def test_the_policies_the_service_used_pass_and_an_override_goes_on(served_with_own_policies):
    db, mine = served_with_own_policies
    assert cli("models", "list", "--db", db, "--policies", mine, "--policy", "lifecycle").exit_code == 0
    r = CliRunner().invoke(main, ["models", "list", "--db", str(db), "--policy", "lifecycle",
                                  "--ignore-policy-mismatch"])
    assert r.exit_code == 0 and "warning (--ignore-policy-mismatch): reward.window" in r.output


def test_a_policy_file_can_be_named_alone(served_with_own_policies):
    db, mine = served_with_own_policies
    r = cli("models", "list", "--db", db, "--policies", mine / "lifecycle.toml", "--policy", "lifecycle")
    assert r.exit_code == 0, r.output


def test_a_policy_the_directory_lacks_names_where_the_store_got_it(tmp_path):
    mine = tmp_path / "promo-policies"
    mine.mkdir()
    text = (EXAMPLE / "lifecycle.toml").read_text().replace('name = "lifecycle"', 'name = "promo"')
    (mine / "promo.toml").write_text(text)
    db = tmp_path / "promo.db"
    create_app({"DB": str(db), "POLICIES": str(mine), "ACCESS_LOG": False}).extensions["tactful"].store.close()
    r = cli("export", "--db", db, "--policy", "promo", "--format", "csv", "--out", tmp_path / "x.csv")
    assert r.exit_code == 2 and "no policy named 'promo' in examples/policies" in r.output
    assert f"was written with it from {mine / 'promo.toml'}: pass --policies {mine}" in r.output


def test_comments_and_layout_do_not_change_the_fingerprint(tmp_path):
    shutil.copy(EXAMPLE / "lifecycle.toml", tmp_path / "lifecycle.toml")
    with (tmp_path / "lifecycle.toml").open("a") as fh:
        fh.write("\n# a comment added later\n")
    ours, theirs = load_policies(EXAMPLE)["lifecycle"], load_policies(tmp_path)["lifecycle"]
    assert fingerprint(ours) == fingerprint(theirs)


def test_the_record_on_both_backends(store_url):
    store = open_store(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    example = load_policies(EXAMPLE)["lifecycle"]
    assert mismatch(store, example) is None  # nothing recorded: nothing to compare with
    remember(store, [example], 1.0e9)
    remember(store, [example], 2.0e9)  # the same again: not appended
    assert store.recorded_policy("lifecycle")["recorded_at"] == 1.0e9 and mismatch(store, example) is None
    text = (EXAMPLE / "lifecycle.toml").read_text().replace("holdout_share = 0.05", "holdout_share = 0.1")
    other = tmp_policy(text)
    found = mismatch(store, other)
    assert found is not None and found.differences == [
        "learner.holdout_share: 0.05 in the store, 0.1 here"]
    remember(store, [other], 3.0e9)  # the service restarted with the new file: it is the one now
    assert mismatch(store, other) is None and mismatch(store, example) is not None
    assert store.recorded_policies() == ["lifecycle"]
    store.close()


def tmp_policy(text: str):
    from service.policy import parse_policy
    import tomllib
    return parse_policy(tomllib.loads(text), "<memory>")
