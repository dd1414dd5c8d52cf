"""How a simulation run is shown: plots, report.md, and the comparison of several decision
makers (comparison.md, comparison.json, comparison.png). The figures come from metrics.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from service.simulation.loop import Run
from service.simulation.metrics import DAY, day_index


# -- plots ------------------------------------------------------------------------------------

def _plt():
    # imported when a plot is drawn, not with the package: matplotlib takes most of a second to import,
    # and the command line, the tests and the metrics need none of it
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def plot_run(run: Run, metrics: dict, out: Path, oracle: Run | None = None) -> list[str]:
    """The run's plots, written to `out`; returns their file names."""
    plt = _plt()
    return [_plot_reward(plt, run, out, oracle), _plot_unsubscribes(plt, run, out),
            _plot_contacts(plt, run, metrics, out), _plot_arm_share(plt, run, out)]


def _plot_reward(plt, run: Run, out: Path, oracle: Run | None) -> str:
    w = run.world
    days_x = (w.ask_t - w.ask_t[0]) / DAY
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
    return _save(plt, fig, out, "cumulative_reward.png")


def _plot_unsubscribes(plt, run: Run, out: Path) -> str:
    w = run.world
    days_x = (w.ask_t - w.ask_t[0]) / DAY
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(days_x, 1000 * np.cumsum(run.outcomes["unsubscribe"]) / w.people, label="unsubscribes")
    ax.plot(days_x, 1000 * np.cumsum(run.outcomes["complaint"]) / w.people, label="complaints")
    ax.set_xlabel("day")
    ax.set_ylabel("per 1,000 people (cumulative)")
    ax.set_title(f"{w.scenario.name}: unsubscribe rate ({run.maker})")
    ax.legend()
    return _save(plt, fig, out, "unsubscribe_rate.png")


def _plot_contacts(plt, run: Run, metrics: dict, out: Path) -> str:
    w = run.world
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
    return _save(plt, fig, out, "contacts_per_person.png")


def _plot_arm_share(plt, run: Run, out: Path) -> str:
    """Per segment, the daily share of its six most chosen arms."""
    w = run.world
    segs = [s.name for s in w.scenario.spec.segments]
    seg_of = w.population.segment[w.ask_person]
    days = day_index(run)
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
    return _save(plt, fig, out, "arm_share.png")


def write_run(run: Run, metrics: dict, out: Path, oracle: Run | None = None) -> None:
    """metrics.json, the plots and report.md of one run, in `out`."""
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


def compare_report(runs: Sequence[Run], metrics: dict, out: Path) -> dict:
    """comparison.md, comparison.json and comparison.png of the runs of one comparison."""
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
    lines = [f"# Comparison: {w.scenario.name}", "",
             f"{w.people:,} people, {len(runs[0].arm):,} decisions, seed {w.seed}; every decision maker faces "
             "the same people, at the same moments, with the same random draws, behind the same guardrails.", ""]
    lines += comparison_table(rows)
    lines += ["", "![comparison](comparison.png)", ""]
    lines += [f"Per decision maker: [{r.maker}]({r.maker}/report.md)" for r in runs]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    table = {"scenario": w.scenario.name, "rows": rows}
    (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
    return table


def comparison_table(rows: list[dict], whole: bool = False) -> list[str]:
    """The comparison's rows as a Markdown table; `whole` rounds shaped reward and decisions per
    second to whole numbers with thousands separators (the long runs of docs/quality.md)."""
    lines = ["| decision maker | shaped reward | share of oracle | clicks | conversions | unsubscribes | "
             "complaints | unsubscribes per person | contacts per person-week | violations | decisions/s |",
             "| " + " | ".join(["---"] * 11) + " |"]
    reward, speed = (",.0f", ",.0f") if whole else (".1f", ".0f")
    for row in rows:
        share = "" if row["share_of_oracle"] is None else f"{100 * row['share_of_oracle']:.1f}%"
        lines.append(f"| {row['decision_maker']} | {row['shaped_reward']:{reward}} | {share} | {row['clicks']:,} | "
                     f"{row['conversions']:,} | {row['unsubscribes']:,} | {row['complaints']:,} | "
                     f"{row['unsubscribe_rate']:.4f} | {row['contacts_per_person_week']:.2f} | "
                     f"{row['violations']} | {row['decisions_per_second']:{speed}} |")
    return lines


def learned_summary(metrics: dict) -> str:
    """What a run learned, in a few lines: each segment's most chosen arm over the last quarter
    (and how often it held), the reward per decision quarter by quarter, the model version."""
    learner = metrics.get("model_version") is not None
    lines = [("what it learned -- " if learner else "") + "each segment's most chosen arm over the last quarter of the run:"]
    for name, seg in metrics["segments"].items():
        top = seg["top_arms_last_quarter"]
        sends = [a for a in top if a["arm"] != "hold"]
        hold = seg.get("hold_share_last_quarter")
        favourite = f"{sends[0]['arm']:<34} {_pct(sends[0]['share']):>4} of its decisions" if sends else "(no send)"
        lines.append(f"  {name:<16} {favourite}, hold {_pct(hold)}")
    q = metrics["quarters"]
    trend = " -> ".join(f"{round(x, 3) + 0.0:.3f}" for x in q["realized_per_decision"] if x is not None)
    lines.append(f"shaped reward per decision, quarter by quarter: {trend}")
    if learner:
        lines.append(f"model version now served: {metrics['model_version']}")
    return "\n".join(lines)
