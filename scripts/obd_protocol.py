#!/usr/bin/env python
"""The Open Bandit Dataset paper's protocol on the OBD sample (docs/ope.md).

1. Estimate the Bernoulli TS policy's click rate from the uniform-random policy's logs (the BTS
   action distribution per position from ZOZOTOWN's prior, service/offline/obd.py), and set each
   estimate and its 95% interval beside the BTS policy's observed on-policy click rate.
2. Evaluate the random policy on its own logs: the estimate must reproduce its observed click
   rate inside the interval.

    .venv/bin/python scripts/obd_protocol.py [--data ../shared/data/obd-men] [--out out/figures]

(`--out docs/figures` refreshes the figures docs/ope.md shows.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.ope import DM, DR, IPS, SNIPS, OffPolicyEvaluation, Replay, RewardModel, SwitchDR  # noqa: E402
from service.offline.evaluate import bandit_data  # noqa: E402
from service.offline.export import final_decisions  # noqa: E402
from service.offline.obd import bts_target, import_obd  # noqa: E402
from service.offline.target_policies import uniform_target  # noqa: E402
from service.policy import load_policies  # noqa: E402
from service.store import open_store# noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "obd-men"),
                    help="the OBD sample (default: ../shared/data/obd-men beside the repository)")
    ap.add_argument("--out", default=str(ROOT / "out" / "figures"),
                    help="directory for the JSON and PNG (docs/figures: the ones docs/ope.md shows)")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"{tmp}/obd.db")
        summaries = {s["logger"]: s for s in import_obd(args.data, store, f"{tmp}/policies")}
        policies = load_policies(f"{tmp}/policies")
        policy = policies["obd-men-random"]
        rows = list(final_decisions(store, policy, now=2e9))
        data = bandit_data(policy, rows)
        ope = OffPolicyEvaluation(data, [IPS(), SNIPS(), DM(), DR(), SwitchDR(), Replay(n_boot=args.n_boot)],
                                  RewardModel())
        bts = ope.run(bts_target(policy, rows))
        rnd = ope.run(uniform_target(data))
    observed = {"bts": summaries["bts"]["click_rate"], "random": summaries["random"]["click_rate"]}
    result = {"observed": observed, "n_random_logs": data.n,
              "bts_from_random": [e.as_dict() for e in bts], "random_on_own_logs": [e.as_dict() for e in rnd]}
    (out / "obd_protocol.json").write_text(json.dumps(result, indent=1))

    import matplotlib  # heavy: imported only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, ests, obs, title in ((axes[0], bts, observed["bts"], "Bernoulli TS, estimated from random logs"),
                                 (axes[1], rnd, observed["random"], "random, on its own logs")):
        for j, e in enumerate(ests):
            covered = e.lo <= obs <= e.hi
            ax.errorbar([j], [e.value * 100], yerr=[[(e.value - e.lo) * 100], [(e.hi - e.value) * 100]], fmt="o",
                        capsize=4, color="tab:blue" if covered else "tab:red")
        ax.axhline(obs * 100, color="black", ls="--", lw=1, label=f"observed on-policy {obs:.2%}")
        ax.set_xticks(range(len(ests)), [e.estimator for e in ests])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("click rate (%), 95% interval")
    fig.suptitle("Open Bandit Dataset sample (men campaign): 10,000 uniform-random impressions", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "obd_protocol.png", dpi=110)
    plt.close(fig)

    for title, ests, obs in (("Bernoulli TS estimated from the random logs", bts, observed["bts"]),
                             ("Random policy on its own logs", rnd, observed["random"])):
        print(f"\n{title}; observed on-policy click rate {obs:.4%}")
        print("| estimator | estimate | 95% interval | holds the observed rate | ESS / kept |")
        print("| --- | ---: | --- | --- | ---: |")
        for e in ests:
            print(f"| {e.estimator} | {e.value:.4%} | [{e.lo:.4%}, {e.hi:.4%}] | "
                  f"{'yes' if e.lo <= obs <= e.hi else 'no'} | {e.ess:.0f} |")


if __name__ == "__main__":
    main()
