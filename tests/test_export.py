"""Export: every final decision with its features, allowed arms, logged probabilities, chosen arm,
outcomes and shaped reward; the vw file trains with VW's own file parser, and the trained model
evaluates with `tactful evaluate`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import vowpalwabbit as vw
from click.testing import CliRunner

from service.cli import main
from service.decision.engine import DeliveryInput
from service.offline.export import final_decisions
from service.simulation.known_truth import default_world, generate_log, world_policy


@pytest.fixture
def logged(tmp_path):
    """A known-truth log of 400 decisions (uniform logging, some unsubscribes), its policy file."""
    policy = world_policy(logging="uniform")
    world = default_world(policy, unsub=0.05)
    db = tmp_path / "log.db"
    run = generate_log(world, policy, db, 400, seed=3)
    pdir = tmp_path / "policies"
    pdir.mkdir()
    write_world_policy(pdir / "truth.toml", logging="uniform")
    now = str(run.clock.now() + 1)
    yield db, pdir, now, run
    run.engine.store.close()


def write_world_policy(path: Path, logging: str = "uniform", extra: str = "") -> None:
    """The world policy as a TOML file (the CLI loads policies from a directory)."""
    p = world_policy(logging=logging).spec
    contents = "\n".join(f'[[content]]\nid = "{c.id}"\ntopic = "{c.topic}"\nfeatures = {{ discount = {c.features["discount"]} }}\n'
                         for c in p.content)
    path.write_text(f'''name = "truth"
channels = ["email", "push"]
{contents}
[[timing]]
name = "now"
delay_minutes = 0
[[timing]]
name = "evening"
delay_minutes = 30
[features]
segment = {{ type = "string", required = true }}
[guardrails.consent]
email = "opt_out"
push = "opt_out"
[reward]
window = "1h"
weights = {{ click = 1.0, unsubscribe = -5.0, complaint = -10.0 }}
min = -5.0
max = 1.0
[learner]
vw_args = "{p.learner.vw_args}"
holdout_share = {p.learner.holdout_share}
{extra}''')


def run_cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_csv_export_has_every_final_decision_with_probabilities_outcomes_and_reward(logged, tmp_path):
    db, pdir, now, run = logged
    out = tmp_path / "log.csv"
    r = run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "csv",
                "--out", str(out), "--now", now)
    assert r.exit_code == 0, r.output
    assert "exported 400 final decisions" in r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 400
    stored = {e: run.engine.event(e) for e in run.event_ids}
    unsubscribed = 0
    for row in rows:
        e = stored[row["event_id"]]
        allowed, probs = json.loads(row["allowed"]), json.loads(row["probabilities"])
        assert allowed == [a["arm"] for a in e["allowed"]]
        assert sum(probs) == pytest.approx(1.0)
        assert allowed[int(row["chosen_index"])] == row["arm"] == e["action"]["arm"]
        assert float(row["probability"]) == pytest.approx(probs[int(row["chosen_index"])])
        assert float(row["reward"]) == pytest.approx(e["reward"])
        assert json.loads(row["context"]) == {"segment": run.segments[row["event_id"]]}
        types = {o["type"] for o in json.loads(row["outcomes"])}
        assert types == {o["type"] for o in e["outcomes"]}
        unsubscribed += "unsubscribe" in types
    assert unsubscribed > 0


def test_export_time_range_and_pending_decisions(logged, tmp_path):
    db, pdir, now, run = logged
    first = run.engine.event(run.event_ids[0])["explanation"]["decided_at"]
    mid = run.engine.event(run.event_ids[200])["explanation"]["decided_at"]
    out = tmp_path / "part.csv"
    r = run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "csv",
                "--out", str(out), "--now", now, "--since", first, "--until", mid)
    assert "exported 200 final decisions" in r.output, r.output
    # decisions still inside their reward window are not final: not exported
    r = run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "csv",
                "--out", str(out), "--now", mid)
    assert r.exit_code == 0
    n = int(r.output.split()[1])
    assert 0 < n < 200


def test_vw_export_trains_with_vw_file_parser_and_evaluates(logged, tmp_path):
    db, pdir, now, run = logged
    out = tmp_path / "log.vw"
    r = run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "vw",
                "--out", str(out), "--now", now)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    examples = [e for e in text.split("\n\n") if e.strip()]
    assert len(examples) == 400
    first = examples[0].splitlines()
    assert first[0].startswith("shared |User segment=")
    assert sum(1 for line in first if line.startswith("0:")) == 1  # exactly the chosen arm is labelled
    model = tmp_path / "offline.model"
    ws = vw.Workspace(f"--cb_explore_adf --epsilon 0.1 -q UA -d {out} -f {model} --quiet")
    assert ws.get_weighted_examples() == 400  # VW's own parser read every example
    ws.finish()
    assert model.stat().st_size > 0
    report = tmp_path / "report"
    r = run_cli("evaluate", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--candidate",
                str(model), "--baseline", "uniform", "--baseline", "logged", "--now", now, "--out", str(report),
                "--bootstrap", "200")
    assert r.exit_code == 0, r.output
    assert "offline.model" in r.output and "DR" in r.output
    assert (report / "report.md").read_text().count("| offline.model |") == 5
    assert (report / "estimates.png").stat().st_size > 1000


def test_parquet_export(logged, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    db, pdir, now, run = logged
    out = tmp_path / "log.parquet"
    r = run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "parquet",
                "--out", str(out), "--now", now)
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    assert table.num_rows == 400
    row = table.slice(0, 1).to_pylist()[0]
    assert abs(sum(row["probabilities"]) - 1) < 1e-9 and row["arm"] in row["allowed"]


def test_export_bad_input_is_a_clear_error(logged, tmp_path):
    db, pdir, now, run = logged
    r = CliRunner().invoke(main, ["export", "--db", str(db), "--policies", str(pdir), "--policy", "nope",
                                  "--format", "csv", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "no policy named 'nope'" in r.output and r.exception is None or \
        isinstance(r.exception, SystemExit)
    r = CliRunner().invoke(main, ["export", "--db", str(db), "--policies", str(pdir), "--policy", "truth",
                                  "--format", "csv", "--out", str(tmp_path / "x.csv"), "--since", "yesterday"])
    assert r.exit_code == 2 and "--since" in r.output and "not a time" in r.output
    r = CliRunner().invoke(main, ["export", "--db", str(tmp_path / "missing.db"), "--policies", str(pdir),
                                  "--policy", "truth", "--format", "csv", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_undelivered_sends_are_kept_for_evaluation_and_left_out_of_training(logged, tmp_path):
    """A send reported not_sent stays in the csv (with its delivery status) and in evaluation, with
    its logged arm and probability; the vw training file leaves it out, as the learner does."""
    db, pdir, now, run = logged
    sends = [e for e in run.event_ids if not run.engine.event(e)["action"]["hold"]][:25]
    for e in sends:
        run.engine.record_delivery(e, DeliveryInput("not_sent", "tool suppression"))
    out = tmp_path / "log.csv"
    assert run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "csv",
                   "--out", str(out), "--now", now).exit_code == 0
    rows = {r["event_id"]: r for r in csv.DictReader(out.open())}
    assert len(rows) == 400 and all(rows[e]["delivery"] == "not_sent" for e in sends)
    assert sum(1 for r in rows.values() if r["delivery"]) == 25
    r = run_cli("export", "--db", str(db), "--policies", str(pdir), "--policy", "truth", "--format", "vw",
                "--out", str(tmp_path / "log.vw"), "--now", now)
    assert "exported 375 final decisions" in r.output, r.output
    kept = [row for row in final_decisions(run.engine.store, run.engine.policies["truth"], float(now))]
    assert len(kept) == 400 and {row.decision.event_id for row in kept if not row.decision.delivered} >= set(sends)
