#!/usr/bin/env python
"""What crossing contact history with the arms (`-q HA`) does to the example policy (docs/policies.md).

Two measurements, each of the example policy's `vw_args` without a history cross ("not crossed"),
with `-q HA` ("crossed") and with `-q HR --ignore_linear R` ("hold crossed"):

  tiring world   `tiring_log` (service/simulation/known_truth.py): the real engine and learner on
                 40 people who tire (a send pays only to a person with no contact in 7 days);
                 hold shares of tired and rested people and the mean shaped reward over the
                 last third of 2,400 decisions, per seed;
  --scenario     a shipped scenario (`tactful simulate`'s world, the example policy file with
                 or a copy crossed, nothing else changed) at --decisions, per seed: the share of tired people (2+
                 contacts in the fatigue window) held over the second half, the mean expected
                 shaped reward, and the share of the gap between uniform choice and the best
                 allowed arm that it closes.

    .venv/bin/python scripts/fatigue_default.py --seeds 1,2,3,4,5
    .venv/bin/python scripts/fatigue_default.py --seeds 1,2,3,4 --scenario examples/scenarios/fatigue-heavy.toml --decisions 5000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.policy import load_policy  # noqa: E402
from service.simulation.known_truth import tiring_log  # noqa: E402
from service.simulation.run import run_maker  # noqa: E402
from service.simulation.world import build_world  # noqa: E402

EXAMPLE = ROOT / "examples" / "policies" / "lifecycle.toml"


CROSSES = {"crossed": "-q HA", "hold crossed": "-q HR --ignore_linear R"}


def variants(tmp: str) -> dict[str, tuple[str, Path]]:
    """(vw_args, policy file) of the example as shipped ("not crossed"), with `-q HA` ("crossed":
    history x every part of every arm) and with `-q HR --ignore_linear R` ("hold crossed": history
    x the hold arm alone, models/featurize.py). An option the shipped args already carry is taken
    out of it first, so that each variant is the shipped settings plus or minus its cross."""
    text = EXAMPLE.read_text()
    shipped = load_policy(EXAMPLE).spec.learner.vw_args
    blind = " ".join(shipped.replace("-q HR --ignore_linear R", "").replace("-q HA", "").split())
    out = {}
    for name, cross in CROSSES.items():
        args = blind.replace("-q UA", f"-q UA {cross}")
        path = Path(tmp) / f"lifecycle-{name.replace(' ', '-')}.toml"
        path.write_text(text.replace(shipped, args))
        out[name] = (args, path)
    path = Path(tmp) / "lifecycle-not-crossed.toml"
    path.write_text(text.replace(shipped, blind))
    return out | {"not crossed": (blind, path)}


def tiring(seeds: list[int], tmp: str) -> None:
    print("| seed | learner | held: tired | held: rested | mean shaped reward |\n| --- | --- | ---: | ---: | ---: |")
    for seed in seeds:
        for name, (args, _) in variants(tmp).items():
            r = tiring_log(Path(tmp) / f"tiring-{seed}-{name.replace(' ', '-')}.db", args, seed)
            print(f"| {seed} | {name} | {r['hold_tired']:.2f} | {r['hold_rested']:.2f} | {r['reward']:+.3f} |", flush=True)


def scenario(path: str, decisions: int, seeds: list[int], tmp: str, only: list[str] | None = None) -> None:
    print(f"\n`{Path(path).stem}`, {decisions} decisions, the example policy file\n")
    print("| seed | learner | tired people held (2nd half) | mean expected shaped reward | gap closed |\n"
          "| --- | --- | ---: | ---: | ---: |")
    for seed in seeds:
        runs = {}
        chosen = {k: v for k, v in variants(tmp).items() if not only or k in only}
        for name, (_, file) in [("uniform", ("", EXAMPLE)), *chosen.items()]:
            w = build_world(path, file, decisions, seed)
            r = run_maker(w, "uniform" if name == "uniform" else "tactful", monotonic=time.monotonic, progress=False)
            second = np.arange(len(r.arm)) >= len(r.arm) // 2
            tired = (r.fatigue_contacts >= 2) & second
            runs[name] = (float((~r.send[tired]).mean()), float(r.expected.mean()), float(r.best.mean()))
        u = runs["uniform"][1]
        for name, (held, exp, best) in runs.items():
            gap = "" if name == "uniform" else f"{(exp - u) / (best - u):.0%}"
            print(f"| {seed} | {name} | {held:.2f} | {exp:+.4f} | {gap} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--scenario", default=None, help="also run this scenario file (tactful simulate's)")
    ap.add_argument("--decisions", type=int, default=5000)
    ap.add_argument("--variants", default=None,
                    help="comma-separated learners to run with --scenario (default: all; uniform always runs)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.scenario:
            scenario(args.scenario, args.decisions, seeds, tmp,
                     args.variants.split(",") if args.variants else None)
        else:
            tiring(seeds, tmp)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
