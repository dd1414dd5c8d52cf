#!/usr/bin/env python
"""The winner's curse in `tactful retrain`, measured on logs with a known truth (docs/models.md).

For each seed: the real DecisionEngine logs N decisions of the known-truth world
(service/simulation/known_truth.py: 17 arms, 4 segments, the engine's own exploration learning
online); then two schemes put a candidate forward for promotion:

  same slice (before)  the grid trains on the earliest 80% and is scored by DR on the latest 20%;
                       the winner's DR lift over the active version on that same slice is its
                       stored estimate;
  held out (now)       `retrain()` itself: train 60% | select 20% | held out 20%, the winner
                       trained again on the first 80%, its stored lift computed on the held-out
                       slice only.

Each candidate's true lift is exact: the value of its probabilities minus the active version's,
under the world's expected rewards, on the decisions its lift was estimated on. Reported: the
mean of (estimated - true) over seeds with its 95% t interval; an unbiased scheme's interval
holds zero.

    .venv/bin/python scripts/winners_curse.py                    # 20 seeds of 1500 decisions
    .venv/bin/python scripts/winners_curse.py --seeds 3 --n 600  # a quick look

Both schemes search the same grid (retrain's, `service/learning/retrain.py`), so the difference is
the slicing alone. JSON goes to out/winners_curse.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ope import DR, OffPolicyEvaluation, RewardModel, estimate_differences  # noqa: E402
from service.learning.registry import VersionRegistry  # noqa: E402
from service.learning.retrain import grid, retrain, search, train  # noqa: E402
from service.offline.evaluate import bandit_data  # noqa: E402
from service.offline.export import final_decisions  # noqa: E402
from service.offline.target_policies import load_model, model_target  # noqa: E402
from service.simulation.known_truth import default_world, generate_log, true_value, world_policy  # noqa: E402


def _truth(run, rows, pi) -> float:
    segments = [run.segments[r.decision.event_id] for r in rows]
    return true_value(run.world, segments, [r.decision.allowed for r in rows], pi, [a.id for a in run.policy.arms])


def _active_pi(run, rows):
    _, model, _ = load_model(run.policy, run.engine.store, "active")
    try:
        return model_target(run.policy, rows, model)
    finally:
        model.close()


def same_slice(run, rows, configs, seed: int) -> dict:
    """The scheme before: choose and evaluate on the same latest 20%."""
    policy = run.policy
    cut = int(len(rows) * 0.8)
    train_rows, test_rows = rows[:cut], rows[cut:]
    results = search(policy, train_rows, test_rows, configs, seed)
    chosen = max(results, key=lambda r: r.dr).vw_args
    model = train(policy, train_rows, chosen, seed)
    try:
        pi = model_target(policy, test_rows, model)
    finally:
        model.close()
    ref = _active_pi(run, test_rows)
    data = bandit_data(policy, test_rows)
    q = OffPolicyEvaluation(data, [DR()], RewardModel(), seed=seed).q_cross()
    est, lo, _ = estimate_differences(data, pi, ref, q, 0.05)
    return {"chosen": chosen, "estimated": est, "lo": lo, "true": _truth(run, test_rows, pi) - _truth(run, test_rows, ref)}


def held_out(run, rows, configs, seed: int) -> dict:
    """The scheme now: `retrain()` as `tactful retrain` runs it, and its stored evaluation."""
    policy, store = run.policy, run.engine.store
    r = retrain(store, policy, now=run.clock.now(), configs=configs, n_boot=50, seed=seed)
    ev = VersionRegistry(store).latest_evaluation(policy.name, r["version"])
    test_rows = rows[len(rows) - r["held_out"]:]
    ref = _active_pi(run, test_rows)
    _, model, _ = load_model(policy, store, str(r["version"]))
    try:
        pi = model_target(policy, test_rows, model)
    finally:
        model.close()
    return {"chosen": r["chosen"], "estimated": ev["lift"]["value"], "lo": ev["lift"]["lo"],
            "true": _truth(run, test_rows, pi) - _truth(run, test_rows, ref)}


def one_seed(seed: int, n: int, tmp: str, configs: list[str], logging: str = "engine") -> dict:
    policy = world_policy(logging=logging)
    world = default_world(policy, seed=seed)
    run = generate_log(world, policy, f"{tmp}/curse-{seed}.db", n, seed=seed)
    rows = list(final_decisions(run.engine.store, policy, now=run.clock.now()))
    rows.sort(key=lambda r: (r.decision.decided_at, r.decision.seq))
    out = {"seed": seed, "n": len(rows), "same_slice": same_slice(run, rows, configs, seed),
           "held_out": held_out(run, rows, configs, seed)}
    run.engine.store.close()
    return out


def summary(runs: list[dict], scheme: str) -> dict:
    err = np.array([r[scheme]["estimated"] - r[scheme]["true"] for r in runs])
    half = stats.t.ppf(0.975, len(err) - 1) * err.std(ddof=1) / np.sqrt(len(err)) if len(err) > 1 else float("nan")
    promoted = [r[scheme] for r in runs if r[scheme]["lo"] > 0]
    return {"scheme": scheme, "seeds": len(err), "bias": float(err.mean()), "lo": float(err.mean() - half),
            "hi": float(err.mean() + half),
            "estimated": float(np.mean([r[scheme]["estimated"] for r in runs])),
            "true": float(np.mean([r[scheme]["true"] for r in runs])),
            "passes_lift_criterion": len(promoted), "truly_better": sum(r["true"] > 0 for r in promoted)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n", type=int, default=1500, help="decisions per log")
    ap.add_argument("--logging", choices=("engine", "uniform"), default="engine",
                    help="who logged: the engine's own exploration, or uniform random (a holdout of everyone)")
    ap.add_argument("--out", default="out/winners_curse.json")
    args = ap.parse_args()
    configs = grid()
    t0 = time.time()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            runs.append(one_seed(seed, args.n, tmp, configs, args.logging))
            r = runs[-1]
            print(f"seed {seed:2d}: same slice {r['same_slice']['estimated'] - r['same_slice']['true']:+.4f}, "
                  f"held out {r['held_out']['estimated'] - r['held_out']['true']:+.4f}", flush=True)
    rows = [summary(runs, s) for s in ("same_slice", "held_out")]
    print(f"\n{args.seeds} seeds of {args.n} decisions logged by {args.logging}, grid of {len(configs)}, {time.time() - t0:.0f} s")
    print("| scheme | mean estimated lift | mean true lift | estimated - true: mean [95% interval] "
          "| lift's lower bound > 0 | of which truly better |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    names = {"same_slice": "chosen and evaluated on the same slice (before)",
             "held_out": "chosen on one slice, evaluated on a later one (now)"}
    for s in rows:
        print(f"| {names[s['scheme']]} | {s['estimated']:+.4f} | {s['true']:+.4f} | {s['bias']:+.4f} "
              f"[{s['lo']:+.4f}, {s['hi']:+.4f}] | {s['passes_lift_criterion']} of {s['seeds']} | {s['truly_better']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": runs, "summary": rows, "n": args.n, "logging": args.logging}, indent=1))


if __name__ == "__main__":
    main()
