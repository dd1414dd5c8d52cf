#!/usr/bin/env python
"""Estimator coverage study on logs with a known truth (docs/ope.md).

For each seed: the real DecisionEngine logs N decisions for a synthetic population
(service/simulation/known_truth.py) under a logging policy (uniform
random, or the engine's own VW exploration learning online); a fixed target policy is evaluated
from that log by every estimator; its exact true value on the logged contexts is computed from
the population's known expected rewards. Reported per estimator: how often the 95% interval
covers the truth, the mean absolute error, the mean interval width.

    .venv/bin/python scripts/ope_coverage.py                      # 50 seeds, all three logging policies
    .venv/bin/python scripts/ope_coverage.py --seeds 5 --n 1000   # a quick look

Figures and JSON go to out/figures; `--out docs/figures` refreshes the ones docs/ope.md shows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# one BLAS thread: the ridge refits are small, and threads only fight over a shared machine
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ope import (DM, DR, IPS, SNIPS, OffPolicyEvaluation, Replay, RewardModel,  # noqa: E402
                        SwitchDR, satterthwaite_df, weights)
from service.offline.evaluate import bandit_data  # noqa: E402
from service.offline.export import final_decisions  # noqa: E402
from service.simulation.known_truth import (LOGGERS, best_arm_target, default_world, generate_log,  # noqa: E402
                                            true_value, world_policy)


def one_seed(seed: int, logging: str, n: int, tmp: str, n_boot: int, ridge_alpha: float = 1.0) -> dict:
    policy = world_policy(logging=logging)
    world = default_world(policy, seed=seed)
    run = generate_log(world, policy, f"{tmp}/{logging}-{seed}.db", n, seed=seed)
    rows = list(final_decisions(run.engine.store, policy, now=run.clock.now()))
    data = bandit_data(policy, rows)
    segments = [run.segments[r.decision.event_id] for r in rows]
    pi = best_arm_target(world, policy, segments, data.allowed)
    truth = true_value(world, segments, [r.decision.allowed for r in rows], pi, [a.id for a in policy.arms])
    # SwitchDR chooses its threshold; SwitchDR-50 keeps the fixed tau = 50 of earlier versions, for comparison
    # (in the tables, not in the figure)
    estimators = ([IPS(), SNIPS(), DM(), DR(), SwitchDR(), SwitchDR(name="SwitchDR-50", tau=50.0)]
                  + ([Replay(seed=seed, n_boot=n_boot, bootstrap_seed=seed)] if logging == "uniform" else []))
    ope = OffPolicyEvaluation(data, estimators, RewardModel(alpha=ridge_alpha), seed=seed)
    w = weights(data, pi)
    out = {"seed": seed, "logging": logging, "truth": truth, "n": data.n,
           "logged_mean": float(data.reward.mean()), "max_weight": float(w.max()),
           "weight_df": satterthwaite_df(w), "switch_tau": SwitchDR().chosen_tau(data, pi, ope.q_cross()),
           "estimates": {}}
    for e in ope.run(pi):
        out["estimates"][e.estimator] = e.as_dict()
    run.engine.store.close()
    Path(f"{tmp}/{logging}-{seed}.db").unlink(missing_ok=True)
    return out


def summarize(results: list[dict]) -> dict:
    summary = {}
    for logging in dict.fromkeys(r["logging"] for r in results):
        rs = [r for r in results if r["logging"] == logging]
        per = {}
        for name in rs[0]["estimates"]:
            est = [r["estimates"][name] for r in rs]
            truth = np.array([r["truth"] for r in rs])
            v = np.array([e["value"] for e in est])
            lo = np.array([e["lo"] for e in est])
            hi = np.array([e["hi"] for e in est])
            per[name] = {"coverage": float(np.mean((lo <= truth) & (truth <= hi))),
                         "mean_abs_error": float(np.mean(np.abs(v - truth))),
                         "rmse": float(np.sqrt(np.mean((v - truth) ** 2))),
                         "bias": float(np.mean(v - truth)),
                         "mean_width": float(np.mean(hi - lo)),
                         "mean_n": float(np.mean([e["n"] for e in est])),
                         "mean_ess": float(np.mean([e["ess"] for e in est]))}
        taus = [r["switch_tau"] for r in rs]
        summary[logging] = {"seeds": len(rs), "mean_truth": float(np.mean([r["truth"] for r in rs])),
                            "mean_logged": float(np.mean([r["logged_mean"] for r in rs])),
                            "median_max_weight": float(np.median([r["max_weight"] for r in rs])),
                            "median_weight_df": float(np.median([r["weight_df"] for r in rs])),
                            "switch_taus": {str(t): taus.count(t) for t in sorted(set(taus))},
                            "estimators": per}
    return summary


def plot(results: list[dict], summary: dict, path: Path) -> None:
    import matplotlib  # heavy: imported only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loggings = list(summary)
    fig, axes = plt.subplots(1, len(loggings), figsize=(6 * len(loggings), 4.2), squeeze=False)
    for ax, logging in zip(axes[0], loggings):
        rs = [r for r in results if r["logging"] == logging]
        names = [n for n in rs[0]["estimates"] if n != "SwitchDR-50"]  # its honest interval is +-1.4: off the scale
        for j, name in enumerate(names):
            err = np.array([r["estimates"][name]["value"] - r["truth"] for r in rs])
            lo = np.array([r["estimates"][name]["lo"] - r["truth"] for r in rs])
            hi = np.array([r["estimates"][name]["hi"] - r["truth"] for r in rs])
            xs = j + np.linspace(-0.35, 0.35, len(rs))
            covered = (lo <= 0) & (hi >= 0)
            ax.vlines(xs[covered], lo[covered], hi[covered], color="tab:blue", lw=0.8)
            ax.vlines(xs[~covered], lo[~covered], hi[~covered], color="tab:red", lw=0.8)
            ax.plot(xs, err, ".", color="black", ms=2)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)),
                      [f"{n}\n{summary[logging]['estimators'][n]['coverage']:.0%}" for n in names])
        ax.set_ylabel("estimate - truth (95% interval per seed)")
        ax.set_title(f"{logging} logging, {summary[logging]['seeds']} seeds (red: misses the truth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--n", type=int, default=3000, help="decisions per log")
    ap.add_argument("--logging", nargs="+", default=["uniform", "engine", "greedy"], choices=list(LOGGERS),
                    help="uniform random; the engine's learner with the example's settings; a greedier one; "
                         "the engine with the example's floor (0.01) in place of 0.1")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--ridge-alpha", type=float, default=1.0, help="the reward model's ridge penalty")
    ap.add_argument("--out", default=str(ROOT / "out" / "figures"),
                    help="directory for the JSON and PNG (docs/figures: the ones docs/ope.md shows)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.time()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for logging in args.logging:
            for seed in range(args.seeds):
                results.append(one_seed(seed, logging, args.n, tmp, args.n_boot, args.ridge_alpha))
                print(f"{logging} seed {seed}: truth {results[-1]['truth']:.4f} "
                      + " ".join(f"{k} {v['value']:.4f}" for k, v in results[-1]["estimates"].items()),
                      flush=True)
    summary = summarize(results)
    plot(results, summary, out / "ope_coverage.png")
    summary["config"] = {"seeds": args.seeds, "ridge_alpha": args.ridge_alpha, "n": args.n, "n_boot": args.n_boot, "cores": os.cpu_count(),
                         "seconds": round(time.time() - started, 1)}
    (out / "ope_coverage.json").write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    for logging in args.logging:
        s = summary[logging]
        print(f"\n{logging} logging: {s['seeds']} seeds, {args.n} decisions each, mean true value "
              f"{s['mean_truth']:.4f} (logged policy's mean reward {s['mean_logged']:.4f}); median largest weight "
              f"{s['median_max_weight']:.1f}, median Satterthwaite df of the weights {s['median_weight_df']:.1f}; "
              f"SwitchDR's tau: {s['switch_taus']}")
        print("| estimator | coverage of 95% interval | mean abs error | bias | mean interval width | mean ESS / n kept |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, e in s["estimators"].items():
            print(f"| {name} | {e['coverage']:.0%} | {e['mean_abs_error']:.4f} | {e['bias']:+.4f} | "
                  f"{e['mean_width']:.4f} | {e['mean_ess']:.0f} |")


if __name__ == "__main__":
    main()
