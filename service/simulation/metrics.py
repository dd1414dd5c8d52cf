"""What a simulation run measured: the figures of metrics.json (docs/simulation.md).

Shaped reward is always the scenario policy's own reward (weights, fatigue term, default),
applied to everything the simulated person did, whenever it happened: the true consequences of
the decisions, not what the learner was told within its reward window. "Expected" figures are
the truth's expected shaped reward of the chosen arm (the same quantity without the sampling
noise); "oracle in place" is the expected shaped reward of the best arm the simulator's own rules
allowed at that moment, for this run's own person states.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from service.decision.explain import MODES
from service.simulation.loop import Run

DAY = 86400.0


def _rel(path: str) -> str:
    """A path relative to the working directory when it is below it (reports move with the repo)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def day_index(run: Run) -> np.ndarray:
    """The day of the run (0 on) of each measured ask."""
    w = run.world
    return ((w.ask_t - w.scenario.spec.start.timestamp()) // DAY).astype(int).clip(0)


def _checkpoints(n: int, k: int = 50) -> np.ndarray:
    return np.unique(np.linspace(0, n, k + 1).astype(int)[1:]) - 1


def _cum_at(values: np.ndarray, points: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in np.cumsum(values)[points]]


def run_metrics(run: Run, oracle: Run | None = None) -> dict:
    """Everything metrics.json holds about one run; with the oracle's run of the same comparison,
    the shares of its reward, the regret against it, and the recovery after each drift."""
    w = run.world
    against = oracle if oracle is not None and oracle is not run else None
    totals = _totals(run, against)
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
        "modes": _modes(run),
        "regret": _regret(run, against),
        "per_day": _per_day(run),
        "segments": _segments(run),
        "quarters": _quarters(run),
        "model_version": run.model_version,
    }
    if w.scenario.spec.drift and against is not None:
        metrics["drift"] = drift_recovery(run, against)
    return metrics


def _totals(run: Run, oracle: Run | None) -> dict:
    w, o = run.world, run.outcomes
    n = len(run.arm)
    weeks = w.days / 7.0
    sends = int(run.send.sum())
    holdout = run.mode_code == MODES.index("holdout")
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
    if oracle is not None:
        totals["share_of_oracle_shaped_reward"] = round(float(run.realized.sum() / oracle.realized.sum()), 4)
        totals["share_of_oracle_expected_reward"] = round(float(run.expected.sum() / oracle.expected.sum()), 4)
    return totals


def _regret(run: Run, oracle: Run | None) -> dict:
    """Cumulative figures at 50 checkpoints of the run."""
    w = run.world
    points = _checkpoints(len(run.arm))
    regret = {
        "decision": [int(p) + 1 for p in points],
        "day": [round(float((w.ask_t[p] - w.ask_t[0]) / DAY), 3) for p in points],
        "cumulative_shaped_reward": _cum_at(run.realized, points),
        "cumulative_expected_reward": _cum_at(run.expected, points),
        "cumulative_oracle_in_place": _cum_at(run.best, points),
        "cumulative_regret_in_place": _cum_at(run.best - run.expected, points),
    }
    if oracle is not None:
        regret["cumulative_oracle_run_reward"] = _cum_at(oracle.realized, points)
        regret["cumulative_regret_vs_oracle_run"] = _cum_at(oracle.realized - run.realized, points)
    return regret


def _per_day(run: Run) -> dict:
    days = day_index(run)
    nd = int(days.max()) + 1
    o = run.outcomes
    return {
        "decisions": np.bincount(days, minlength=nd).tolist(),
        "shaped_reward": [round(float(x), 3) for x in np.bincount(days, run.realized, nd)],
        "expected_reward": [round(float(x), 3) for x in np.bincount(days, run.expected, nd)],
        "sends": np.bincount(days, run.send.astype(float), nd).astype(int).tolist(),
        "clicks": np.bincount(days, o["click"].astype(float), nd).astype(int).tolist(),
        "unsubscribes": np.bincount(days, o["unsubscribe"].astype(float), nd).astype(int).tolist(),
    }


def _quarters(run: Run) -> dict:
    """Shaped reward per decision in each quarter of the run, realized and expected: the trend."""
    parts = np.array_split(np.arange(len(run.arm)), 4)
    return {"realized_per_decision": [round(float(run.realized[p].mean()), 4) if len(p) else None for p in parts],
            "expected_per_decision": [round(float(run.expected[p].mean()), 4) if len(p) else None for p in parts]}


def _segments(run: Run) -> dict:
    """Per segment: decisions, reward per decision, and its top arms over the last quarter."""
    w = run.world
    n = len(run.arm)
    seg_of = w.population.segment[w.ask_person]
    last = np.arange(n) >= int(n * 0.75)
    per_segment = {}
    for g, name in enumerate(s.name for s in w.scenario.spec.segments):
        m = seg_of == g
        arms, counts = np.unique(run.arm[m & last], return_counts=True)
        top = sorted(zip(counts, arms), reverse=True)[:3]
        per_segment[name] = {
            "decisions": int(m.sum()),
            "shaped_reward_per_decision": round(float(run.realized[m].mean()) if m.any() else 0.0, 6),
            "top_arms_last_quarter": [{"arm": w.policy.arms[a].id, "share": round(c / max((m & last).sum(), 1), 4)}
                                      for c, a in top],
            "hold_share_last_quarter": round(float((~run.send[m & last]).mean()) if (m & last).any() else 0.0, 4),
        }
    return per_segment


def _modes(run: Run) -> dict[str, int]:
    """How many decisions each mode made (the modes that made any)."""
    modes = {}
    for code, name in enumerate(MODES):
        c = int((run.mode_code == code).sum())
        if c:
            modes[name] = c
    return modes


def drift_recovery(run: Run, oracle: Run, threshold: float = 0.8, smooth: int = 3) -> list[dict]:
    """For each drift: the drifted segment's expected shaped reward per day, as a share of the
    oracle's on the same asks, and how many decisions after the change it takes until the share
    over the trailing `smooth` days is at least `threshold` and stays so to the end of the run."""
    w = run.world
    start = w.scenario.spec.start.timestamp()
    days = day_index(run)
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
