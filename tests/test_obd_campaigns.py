"""The data scientist on imported logs: the Open Bandit Dataset's three campaigns (men, women,
all) import with their own Bernoulli TS priors, the import's closing hint prints a command that
works for that campaign (run here), and `tactful retrain` trains a first version for a policy
that has logs and no active version -- on the real OBD sample, with real VW."""
from __future__ import annotations

import csv
import json
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from service.cli import main
from service.learning.registry import VersionRegistry
from service.offline.obd import bts_action_dist, policy_toml
from service.offline.obd_priors import ZOZOTOWN_PRIOR
from service.store import open_store

REPO = Path(__file__).resolve().parents[1]
OBD = REPO.parent / "shared" / "data" / "obd-men"  # ../shared/data beside the repository
ITEMS = {"men": 34, "women": 46, "all": 80}  # the dataset's item counts per campaign


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_logger(directory: Path, campaign: str, logger: str, n_items: int, n: int, seed: int) -> None:
    """`n` impressions in OBD's CSV layout: `directory`/<campaign>.csv and item_context.csv. The
    `bts` logger's propensities are those of Bernoulli TS with the campaign's prior."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with (directory / "item_context.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "item_id", "item_feature_0", "item_feature_1", "item_feature_2", "item_feature_3"])
        for i in range(n_items):
            w.writerow([i, i, f"{rng.normal():.4f}", f"a{i % 3}", f"b{i % 5}", "c0"])
    dist = bts_action_dist(campaign, n_sim=20_000) if logger == "bts" else None
    with (directory / f"{campaign}.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "timestamp", "item_id", "position", "click", "propensity_score"]
                   + [f"user_feature_{k}" for k in range(4)] + [f"user-item_affinity_{k}" for k in range(n_items)])
        for t in range(n):
            pos = int(rng.integers(1, 4))
            if dist is None:
                item, p = int(rng.integers(n_items)), 1.0 / n_items
            else:
                col = dist[:, pos - 1]
                item = int(rng.choice(n_items, p=col / col.sum()))
                p = float(col[item])
            aff = ["0.0"] * n_items
            aff[int(rng.integers(n_items))] = "1.0"
            w.writerow([t, f"2019-11-24 00:{t // 60 % 60:02d}:{t % 60:02d}.000000+00:00", item, pos,
                        int(rng.random() < 0.05), p] + [f"u{k}{int(rng.integers(3))}" for k in range(4)] + aff)


def hinted_command(output: str, campaign: str) -> list[str]:
    """The command the import's closing hint prints for `campaign`, as arguments for `main`."""
    line = next(ln for ln in output.splitlines() if ln.startswith(f"campaign {campaign!r}"))
    command = shlex.split(line.split("with: ")[1])
    assert command[0] == "tactful"
    return command[1:]


def test_every_campaign_has_its_published_prior_one_entry_per_item():
    assert {c: len(p["alpha"]) for c, p in ZOZOTOWN_PRIOR.items()} == ITEMS
    assert all(len(p["beta"]) == len(p["alpha"]) for p in ZOZOTOWN_PRIOR.values())
    # the published numbers, as obp ships them: the first items of `all` and `men` share their priors
    assert ZOZOTOWN_PRIOR["all"]["alpha"][:5] == ZOZOTOWN_PRIOR["men"]["alpha"][:5] == [47, 8, 62, 142, 3]
    for campaign, n_items in ITEMS.items():
        dist = bts_action_dist(campaign, n_sim=20_000)
        assert dist.shape == (n_items, 3)
        np.testing.assert_allclose(dist.sum(axis=0), 1.0)
        prior = ZOZOTOWN_PRIOR[campaign]
        mean = np.array(prior["alpha"]) / (np.array(prior["alpha"]) + np.array(prior["beta"]))
        assert int(np.argmax(dist[:, 0])) == int(np.argmax(mean))  # the best prior mean tops the list most


@pytest.mark.slow
@pytest.mark.parametrize("campaign,layout", [("women", "campaign"), ("all", "obp")])
def test_each_campaign_imports_and_its_hint_runs(tmp_path, campaign, layout):
    """The women campaign as a campaign directory (<logger>/women.csv), `all` as obp lays out the
    whole dataset (<logger>/all/all.csv); the hint's evaluate command then really runs."""
    root = tmp_path / "obd"
    for seed, logger in enumerate(("random", "bts")):
        where = root / logger if layout == "campaign" else root / logger / campaign
        write_logger(where, campaign, logger, ITEMS[campaign], 300, seed)
    db, pol = tmp_path / "obd.db", tmp_path / "pol"
    r = cli("import-obd", root, "--db", db, "--policies", pol)
    assert r.exit_code == 0, r.output
    assert f"obd-{campaign}-random: 300 impressions" in r.output and f"obd-{campaign}-bts: 300 impressions" in r.output
    command = hinted_command(r.output, campaign)
    assert "--candidate" in command and "bts-zozotown" in command and f"obd-{campaign}-random" in command
    r = cli(*command, "--bootstrap", "50", "--out", tmp_path / "report")
    assert r.exit_code == 0, r.output
    assert "bts-zozotown" in r.output and "uniform" in r.output
    # the bts logs' other items carry Bernoulli TS's probabilities for that position, from this campaign's prior
    store = open_store(str(db))
    probs = store.query("SELECT probabilities FROM decisions WHERE policy = ? LIMIT 1", [f"obd-{campaign}-bts"])[0][0]
    assert len(json.loads(probs)) == ITEMS[campaign]


def test_a_campaign_without_a_published_prior_is_refused_clearly_and_its_hint_works(tmp_path):
    root = tmp_path / "kids"
    write_logger(root / "random", "kids", "random", 5, 120, 0)
    db, pol = tmp_path / "obd.db", tmp_path / "pol"
    r = cli("import-obd", root, "--db", db, "--policies", pol)
    assert r.exit_code == 0, r.output
    assert "no Bernoulli TS prior is published for it" in r.output
    r_eval = cli("evaluate", "--db", db, "--policies", pol, "--policy", "obd-kids-random", "--candidate",
                 "bts-zozotown", "--baseline", "uniform")
    assert r_eval.exit_code != 0 and "no Bernoulli TS prior is published for campaign 'kids'" in r_eval.output
    command = hinted_command(r.output, "kids")
    assert command[0] == "retrain"
    r = cli(*command, "--bootstrap", "50")
    assert r.exit_code == 0, r.output
    assert "candidate version 1 of obd-kids-random written" in r.output
    # bts logs of such a campaign: the other items' probabilities are unknown, so they are not imported
    write_logger(tmp_path / "kids2" / "bts", "kids", "random", 5, 60, 1)
    r = cli("import-obd", tmp_path / "kids2", "--db", tmp_path / "k2.db", "--policies", pol)
    assert r.exit_code == 1 and "logged by Bernoulli TS" in r.output and "no Bernoulli TS prior" in r.output


@pytest.mark.slow
@pytest.mark.skipif(not OBD.is_dir(), reason="the OBD sample is not in ../shared/data/obd-men")
def test_retrain_trains_a_first_version_on_imported_obd_logs(tmp_path):
    """The OBD men sample has logs and no model version: retrain writes version 1, evaluated on the
    held-out slice against the policy that logged the decisions (uniform random) and uniform."""
    db, pol = tmp_path / "obd.db", tmp_path / "pol"
    r = cli("import-obd", OBD / "random", "--db", db, "--policies", pol)
    assert r.exit_code == 0, r.output
    r = cli("retrain", "--db", db, "--policies", pol, "--policy", "obd-men-random", "--bootstrap", "50")
    assert r.exit_code == 0, r.output
    assert "trained on 6000 decisions, chose on the next 2000" in r.output
    assert "evaluated on the 2000 latest (held out)" in r.output
    assert "candidate version 1 of obd-men-random written (not active)" in r.output
    store = open_store(str(db))
    assert store.active_version("obd-men-random") is None  # a candidate, not active
    v = VersionRegistry(store).version("obd-men-random", 1)
    assert v["source"] == "retrain" and v["parent"] is None
    ev = v["evaluation"]
    assert ev["n"] == 2000 and ev["held_out"] and ev["reference"] == "logged"
    assert ev["lift"]["lo"] <= ev["lift"]["value"] <= ev["lift"]["hi"]
    logged = {r["estimator"]: r for r in ev["rows"] if r["target"] == "logged"}
    # the reference's IPS value on the held-out slice is that slice's observed click rate, exactly
    assert logged["IPS"]["value"] == pytest.approx(ev["logged_mean_reward"])
    assert v["note"]["held_out"]["decisions"] == 2000 and v["note"]["selected_on"]["decisions"] == 2000
    # evaluating the candidate on all the logs (its own training decisions included) is shown but not
    # stored: it would overstate it and replace the held-out evaluation that promote reads; with no
    # active version, the default reference is the logging policy
    r = cli("evaluate", "--db", db, "--policies", pol, "--policy", "obd-men-random", "--candidate", "1",
            "--bootstrap", "50", "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    assert "lift of v1 over logged" in r.output and "not stored beside obd-men-random version 1" in r.output
    assert VersionRegistry(store).latest_evaluation("obd-men-random", 1)["held_out"]
    since = v["note"]["held_out"]["from"]
    r = cli("evaluate", "--db", db, "--policies", pol, "--policy", "obd-men-random", "--candidate", "1",
            "--since", since, "--bootstrap", "50", "--out", tmp_path / "ev")
    assert r.exit_code == 0 and "stored beside obd-men-random version 1" in r.output, r.output


def test_imported_policies_learn_with_the_example_policys_settings():
    """The settings docs/policies.md found reliable (`--clip_p 0.5 -l 0.1`, the 0.01 floor), as the
    example policy has them, less what only its hold arm needs: these pages show an item every time."""
    example = tomllib.loads((REPO / "examples" / "policies" / "lifecycle.toml").read_text())["learner"]["vw_args"]
    items = [{"item_id": "0", "item_feature_0": "0.5"}, {"item_id": "1", "item_feature_0": "-0.5"}]
    imported = tomllib.loads(policy_toml("obd-men-random", "men", "random", items, 2))["learner"]["vw_args"]
    assert imported == example.replace(" -q HR --ignore_linear R", "")
    assert "--clip_p 0.5" in imported and "-l 0.1" in imported and "--epsilon 0.01" in imported
