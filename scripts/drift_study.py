#!/usr/bin/env python
"""Drift recovery study behind docs/quality.md, "Drift recovery (issue 15)": Tactful's learner
settings against the `drift` scenario's recovery and `standard`'s share of the oracle.

    nice .venv/bin/python scripts/drift_study.py                      # the recorded settings and
                                                                       # seeds (about an hour, 2 cores)
    nice .venv/bin/python scripts/drift_study.py --seeds 3 --no-standard \\
        --setting "pt0.25=--power_t 0.25"                              # one candidate, one seed

    nice .venv/bin/python scripts/drift_study.py --no-standard \\
        --setting "current=" --setting "reset=@reset"                  # the step-size reset (below)

Each setting is a name and extra VW arguments appended to the scenario policy's own `vw_args`
(an option given there, such as `-l`, replaces the policy's own: VW keeps the first of two; the
empty setting is the policy as it is). For every seed the oracle runs once per scenario and every
setting is compared with it: the settings change only Tactful's learner, not the population, the asks or the draws.
`@reset` among a setting's arguments is not a VW option: it resets the learner's step sizes once,
at the first feedback from after the change (`reset_at`), to measure what a change detector could
gain at best.

`drift`: days from the change (day 14) to the end of the day by which the drifted segment's
expected shaped reward over the trailing 3 days is at least 80% of the oracle's and stays so
(service/simulation/metrics.py, drift_recovery; the change day counts as day 1, so "end of day
16" is 3 days), and the first day after which the daily share stays at 80% or more.
`standard`: Tactful's realized shaped reward as a share of the oracle run's.

Prints one JSON line per run and a summary table; --json writes everything to a file. Run it
under `nice`: each run takes minutes, one at a time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from models.vw_policy import VWPolicy, _load, _save  # noqa: E402
from service.learning.learner import OnlineLearner  # noqa: E402
from service.policy.bandit import arm_lines  # noqa: E402
from service.simulation.metrics import DAY, day_index, drift_recovery  # noqa: E402
from service.simulation.run import run_maker  # noqa: E402
from service.simulation.scenario import load_scenario  # noqa: E402
from service.simulation.world import build_world  # noqa: E402

SCENARIOS = ROOT / "examples" / "scenarios"
DEFAULT_SETTINGS = ["current=", "pt0.25=--power_t 0.25", "pt0.25-l0.03=--power_t 0.25 -l 0.03",
                    "pt0.4=--power_t 0.4"]


def parse_setting(text: str) -> tuple[str, str]:
    name, sep, extra = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--setting must be NAME=EXTRA_VW_ARGS, not {text!r}")
    return name.strip(), extra.strip()


def merge_args(base: str, extra: str) -> str:
    """`base` with `extra` appended; an option of `extra` (and its value) leaves `base` first."""
    tokens, given = base.split(), {t for t in extra.split() if t.startswith("-") and not _number(t)}
    kept, i = [], 0
    while i < len(tokens):
        if tokens[i] in given:
            has_value = i + 1 < len(tokens) and (not tokens[i + 1].startswith("-") or _number(tokens[i + 1]))
            i += 2 if has_value else 1
            continue
        kept.append(tokens[i])
        i += 1
    return " ".join(kept + extra.split())


def _number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def policy_text(scenario: str, extra: str) -> str:
    """The scenario policy's text with `extra` merged into its vw_args."""
    text = load_scenario(SCENARIOS / f"{scenario}.toml").policy_path.read_text()
    m = re.search(r'^vw_args = "(.*)"', text, flags=re.M)
    if m is None:
        raise SystemExit(f"{scenario}: no vw_args line in its policy")
    args = merge_args(m.group(1), extra)
    return text[:m.start()] + f'vw_args = "{args}"' + text[m.end():]


def days_stays_above(shares: list, start: int, threshold: float) -> int | None:
    """Days from `start` (counted as 1) to the first day after which every share is >= threshold."""
    for day in range(start, len(shares)):
        if all(s is None or s >= threshold for s in shares[day:]):
            return day - start + 1
    return None


RESET = "@reset"  # in a setting's extra arguments: the oracle-timed reset below, not a VW option


def weights_only(model_bytes: bytes) -> bytes:
    """The model with its weights and without the state VW keeps to go on learning (per-weight
    sums of squared gradients and normalization scales): learning from it starts with a new
    model's step sizes."""
    light = _load(model_bytes, "--predict_only_model")
    try:
        return _save(light)
    finally:
        light.finish()


@contextlib.contextmanager
def reset_at(t: float):
    """An oracle-timed change detector, to measure what one could gain: at the learner's first step
    at or after `t` (the change plus the reward window: the first feedback from after the change),
    the model keeps its weights and loses VW's per-weight adaptive and normalization state (saved
    with --predict_only_model), so its next steps are as large as a new model's. A real detector
    needs evidence and would fire later: this is an upper bound."""
    original, done = OnlineLearner.step, []

    def step(self, policy_name, limit=None):
        if not done and self.clock.now() >= t and policy_name in self._models:
            version, model, args = self._models[policy_name]
            fresh = VWPolicy(arm_lines(self.policies[policy_name].known()), args,
                             model_bytes=weights_only(model.to_bytes()))
            model.close()
            self._models[policy_name] = (version, fresh, args)
            done.append(self.clock.now())
        return original(self, policy_name, limit)

    OnlineLearner.step = step
    try:
        yield done
    finally:
        OnlineLearner.step = original


def one_run(scenario: str, decisions: int, seed: int, extra: str, tmp: Path) -> tuple:
    reset = RESET in extra.split()
    extra = " ".join(a for a in extra.split() if a != RESET)
    policy = tmp / f"{scenario}-{abs(hash(extra))}.toml"
    policy.write_text(policy_text(scenario, extra))
    world = build_world(SCENARIOS / f"{scenario}.toml", policy=policy, decisions=decisions, seed=seed)
    t0 = time.monotonic()
    drift = world.scenario.spec.drift
    when = world.scenario.spec.start.timestamp() + drift[0].at + world.policy.spec.reward.window if drift else 0.0
    with reset_at(when) if reset and drift else contextlib.nullcontext():
        run = run_maker(world, "tactful", monotonic=time.monotonic, progress=False)
    return run, round(time.monotonic() - t0, 1)


def oracle_run(scenario: str, decisions: int, seed: int, tmp: Path):
    policy = tmp / f"{scenario}-oracle.toml"
    policy.write_text(policy_text(scenario, ""))
    world = build_world(SCENARIOS / f"{scenario}.toml", policy=policy, decisions=decisions, seed=seed)
    return run_maker(world, "oracle", monotonic=time.monotonic, progress=False)


def best_case_days(run, oracle, threshold: float = 0.8, smooth: int = 3) -> int | None:
    """The recovery figure (days, as drift_recovery counts them) of a learner that earns exactly
    what this run earned until the first decision after the change can have been learned (the
    change plus the reward window, rounded up to a whole day) and 100% of the oracle from then on:
    what the reward window alone allows."""
    w = run.world
    drift = w.scenario.spec.drift[0]
    m = w.population.segment[w.ask_person] == w.truth.segment_index[drift.segment]
    days = day_index(run)
    nd = int(days.max()) + 1
    best = np.bincount(days[m], oracle.expected[m], nd)
    mine = np.bincount(days[m], run.expected[m], nd)
    change = int(drift.at // DAY)
    first_known = change + int(np.ceil(w.policy.spec.reward.window / DAY))
    mine[first_known:] = best[first_known:]
    for day in range(change, nd):
        lo = max(change, day - smooth + 1)
        if mine[lo:day + 1].sum() >= threshold * best[lo:day + 1].sum():
            return day - change + 1
    return None


def drift_row(run, oracle) -> dict:
    d = drift_recovery(run, oracle)[0]
    change = int(d["at_day"])
    rec = d["recovered_by_end_of_day"]
    return {"days_to_80": None if rec is None else rec - change + 1,
            "daily_days_to_80": days_stays_above(d["daily_share_of_oracle"], change, 0.8),
            "best_case_days": best_case_days(run, oracle), "recovered_by_end_of_day": rec,
            "before_change": d["share_before_change_last_3_days"],
            "share": round(float(run.realized.sum() / oracle.realized.sum()), 4),
            "daily": d["daily_share_of_oracle"][change:]}


def study(scenario: str, decisions: int, seeds: list[int], settings: list[tuple[str, str]], tmp: Path) -> list:
    rows = []
    for seed in seeds:
        oracle = oracle_run(scenario, decisions, seed, tmp)
        for name, extra in settings:
            run, seconds = one_run(scenario, decisions, seed, extra, tmp)
            if scenario == "drift":
                row = drift_row(run, oracle)
            else:
                row = {"share": round(float(run.realized.sum() / oracle.realized.sum()), 4)}
            row.update(scenario=scenario, decisions=decisions, seed=seed, setting=name, extra=extra,
                       violations=int(run.violations.sum()), seconds=seconds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summary(rows: list, settings: list[tuple[str, str]], seeds: list[int]) -> str:
    def cell(scenario, name, seed, key, fmt):
        r = next((r for r in rows if r["scenario"] == scenario and r["setting"] == name and r["seed"] == seed), None)
        return "" if r is None else ("not in run" if r.get(key) is None else fmt(r[key]))
    head = "| setting | extra `vw_args` | " + " | ".join(f"drift seed {s}: days (daily)" for s in seeds)
    head += " | " + " | ".join(f"standard seed {s}" for s in seeds) + " |"
    lines = [head, "| " + " | ".join(["---"] * (2 + 2 * len(seeds))) + " |"]
    for name, extra in settings:
        cells = [(cell("drift", name, s, "days_to_80", str) + " (" + cell("drift", name, s, "daily_days_to_80", str)
                  + ")").replace(" ()", "") for s in seeds]
        cells += [cell("standard", name, s, "share", lambda x: f"{100 * x:.1f}%") for s in seeds]
        lines.append(f"| {name} | `{extra or '(none)'}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drift-decisions", type=int, default=50_000)
    ap.add_argument("--standard-decisions", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--setting", type=parse_setting, action="append",
                    help="NAME=EXTRA_VW_ARGS (repeatable); default: " + ", ".join(DEFAULT_SETTINGS))
    ap.add_argument("--standard-settings", nargs="+", metavar="NAME",
                    help="the settings to run on `standard` (default: all)")
    ap.add_argument("--no-drift", action="store_true")
    ap.add_argument("--no-standard", action="store_true")
    ap.add_argument("--json", type=Path, help="write every row to this file")
    args = ap.parse_args()
    settings = args.setting or [parse_setting(s) for s in DEFAULT_SETTINGS]
    if len({n for n, _ in settings}) != len(settings):
        ap.error("--setting names must differ")
    std = [s for s in settings if not args.standard_settings or s[0] in args.standard_settings]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_drift:
            rows += study("drift", args.drift_decisions, args.seeds, settings, Path(tmp))
        if not args.no_standard:
            rows += study("standard", args.standard_decisions, args.seeds, std, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(summary(rows, settings, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
