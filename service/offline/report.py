"""The evaluation report: `report.md`, `estimates.png` (every target's estimates with their
intervals) and `evaluation.json` in one directory."""
from __future__ import annotations

import json
from pathlib import Path

from service.offline.evaluate import Evaluation


def write_report(result: Evaluation, out_dir: str | Path, command: str | None = None) -> Path:
    """`report.md`, `estimates.png` and `evaluation.json` in `out_dir`."""
    import matplotlib  # heavy (about a second): imported only when a report is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result.as_dict(), indent=2, default=float))
    targets = list(dict.fromkeys(r["target"] for r in result.rows))
    ests = list(dict.fromkeys(r["estimator"] for r in result.rows))
    fig, ax = plt.subplots(figsize=(8, 0.6 + 0.45 * len(targets) * len(ests)))
    y, labels = 0, []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ti, t in enumerate(targets):
        for r in (r for r in result.rows if r["target"] == t):
            ax.errorbar([r["value"]], [y], xerr=[[r["value"] - r["lo"]], [r["hi"] - r["value"]]], fmt="o",
                        color=colors[ti % len(colors)], capsize=3)
            labels.append(f"{t} · {r['estimator']}")
            y += 1
        y += 0.5
    ax.axvline(result.logged_mean_reward, color="grey", ls=":", label="logged mean reward")
    ax.set_yticks([i for i in _ticks(targets, ests, result.rows)], labels)
    ax.invert_yaxis()
    ax.set_xlabel("estimated value (mean shaped reward per decision), 95% interval")
    ax.set_title(f"{result.policy}: {result.n} decisions")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "estimates.png", dpi=110)
    plt.close(fig)
    md = [f"# Off-policy evaluation: {result.policy}", ""]
    if command:
        md += ["```", command, "```", ""]
    md += [f"- decisions: {result.n} final decisions"
           + (f" from {result.since}" if result.since else "") + (f" until {result.until}" if result.until else ""),
           f"- candidate: **{result.candidate}**; reference: {result.reference}",
           f"- logged mean shaped reward: {result.logged_mean_reward:.4f}", ""]
    md += ["| target | estimator | value | 95% interval | n | ESS |", "| --- | --- | ---: | --- | ---: | ---: |"]
    for r in result.rows:
        md.append(f"| {r['target']} | {r['estimator']} | {r['value']:.4f} | [{r['lo']:.4f}, {r['hi']:.4f}] "
                  f"| {r['n']} | {r['ess']:.1f} |")
    if result.lift:
        md += ["", f"Lift of {result.candidate} over {result.reference} (DR, paired): "
                   f"**{result.lift['value']:+.4f}** [{result.lift['lo']:+.4f}, {result.lift['hi']:+.4f}]"]
    for name in ("unsubscribe", "complaint"):
        u = getattr(result, name)
        if u:
            md.append(f"\n{name.capitalize()} rate (SNIPS): candidate {u['candidate']:.4f}, reference "
                      f"{u['reference']:.4f}; rise {u['rise']:+.4f}, upper bound {u['rise_hi']:+.4f} "
                      f"({u['events']} {name} events in the log)")
    md += ["", "ESS is Kish's effective sample size of the importance weights: how many on-policy decisions "
               "the log is worth for that target.", "", "![estimates](estimates.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    return out / "report.md"


def _ticks(targets, ests, rows):
    y = 0.0
    for t in targets:
        for _ in (r for r in rows if r["target"] == t):
            yield y
            y += 1
        y += 0.5
