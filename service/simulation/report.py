"""Metrics, plots and reports of simulation runs (service/simulate.py).

Shaped reward is always the scenario policy's own reward (weights, fatigue term, default),
applied to everything the simulated person did, whenever it happened: the true consequences of
the decisions, not what the learner was told within its reward window. "Expected" figures are
the truth's expected shaped reward of the chosen arm (the same quantity without the sampling
noise); "oracle in place" is the expected shaped reward of the best arm the simulator's own rules
allowed at that moment, for this run's own person states.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from service.decision.explain import MODES

DAY = 86400.0


def _rel(path: str) -> str:
    """A path relative to the working directory when it is below it (reports move with the repo)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _day_index(run) -> np.ndarray:
    w = run.world
    return ((w.ask_t - w.scenario.spec.start.timestamp()) // DAY).astype(int).clip(0)


def _checkpoints(n: int, k: int = 50) -> np.ndarray:
    return np.unique(np.linspace(0, n, k + 1).astype(int)[1:]) - 1


def _cum_at(values: np.ndarray, points: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in np.cumsum(values)[points]]


def run_metrics(run, oracle=None) -> dict:
    w = run.world
    n = len(run.arm)
    weeks = w.days / 7.0
    o = run.outcomes
    sends = int(run.send.sum())
    holdout = run.mode_code == 2
    totals = {
        "decisions": n,
        "shaped_reward": round(float(run.realized.sum()), 4),
        "shaped_reward_per_decision": round(float(run.realized.mean()), 6),
        "expected_shaped_reward": round(float(run.expected.sum()), 4),
        "oracle_in_place_expected_reward": round(float(run.best.sum()), 4),
        "shaped_reward_outside_holdout": round(float(run.realized[~holdout].sum()), 4),
        "sends": sends,
        "holds": n - sends,
        "opens": int(o["open"].sum()),
        "clicks": int(o["click"].sum()),
        "conversions": int(o["convert"].sum()),
        "unsubscribes": int(o["unsubscribe"].sum()),
        "complaints": int(o["complaint"].sum()),
        "unsubscribe_rate": round(float(o["unsubscribe"].sum()) / w.people, 6),
        "unsubscribes_per_1000_sends": round(1000.0 * float(o["unsubscribe"].sum()) / max(sends, 1), 4),
        "contacts_per_person_week": round(sends / w.people / weeks, 4),
    }
    points = _checkpoints(n)
    regret = {
        "decision": [int(p) + 1 for p in points],
        "day": [round(float((w.ask_t[p] - w.ask_t[0]) / DAY), 3) for p in points],
        "cumulative_shaped_reward": _cum_at(run.realized, points),
        "cumulative_expected_reward": _cum_at(run.expected, points),
        "cumulative_oracle_in_place": _cum_at(run.best, points),
        "cumulative_regret_in_place": _cum_at(run.best - run.expected, points),
    }
    if oracle is not None and oracle is not run:
        regret["cumulative_oracle_run_reward"] = _cum_at(oracle.realized, points)
        regret["cumulative_regret_vs_oracle_run"] = _cum_at(oracle.realized - run.realized, points)
        totals["share_of_oracle_shaped_reward"] = round(float(run.realized.sum() / oracle.realized.sum()), 4)
        totals["share_of_oracle_expected_reward"] = round(float(run.expected.sum() / oracle.expected.sum()), 4)
    days = _day_index(run)
    nd = int(days.max()) + 1
    per_day = {
        "decisions": np.bincount(days, minlength=nd).tolist(),
        "shaped_reward": [round(float(x), 3) for x in np.bincount(days, run.realized, nd)],
        "expected_reward": [round(float(x), 3) for x in np.bincount(days, run.expected, nd)],
        "sends": np.bincount(days, run.send.astype(float), nd).astype(int).tolist(),
        "clicks": np.bincount(days, o["click"].astype(float), nd).astype(int).tolist(),
        "unsubscribes": np.bincount(days, o["unsubscribe"].astype(float), nd).astype(int).tolist(),
    }
    segs = [s.name for s in w.scenario.spec.segments]
    seg_of = w.population.segment[w.ask_person]
    last = np.arange(n) >= int(n * 0.75)
    per_segment = {}
    for g, name in enumerate(segs):
        m = seg_of == g
        arms, counts = np.unique(run.arm[m & last], return_counts=True)
        top = sorted(zip(counts, arms), reverse=True)[:3]
        per_segment[name] = {
            "decisions": int(m.sum()),
            "shaped_reward_per_decision": round(float(run.realized[m].mean()) if m.any() else 0.0, 6),
            "top_arms_last_quarter": [{"arm": w.policy.arms[a].id, "share": round(c / max((m & last).sum(), 1), 4)}
                                      for c, a in top],
        }
    modes = {}
    for code, name in enumerate(MODES):
        c = int((run.mode_code == code).sum())
        if c:
            modes[name] = c
    metrics = {
        "scenario": w.scenario.name,
        "scenario_file": _rel(w.scenario.path),
        "policy_file": _rel(w.policy.path),
        "decision_maker": run.maker,
        "mode": run.mode,
        "seed": w.seed,
        "people": w.people,
        "days": w.days,
        "warmup_days": w.scenario.spec.warmup_days,
        "warmup_decisions": run.warmup_decisions,
        "wall_seconds": round(run.wall_seconds, 2),
        "decisions_per_second": round(run.decisions_per_second, 1),
        "seconds_by_part": run.seconds,
        "totals": totals,
        "guardrail_violations": {
            "total": int((run.violations > 0).sum()) + run.warmup_violations,
            "during_warmup": run.warmup_violations,
            "by_rule": run.violation_reasons,
            "examples": run.violation_examples,
            "rules_checked": run.rules_checked,
            "guardrails_not_checked": run.unchecked,
        },
        "modes": modes,
        "regret": regret,
        "per_day": per_day,
        "segments": per_segment,
    }
    if w.scenario.spec.drift and oracle is not None and oracle is not run:
        metrics["drift"] = drift_recovery(run, oracle)
    return metrics


def drift_recovery(run, oracle, threshold: float = 0.8, smooth: int = 3) -> list[dict]:
    """For each drift: the drifted segment's expected shaped reward per day, as a share of the
    oracle's on the same asks, and how many decisions after the change it takes until the share
    over the trailing `smooth` days is at least `threshold` and stays so to the end of the run."""
    w = run.world
    start = w.scenario.spec.start.timestamp()
    days = _day_index(run)
    seg_of = w.population.segment[w.ask_person]
    out = []
    for d in w.scenario.spec.drift:
        g = w.truth.segment_index[d.segment]
        m = seg_of == g
        nd = int(days.max()) + 1
        mine = np.bincount(days[m], run.expected[m], nd)
        best = np.bincount(days[m], oracle.expected[m], nd)
        ratio = np.where(best > 0, mine / np.where(best > 0, best, 1), np.nan)
        change_day = int(d.at // DAY)
        at = start + d.at
        first_after = int(np.searchsorted(w.ask_t, at))
        # a trailing window of `smooth` days (not reaching back before the change), so that one
        # day's sampling noise neither hides a recovery nor fakes one
        trailing = np.full(nd, np.nan)
        for day in range(change_day, nd):
            lo = max(change_day, day - smooth + 1)
            b = best[lo:day + 1].sum()
            trailing[day] = mine[lo:day + 1].sum() / b if b > 0 else np.nan
        recovered_day = None
        for day in range(change_day, nd):
            if np.all(np.nan_to_num(trailing[day:], nan=1.0) >= threshold):
                recovered_day = day
                break
        if recovered_day is None:
            decisions = None
        else:
            end_of_day = start + (recovered_day + 1) * DAY  # the whole day must have reached it
            decisions = int(np.searchsorted(w.ask_t, end_of_day)) - first_after
        before = slice(max(0, change_day - 3), change_day)
        out.append({
            "segment": d.segment,
            "at_day": d.at / DAY,
            "threshold": threshold,
            "daily_share_of_oracle": [None if np.isnan(x) else round(float(x), 4) for x in ratio],
            "trailing_share_of_oracle": [None if np.isnan(x) else round(float(x), 4) for x in trailing],
            "trailing_days": smooth,
            "share_before_change_last_3_days": round(float(mine[before].sum() / best[before].sum()), 4),
            "share_day_after_change": None if np.isnan(ratio[change_day]) else round(float(ratio[change_day]), 4),
            "recovered_by_end_of_day": recovered_day,
            "decisions_to_recover": decisions,
            "segment_decisions_to_recover": None if recovered_day is None else
            int((m & (w.ask_t >= at) & (w.ask_t < start + (recovered_day + 1) * DAY)).sum()),
        })
    return out


# -- plots ------------------------------------------------------------------------------------

def _plt():
    # imported when a plot is drawn, not with the package: matplotlib takes most of a second to import,
    # and the command line, the tests and the metrics need none of it
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_run(run, metrics: dict, out: Path, oracle=None) -> list[str]:
    plt = _plt()
    w = run.world
    days_x = (w.ask_t - w.ask_t[0]) / DAY
    files = []

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(days_x, np.cumsum(run.realized), label=f"{run.maker} (realized)")
    ax.plot(days_x, np.cumsum(run.best), "--", label="oracle in place (expected)")
    if oracle is not None and oracle is not run:
        ax.plot(days_x, np.cumsum(oracle.realized), label="oracle run (realized)")
    for d in w.scenario.spec.drift:
        ax.axvline(d.at / DAY, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("day")
    ax.set_ylabel("cumulative shaped reward")
    ax.set_title(f"{w.scenario.name}: cumulative shaped reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cumulative_reward.png", dpi=100)
    plt.close(fig)
    files.append("cumulative_reward.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(days_x, 1000 * np.cumsum(run.outcomes["unsubscribe"]) / w.people, label="unsubscribes")
    ax.plot(days_x, 1000 * np.cumsum(run.outcomes["complaint"]) / w.people, label="complaints")
    ax.set_xlabel("day")
    ax.set_ylabel("per 1,000 people (cumulative)")
    ax.set_title(f"{w.scenario.name}: unsubscribe rate ({run.maker})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "unsubscribe_rate.png", dpi=100)
    plt.close(fig)
    files.append("unsubscribe_rate.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    per_day = np.array(metrics["per_day"]["sends"], dtype=float)
    weekly = np.convolve(per_day, np.ones(7), mode="full")[:len(per_day)] / w.people
    ax.plot(np.arange(len(per_day)) + 1, weekly, label="contacts per person, trailing 7 days")
    caps = [c for c in w.policy.spec.guardrails.caps if c.channel == "*" and abs(c.window - 7 * DAY) < 1]
    for c in caps:
        ax.axhline(c.max, color="red", ls=":", label=f"cap: {c.max} per week per person")
    ax.set_xlabel("day")
    ax.set_ylabel("contacts per person")
    ax.set_title(f"{w.scenario.name}: contact pressure ({run.maker})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "contacts_per_person.png", dpi=100)
    plt.close(fig)
    files.append("contacts_per_person.png")

    segs = [s.name for s in w.scenario.spec.segments]
    seg_of = w.population.segment[w.ask_person]
    days = _day_index(run)
    nd = int(days.max()) + 1
    fig, axes = plt.subplots(len(segs), 1, figsize=(8, 2.6 * len(segs)), sharex=True, squeeze=False)
    for g, name in enumerate(segs):
        ax = axes[g][0]
        m = seg_of == g
        arms, counts = np.unique(run.arm[m], return_counts=True)
        top = [a for _, a in sorted(zip(counts, arms), reverse=True)[:6]]
        total = np.maximum(np.bincount(days[m], minlength=nd), 1)
        shares, labels = [], []
        for a in top:
            shares.append(np.bincount(days[m & (run.arm == a)], minlength=nd) / total)
            labels.append(w.policy.arms[a].id)
        shares.append(1 - np.sum(shares, axis=0))
        labels.append("other arms")
        ax.stackplot(np.arange(nd), *shares, labels=labels)
        for d in w.scenario.spec.drift:
            if d.segment == name:
                ax.axvline(d.at / DAY, color="black", lw=1, ls=":")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share")
        ax.set_title(f"{name}: arm share per day ({run.maker})", fontsize=9)
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes[-1][0].set_xlabel("day")
    fig.tight_layout()
    fig.savefig(out / "arm_share.png", dpi=100)
    plt.close(fig)
    files.append("arm_share.png")
    return files


def write_run(run, metrics: dict, out: Path, oracle=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = plot_run(run, metrics, out, oracle)
    t = metrics["totals"]
    v = metrics["guardrail_violations"]
    lines = [
        f"# Simulation: {metrics['scenario']} / {metrics['decision_maker']}",
        "",
        f"Scenario `{metrics['scenario_file']}`, policy `{metrics['policy_file']}`, seed {metrics['seed']}, "
        f"{metrics['people']:,} people over {metrics['days']:g} days (after {metrics['warmup_days']} days of warm-up, "
        f"{metrics['warmup_decisions']:,} decisions, not measured), {t['decisions']:,} decisions, "
        f"{metrics['mode']}, {metrics['wall_seconds']:.1f} s ({metrics['decisions_per_second']:.0f} decisions/s).",
        "",
        "| measure | value |", "| --- | --- |",
        f"| shaped reward (realized) | {t['shaped_reward']:.1f} ({t['shaped_reward_per_decision']:.4f} per decision) |",
        f"| expected shaped reward of the choices | {t['expected_shaped_reward']:.1f} |",
        f"| oracle in place (best allowed arm, expected) | {t['oracle_in_place_expected_reward']:.1f} |",
    ]
    if "share_of_oracle_shaped_reward" in t:
        lines.append(f"| share of the oracle run's shaped reward | {100 * t['share_of_oracle_shaped_reward']:.1f}% |")
    lines += [
        f"| sends / holds | {t['sends']:,} / {t['holds']:,} |",
        f"| opens, clicks, conversions | {t['opens']:,}, {t['clicks']:,}, {t['conversions']:,} |",
        f"| unsubscribes, complaints | {t['unsubscribes']:,}, {t['complaints']:,} |",
        f"| unsubscribes per person; per 1,000 sends | {t['unsubscribe_rate']:.4f}; {t['unsubscribes_per_1000_sends']:.2f} |",
        f"| contacts per person-week | {t['contacts_per_person_week']:.2f} |",
        f"| guardrail violations (independent check) | {v['total']} |",
        f"| modes | {', '.join(f'{k} {c:,}' for k, c in metrics['modes'].items())} |",
        "",
    ]
    if v["guardrails_not_checked"]:
        lines += [f"Guardrails the simulator does not check yet: {', '.join(v['guardrails_not_checked'])}.", ""]
    if v["examples"]:
        lines += ["Violations (first ones):", ""] + [f"- {e}" for e in v["examples"]] + [""]
    lines += ["## Cumulative shaped reward", "",
              "Realized shaped reward against the oracle: the dashed line is the best allowed arm's expected "
              "reward at each of this run's moments.", "", "![cumulative reward](cumulative_reward.png)", "",
              "## Unsubscribes", "", "![unsubscribe rate](unsubscribe_rate.png)", "",
              "## Contacts per person", "", "![contacts per person](contacts_per_person.png)", "",
              "## What each segment gets", ""]
    for name, s in metrics["segments"].items():
        top = ", ".join(f"`{a['arm']}` {100 * a['share']:.0f}%" for a in s["top_arms_last_quarter"])
        lines.append(f"- **{name}** ({s['decisions']:,} decisions, {s['shaped_reward_per_decision']:.4f} per "
                     f"decision); last quarter: {top}")
    lines += ["", "![arm share per segment](arm_share.png)", ""]
    for d in metrics.get("drift", []):
        lines += [f"## Drift of {d['segment']} on day {d['at_day']:g}", "",
                  f"Share of the oracle's expected reward in that segment: {100 * d['share_before_change_last_3_days']:.0f}% "
                  f"over the 3 days before the change, "
                  f"{_pct(d['share_day_after_change'])} "
                  f"on the day of the change; back to at least {100 * d['threshold']:.0f}% for good "
                  + (f"after {d['decisions_to_recover']:,} decisions ({d['segment_decisions_to_recover']:,} of "
                     f"that segment), by the end of day {d['recovered_by_end_of_day']}."
                     if d["decisions_to_recover"] is not None else "**not within the run**."), ""]
    (out / "report.md").write_text("\n".join(lines))
    assert plots


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def compare_report(runs: Sequence, metrics: dict, out: Path) -> dict:
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    oracle = metrics.get("oracle")
    rows = []
    for r in runs:
        t = metrics[r.maker]["totals"]
        share = (t["shaped_reward"] / oracle["totals"]["shaped_reward"]) if oracle else None
        rows.append({
            "decision_maker": r.maker, "shaped_reward": t["shaped_reward"],
            "share_of_oracle": None if share is None else round(share, 4),
            "clicks": t["clicks"], "conversions": t["conversions"], "unsubscribes": t["unsubscribes"],
            "complaints": t["complaints"], "unsubscribe_rate": t["unsubscribe_rate"],
            "contacts_per_person_week": t["contacts_per_person_week"],
            "violations": metrics[r.maker]["guardrail_violations"]["total"],
            "decisions_per_second": metrics[r.maker]["decisions_per_second"],
        })
    w = runs[0].world
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    days_x = (w.ask_t - w.ask_t[0]) / DAY
    for r in runs:
        axes[0].plot(days_x, np.cumsum(r.realized), label=r.maker)
        axes[1].plot(days_x, 1000 * np.cumsum(r.outcomes["unsubscribe"]) / w.people, label=r.maker)
    for d in w.scenario.spec.drift:
        axes[0].axvline(d.at / DAY, color="grey", lw=0.8, ls=":")
    axes[0].set_title(f"{w.scenario.name}: cumulative shaped reward")
    axes[1].set_title("unsubscribes per 1,000 people (cumulative)")
    for ax in axes:
        ax.set_xlabel("day")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=100)
    plt.close(fig)
    head = ("| decision maker | shaped reward | share of oracle | clicks | conversions | unsubscribes | "
            "complaints | unsubscribes per person | contacts per person-week | violations | decisions/s |")
    lines = [f"# Comparison: {w.scenario.name}", "",
             f"{w.people:,} people, {len(runs[0].arm):,} decisions, seed {w.seed}; every decision maker faces "
             "the same people, at the same moments, with the same random draws, behind the same guardrails.", "",
             head, "| " + " | ".join(["---"] * 11) + " |"]
    for row in rows:
        share = "" if row["share_of_oracle"] is None else f"{100 * row['share_of_oracle']:.1f}%"
        lines.append(f"| {row['decision_maker']} | {row['shaped_reward']:.1f} | {share} | {row['clicks']:,} | "
                     f"{row['conversions']:,} | {row['unsubscribes']:,} | {row['complaints']:,} | "
                     f"{row['unsubscribe_rate']:.4f} | {row['contacts_per_person_week']:.2f} | {row['violations']} | "
                     f"{row['decisions_per_second']:.0f} |")
    lines += ["", "![comparison](comparison.png)", ""]
    lines += [f"Per decision maker: [{r.maker}]({r.maker}/report.md)" for r in runs]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    table = {"scenario": w.scenario.name, "rows": rows}
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
    return table
