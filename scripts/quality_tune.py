#!/usr/bin/env python
"""Tuning runs behind docs/quality.md: Tactful with a modified copy of a scenario's policy,
against the oracle (and the baselines the targets name), on one scenario's population and seed.

    .venv/bin/python scripts/quality_tune.py standard 50000 \
        --vw-args "--squarecb --gamma_scale 3000 -b 22 -l 0.05 --clip_p 0.5 --epsilon 0.05 -q UA"

Prints one JSON line: Tactful's share of the oracle run's shaped reward (realized, expected, last
quarter of the run), and for `fatigue-heavy` its clicks and unsubscribes against fatigue-blind
Tactful run with the same modified policy. Run it under `nice`: each run takes minutes.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.simulation.scenario import load_scenario  # noqa: E402
from service.simulation.run import run_maker  # noqa: E402
from service.simulation.world import build_world  # noqa: E402


def totals(run) -> dict:
    q = len(run.arm) * 3 // 4
    return {"realized": float(run.realized.sum()), "expected": float(run.expected.sum()),
            "last_quarter": float(run.realized[q:].sum()), "clicks": int(run.outcomes["click"].sum()),
            "unsubscribes": int(run.outcomes["unsubscribe"].sum()), "violations": int(run.violations.sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", help="standard, fatigue-heavy or drift")
    ap.add_argument("decisions", type=int)
    ap.add_argument("--vw-args", help="replaces the policy's [learner] vw_args")
    ap.add_argument("--replace", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                    help="replace a piece of the policy file's text (repeatable)")
    args = ap.parse_args()
    scenario = ROOT / "examples" / "scenarios" / f"{args.scenario}.toml"
    text = load_scenario(scenario).policy_path.read_text()
    if args.vw_args:
        text = re.sub(r'^vw_args = ".*"', f'vw_args = "{args.vw_args}"', text, flags=re.M)
    for old, new in args.replace:
        if old not in text:
            ap.error(f"--replace: {old!r} is not in the policy")
        text = text.replace(old, new)
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.toml"
        policy.write_text(text)
        world = build_world(scenario, policy=policy, decisions=args.decisions)
        runs = {m: totals(run_maker(world, m, monotonic=time.monotonic, progress=False))
                for m in ["tactful", "oracle"] + (["fatigue-blind"] if args.scenario == "fatigue-heavy" else [])}
    t, o = runs["tactful"], runs["oracle"]
    out = {"scenario": args.scenario, "decisions": args.decisions, "vw_args": args.vw_args,
           "share": round(t["realized"] / o["realized"], 4), "share_expected": round(t["expected"] / o["expected"], 4),
           "share_last_quarter": round(t["last_quarter"] / o["last_quarter"], 4), "runs": runs}
    if "fatigue-blind" in runs:
        fb = runs["fatigue-blind"]
        out["click_ratio"] = round(t["clicks"] / max(fb["clicks"], 1), 4)
        out["unsubscribe_ratio"] = round(t["unsubscribes"] / max(fb["unsubscribes"], 1), 4)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
