"""The README's examples are real: its sample answers keep the explanation's rule, its curl
commands against a live `tactful serve` answer with the same shape (the error and the outcome
with the same text), and its "See it learn" commands, run as written, show a learned favourite
per segment."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from serving import free_port, serve  # noqa: F401  (fixture)
from service.cli import main
from service.decision.explain import SUMMARY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# keys an answer has only in some cases: a send moved out of quiet hours, features dropped
OPTIONAL = {"moved_out_of_quiet_hours", "dropped_features"}
# what each segment of examples/scenarios/see-it-learn.toml prefers most (its `topics`)
PREFERRED = {"new_users": {"product", "onboarding"}, "bargain_hunters": {"promotion"}, "loyal": {"loyalty"}}


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    return README[start:README.index("\n## ", start + 1)]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def decide_answer() -> dict:
    return json.loads(blocks(section("A decision and an outcome"), "json")[0])


def test_the_sample_decision_keeps_the_explanations_rule():
    d = decide_answer()
    expl = d["explanation"]
    fav = expl["model_favourite"]
    if d["mode"] == "explore" and fav is None:
        assert expl["summary"] == SUMMARY["explore_flat"].format(n=expl["allowed_count"])
    elif d["mode"] == "exploit":
        assert fav["arm"] == d["action"]["arm"] and expl["summary"] == SUMMARY["exploit"]
    else:
        assert d["mode"] == "explore" and fav["arm"] != d["action"]["arm"] and expl["summary"] == SUMMARY["explore"]
    assert d["removed"]["count"] == sum(g["arms"] for g in expl["removed"])
    outcome = blocks(section("A decision and an outcome"), "sh")[1]
    assert d["event_id"] in outcome, "the outcome example reports the sample decision's event"


def shape(value):
    """A JSON value's shape: keys (less the optional ones) and the types of what they hold."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in OPTIONAL}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def same_shape(shown, live, where="answer") -> None:
    if isinstance(shown, dict):
        assert isinstance(live, dict) and set(shown) == set(live), (where, set(shown) ^ set(live))
        for k in shown:
            same_shape(shown[k], live[k], f"{where}.{k}")
    elif isinstance(shown, list):
        assert isinstance(live, list), where
        if shown and live:
            same_shape(shown[0], live[0], f"{where}[0]")
    elif "NoneType" not in (shown, live):  # a hold's null content is a send's text
        assert shown == live, (where, shown, live)


def run_curl(command: str, base: str) -> str:
    command = command.replace("localhost:8000", base.removeprefix("http://"))
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def commands(block: str) -> list[str]:
    """The commands of a sh block (continuation lines joined), without the answers shown after them."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in joined.splitlines() if line.startswith("curl ")]


@pytest.mark.e2e
def test_the_readmes_requests_answer_as_shown(serve):
    _, base = serve()
    sh = blocks(section("A decision and an outcome"), "sh")
    consent, decide = commands(sh[0])
    assert json.loads(run_curl(consent, base))["consent"] == {"email": True, "push": True}
    live = json.loads(run_curl(decide, base))
    shown = decide_answer()
    same_shape(shape(shown), shape(live))
    assert live["explanation"]["removed"] == shown["explanation"]["removed"]
    # the outcome and the error: the same answers, word for word (the event id aside)
    for block in sh[1:]:
        (command,) = commands(block)
        expected = block.strip().splitlines()[-1]
        command = command.replace(shown["event_id"], live["event_id"])
        answer = run_curl(command, base).strip()
        assert json.loads(answer) == json.loads(expected.replace(shown["event_id"], live["event_id"]))


@pytest.mark.slow  # the demo's simulation, warm-up week included
def test_simulate_says_what_it_learned(tmp_path):
    r = CliRunner().invoke(main, ["simulate", str(ROOT / "examples/scenarios/see-it-learn.toml"), "--decisions",
                                  "300", "--quiet", "--out", str(tmp_path / "sim")])
    assert r.exit_code == 0, r.output
    assert "what it learned -- each segment's most chosen arm over the last quarter of the run:" in r.output
    for segment in ("new_users", "bargain_hunters", "loyal", "dormant"):
        assert re.search(rf"^  {segment} +\S+:\S+:\S+ +\d+% of its decisions, hold \d+%$", r.output, re.M), r.output
    assert re.search(r"^shaped reward per decision, quarter by quarter: (-?\d\.\d{3}( -> )?){4}$", r.output, re.M)
    assert re.search(r"^model version now served: \d+$", r.output, re.M)


@pytest.mark.e2e
@pytest.mark.slow  # about a minute and a half: the README's run, as written
def test_see_it_learn_as_written_shows_a_learned_favourite_per_segment(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "tactful").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m service.cli "$@"\n')
    (venv / "tactful").chmod(stat.S_IRWXU)
    port = free_port()  # 8000 may be taken on a shared machine: the one change to the commands
    script = blocks(section("See it learn"), "sh")[0]
    assert "--url http://127.0.0.1:8000" in script and "> see-it-learn.log 2>&1 &" in script
    script = (script.replace("--url http://127.0.0.1:8000", f"--url http://127.0.0.1:{port}")
              .replace("> see-it-learn.log", f"--port {port} > see-it-learn.log"))
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr + (tmp_path / "see-it-learn.log").read_text()[-3000:]
    out = done.stdout
    favourites = dict(re.findall(r"^  (\w+) +(\S+:\S+:\S+) +\d+% of its decisions", out, re.M))
    assert set(favourites) == {"new_users", "bargain_hunters", "loyal", "dormant"}, out
    topics = {c["id"]: c["topic"] for c in _contents()}
    learned = [s for s, wanted in PREFERRED.items() if topics[favourites[s].split(":")[0]] in wanted]
    assert len(learned) >= 2, (favourites, out)
    quarters = [float(x) for x in re.search(r"quarter by quarter: (.*)$", out, re.M).group(1).split(" -> ")]
    assert quarters[-1] > quarters[0] + 0.03, out
    assert int(re.search(r"^model version now served: (\d+)$", out, re.M).group(1)) > 5


def _contents() -> list[dict]:
    import tomllib
    return tomllib.loads((ROOT / "examples/scenarios/policies/lifecycle-sim.toml").read_text())["content"]
