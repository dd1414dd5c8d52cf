#!/usr/bin/env python
"""Proof of learning quality: rerun every simulation behind docs/quality.md and rewrite it.

    .venv/bin/python scripts/quality.py            # full run (about half an hour on 2 cores), rewrites
                                                   # docs/quality.md and docs/quality/*.png
    .venv/bin/python scripts/quality.py --small    # the same runs on small populations (CI, about a
                                                   # minute); writes to --out only

Runs, each on one population, one seed, the same moments and random draws for every decision maker:
  standard       tactful, thompson, static-best, uniform, oracle     (200,000 decisions)
  fatigue-heavy  tactful, fatigue-blind, oracle                      (100,000 decisions)
  drift          tactful, oracle                                     (100,000 decisions)
and checks the targets of issue 4. Exit status 1 when any run has a guardrail violation; the
quality targets are reported as met or missed, with their figures, never hidden.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.simulate import simulate  # noqa: E402

SCENARIOS = ROOT / "examples" / "scenarios"
PLAN = {
    "standard": (200_000, ["tactful", "thompson", "static-best", "uniform", "oracle"]),
    "fatigue-heavy": (100_000, ["tactful", "fatigue-blind", "oracle"]),
    "drift": (100_000, ["tactful", "oracle"]),
}
SMALL = 3000


def load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def run(small: bool, out: Path, progress: bool) -> dict:
    results, timings = {}, {}
    for name, (n, makers) in PLAN.items():
        n = SMALL if small else n
        t0 = time.time()
        loads = [load()]
        results[name] = simulate(SCENARIOS / f"{name}.toml", decisions=n, out=out / name, makers=makers,
                                 compare=True, progress=progress)
        loads.append(load())
        timings[name] = {"decisions": n, "seconds": round(time.time() - t0, 1), "load_average": loads}
    return {"results": results, "timings": timings}


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def summarize(data: dict) -> dict:
    r = data["results"]
    std = r["standard"]["runs"]
    fh = r["fatigue-heavy"]["runs"]
    dr = r["drift"]["runs"]
    t = lambda runs, m, k: runs[m]["totals"][k]  # noqa: E731
    share = t(std, "tactful", "shaped_reward") / t(std, "oracle", "shaped_reward")
    unsub_ratio = t(fh, "tactful", "unsubscribe_rate") / max(t(fh, "fatigue-blind", "unsubscribe_rate"), 1e-12)
    click_ratio = t(fh, "tactful", "clicks") / max(t(fh, "fatigue-blind", "clicks"), 1)
    drift = dr["tactful"].get("drift", [{}])[0]
    violations = sum(m["guardrail_violations"]["total"] for sc in r.values() for m in sc["runs"].values())
    speed = std["tactful"]
    return {
        "standard_share_of_oracle": round(share, 4),
        "standard_beats_thompson": t(std, "tactful", "shaped_reward") > t(std, "thompson", "shaped_reward"),
        "standard_beats_static_best": t(std, "tactful", "shaped_reward") > t(std, "static-best", "shaped_reward"),
        "fatigue_unsubscribe_ratio": round(unsub_ratio, 4),
        "fatigue_click_ratio": round(click_ratio, 4),
        "drift_decisions_to_recover": drift.get("decisions_to_recover"),
        "drift_segment_decisions_to_recover": drift.get("segment_decisions_to_recover"),
        "drift_recovered_by_end_of_day": drift.get("recovered_by_end_of_day"),
        "drift_share_before": drift.get("share_before_change_last_3_days"),
        "drift_share_day_of_change": drift.get("share_day_after_change"),
        "violations": violations,
        "tactful_standard_seconds": speed["wall_seconds"],
        "tactful_standard_decisions_per_second": speed["decisions_per_second"],
        "tactful_standard_seconds_by_part": speed["seconds_by_part"],
    }


def table(scenario: dict) -> list[str]:
    rows = scenario["comparison"]["rows"]
    lines = ["| decision maker | shaped reward | share of oracle | clicks | conversions | unsubscribes | "
             "complaints | unsubscribes per person | contacts per person-week | violations | decisions/s |",
             "| " + " | ".join(["---"] * 11) + " |"]
    for row in rows:
        share = "" if row["share_of_oracle"] is None else f"{100 * row['share_of_oracle']:.1f}%"
        lines.append(f"| {row['decision_maker']} | {row['shaped_reward']:,.0f} | {share} | {row['clicks']:,} | "
                     f"{row['conversions']:,} | {row['unsubscribes']:,} | {row['complaints']:,} | "
                     f"{row['unsubscribe_rate']:.4f} | {row['contacts_per_person_week']:.2f} | "
                     f"{row['violations']} | {row['decisions_per_second']:,.0f} |")
    return lines


def document(data: dict, s: dict, small: bool, images: str) -> str:
    tm = data["timings"]
    r = data["results"]
    d = r["drift"]["runs"]["tactful"].get("drift", [{}])[0]
    per_part = s["tactful_standard_seconds_by_part"]
    lines = [
        "# Learning quality, measured in simulation",
        "",
        "Every figure on this page was written by `scripts/quality.py`" + (" --small" if small else "") + ", which anyone can "
        "rerun (`.venv/bin/python scripts/quality.py`; CI runs `--small` through `tests/test_simulate.py`). "
        "The simulator and the scenarios are described in [simulation.md](simulation.md). Each scenario runs "
        "every decision maker on the same population, at the same moments, with the same random draws, "
        "behind the same guardrails, through the real engine; shaped reward is the scenario policy's own "
        "reward applied to everything the simulated people did.",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}; load average (1/5/15 min) at the start and end of each scenario: "
        + "; ".join(f"{k} {v['load_average'][0]} -> {v['load_average'][1]}" for k, v in tm.items())
        + ". The machine is shared: a load above the core count slows every figure of speed below.",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| `standard`, {tm['standard']['decisions']:,} decisions: Tactful reaches at least 85% of the oracle's "
        f"shaped reward | {100 * s['standard_share_of_oracle']:.1f}% | {verdict(s['standard_share_of_oracle'] >= 0.85)} |",
        f"| `standard`: Tactful beats per-segment Thompson sampling and static best | "
        f"{'yes' if s['standard_beats_thompson'] else 'no'}, {'yes' if s['standard_beats_static_best'] else 'no'} | "
        f"{verdict(s['standard_beats_thompson'] and s['standard_beats_static_best'])} |",
        f"| `fatigue-heavy`: unsubscribe rate at most half of fatigue-blind Tactful's | "
        f"{100 * s['fatigue_unsubscribe_ratio']:.0f}% of it | {verdict(s['fatigue_unsubscribe_ratio'] <= 0.5)} |",
        f"| `fatigue-heavy`: with at least 90% of its clicks | {100 * s['fatigue_click_ratio']:.0f}% | "
        f"{verdict(s['fatigue_click_ratio'] >= 0.9)} |",
        f"| `drift`: back to at least 80% of the new oracle | "
        + (f"{s['drift_decisions_to_recover']:,} decisions after the change "
           f"({s['drift_segment_decisions_to_recover']:,} of the drifted segment; end of day "
           f"{s['drift_recovered_by_end_of_day']})" if s['drift_decisions_to_recover'] is not None
           else "not within the run")
        + f" | {verdict(s['drift_decisions_to_recover'] is not None)} |",
        f"| zero guardrail violations in every run | {s['violations']} | {verdict(s['violations'] == 0)} |",
        f"| {tm['standard']['decisions']:,} decisions in process in under 5 minutes | "
        f"{s['tactful_standard_seconds']:.0f} s, {s['tactful_standard_decisions_per_second']:,.0f} decisions/s | "
        f"{verdict(s['tactful_standard_seconds'] < 300)} |",
        "",
        f"Where Tactful's {tm['standard']['decisions']:,} `standard` decisions spent their time (seconds): "
        + ", ".join(f"{k} {v}" for k, v in per_part.items())
        + " (`decide`: the engine's decide, with guardrails, SQLite and VW; `learn`: OnlineLearner.step, "
          "publishing a model version every 2 virtual hours; `outcomes`: record_outcome; `simulator`: the truth, "
          "the independent check and the bookkeeping).",
        "",
    ]
    for name, blurb in (
        ("standard", "Four segments that want different content, channels and times of day, in three time zones."),
        ("fatigue-heavy", "The same audience, worn out easily: engagement falls steeply with recent contacts and "
                          "unsubscribes climb. Tactful's policy here adds history interactions (`-q HA`), so that "
                          "its model can see recent contact pressure."),
        ("drift", "The standard audience; on day 14 the bargain hunters turn from promotions by email to loyalty "
                  "rewards in the app and on push."),
    ):
        lines += [f"## `{name}` ({tm[name]['decisions']:,} decisions, {tm[name]['seconds']:.0f} s for all runs)",
                  "", blurb, ""] + table(r[name]) + ["", f"![{name}]({images}/{name}.png)", ""]
        if name == "drift" and d:
            daily = ", ".join("n/a" if x is None else f"{100 * x:.0f}%" for x in d["daily_share_of_oracle"])
            trailing = ", ".join(f"day {i}: {100 * x:.0f}%" for i, x in enumerate(d["trailing_share_of_oracle"])
                                 if x is not None)
            lines += [f"Daily share of the oracle's expected reward in the drifted segment ({d['segment']}), day 0 "
                      f"on: {daily}.", "",
                      f"The same over the trailing {d['trailing_days']} days after the change (the recovery "
                      f"criterion: at least 80% from some day to the end of the run): {trailing}.", ""]
    lines += [
        "## How to read these figures",
        "",
        "- *Oracle*: knows each person's true expected shaped reward for every allowed arm at that moment "
        "(fatigue and hazards included) and picks the best; it is myopic (it does not save contacts for later). "
        "The lifecycle policy's 5% holdout group is served uniform random choice whoever decides, the oracle "
        "included.",
        "- *Share of oracle*: realized shaped reward of the run over the oracle run's, same people and draws.",
        "- *Unsubscribes per person*: unsubscribe events over the population, for the whole run.",
        "- *Violations*: sends that the simulator's own check (service/sim_checks.py, independent of the "
        "guardrail code) finds against consent or a frequency cap, given each person's true state.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help=f"{SMALL:,} decisions per run; does not touch docs/")
    ap.add_argument("--out", default=None, help="directory for the runs' outputs (default out/quality[-small])")
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    args = ap.parse_args()
    out = Path(args.out or ROOT / "out" / ("quality-small" if args.small else "quality"))
    data = run(args.small, out, args.progress)
    s = summarize(data)
    (out / "quality.json").write_text(json.dumps(s | {"timings": data["timings"]}, indent=2) + "\n")
    if args.small:
        (out / "quality.md").write_text(document(data, s, True, "."))
        for name in PLAN:
            shutil.copy(out / name / "comparison.png", out / f"{name}.png")
    else:
        images = ROOT / "docs" / "quality"
        images.mkdir(parents=True, exist_ok=True)
        for name in PLAN:
            shutil.copy(out / name / "comparison.png", images / f"{name}.png")
        (ROOT / "docs" / "quality.md").write_text(document(data, s, False, "quality"))
    print(json.dumps(s, indent=2))
    return 1 if s["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
