#!/usr/bin/env python
"""The circuit breaker in simulation (issue 19 item 4): what it saves when a content turns
offensive, and that it never trips where nothing changes.

    .venv/bin/python scripts/breaker_study.py            # the study (about half an hour on 2 cores,
                                                         # two runs at a time), to --out (out/breaker-study)
    .venv/bin/python scripts/breaker_study.py --docs     # the same, and rewrites docs/quality.md's
                                                         # "Circuit breaker" section
    .venv/bin/python scripts/breaker_study.py --small    # small runs, to see that it works (a few minutes)
    .venv/bin/python scripts/breaker_study.py --render-only [--docs]   # re-render from --out's breaker.json

(a) `offensive` (examples/scenarios/offensive.toml: `standard`, with one content turning offensive
    on day 14), 50,000 decisions: Tactful with the scenario policy's breaker, the same with the
    breaker judging its whole window only (`spans = 1`, as before the spans), and the same policy
    without its `[safety]` table (`no-breaker`), on the same world: the same people, moments and
    draws, and the same event ids, so the runs decide alike until a breaker first acts. From the
    breaker's own events (store.safety_events): decisions, sends and unsubscribes from the incident
    until the trip; then unsubscribes over the run and the difference saved.
(b) `standard` over `--seeds` seeds (20) of 30,000 decisions each, Tactful with the breaker: every
    trip is a false trip (nothing changes in `standard`). 30,000 decisions (1,500 people) give each
    content a median of about 300 sends per 7-day window, over the breaker's `min_sends` of 200, so
    most contents are judged through most of the run (the figures say how many). Beside the count,
    how close the breaker came -- each watched rate's lower bound over its threshold at each day's
    end, over the trailing window and its spans.

Exit status 1 when (b) saw any trip, or any run a guardrail violation.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.learning.breaker import judge, label, spans, tally, targets  # noqa: E402
from service.policy import parse_policy  # noqa: E402
from service.simulation.run import run_maker  # noqa: E402
from service.simulation.world import build_world  # noqa: E402
from service.store import open_store  # noqa: E402

SCENARIOS = ROOT / "examples" / "scenarios"
SECTION = "## Circuit breaker"  # the section of docs/quality.md this script writes (quality.py keeps it)
DAY = 86400.0
FULL = {"offensive_decisions": 50_000, "standard_decisions": 30_000, "seeds": 20}
SMALL = {"offensive_decisions": 8_000, "standard_decisions": 4_000, "seeds": 2}


def load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def window_only(world):
    """The same world, its policy's breaker judging the whole window only (`spans = 1`: the
    breaker before the spans)."""
    data = json.loads(json.dumps(world.policy_data, default=str))
    data["safety"] = dict(data["safety"], spans=1)
    policy = parse_policy(data, f"{world.policy.path} (spans = 1)", default_name=Path(world.policy.path).stem)
    return dataclasses.replace(world, policy=policy, policy_data=data)


def one_run(world, maker: str, tmp: Path, tag: str = "") -> tuple:
    """A run with its store kept: the run and the breaker's events, oldest first."""
    db = tmp / f"{world.scenario.name}-{world.seed}-{maker}{tag}.db"
    run = run_maker(world, maker, monotonic=time.monotonic, db=str(db), progress=False)
    store = open_store(str(db))
    try:
        events = list(reversed(store.safety_events(world.policy.name, 100_000)))
    finally:
        store.close()
    db.unlink()
    return run, events


def contents_of(world, run) -> np.ndarray:
    ids = np.array([a.content.id if a.content else "" for a in world.policy.arms])
    return ids[run.arm]


def totals(world, run, since: float) -> dict:
    after = world.ask_t >= since
    out = {"decisions": int(len(run.arm)), "sends": int(run.send.sum()), "shaped_reward": round(float(run.realized.sum()), 1),
           "violations": int((run.violations > 0).sum())}
    for k in ("click", "unsubscribe", "complaint"):
        out[k + "s"] = int(run.outcomes[k].sum())
        out[k + "s_from_incident"] = int(run.outcomes[k][after].sum())
    return out


RUNS = {"breaker": "with the breaker", "window-only": "the breaker on its whole window only (spans = 1)",
        "no-breaker": "without a breaker"}


def trip_figures(world, run, events: list[dict], t_inc: float, content: str) -> dict | None:
    """From the incident to the breaker's first trip on the offending content: how long, how many
    decisions, sends of it and what they brought."""
    trip = next((e for e in events if e["kind"] == "trip" and e["target"] == f"content:{content}"
                 and e["at"] >= t_inc), None)
    if trip is None:
        return None
    span = (world.ask_t >= t_inc) & (world.ask_t < trip["at"])
    sent = span & run.send & (contents_of(world, run) == content)
    return {"day": round((trip["at"] - world.truth.start) / DAY, 3), "hours_after_incident": round((trip["at"] - t_inc) / 3600, 1),
            "decisions": int(span.sum()), "sends": int((span & run.send).sum()), "content_sends": int(sent.sum()),
            "content_unsubscribes": int(run.outcomes["unsubscribe"][sent].sum()),
            "content_complaints": int(run.outcomes["complaint"][sent].sum()),
            "unsubscribes": int(run.outcomes["unsubscribe"][span & run.send].sum()), "detail": trip["reason"]}


def offensive_run(variant: str, decisions: int, seed: int | None, tmp: str) -> dict:
    """One run of (a): `breaker`, `window-only` or `no-breaker`, on the offensive world; its figures,
    and its decisions (to check that the runs decide alike until a breaker acts)."""
    world = build_world(SCENARIOS / "offensive.toml", decisions=decisions, seed=seed)
    incident = world.scenario.spec.incidents[0]
    t_inc = world.truth.start + incident.at
    r, events = one_run(window_only(world) if variant == "window-only" else world,
                        "no-breaker" if variant == "no-breaker" else "tactful", Path(tmp), f"-{variant}")
    days = (world.ask_t - world.truth.start) / DAY
    sent = r.send & (contents_of(world, r) == incident.content)
    return totals(world, r, t_inc) | {
        "world": {"seed": world.seed, "decisions": decisions, "people": world.people, "content": incident.content,
                  "incident_day": incident.at / DAY, "unsubscribe_shift": incident.unsubscribe,
                  "complaint_shift": incident.complaint},
        "arm": r.arm, "first_event_at": min((e["at"] for e in events), default=np.inf), "ask_t": world.ask_t,
        "events": [{"day": round((e["at"] - world.truth.start) / DAY, 3), "kind": e["kind"], "target": e["target"],
                    "detail": e["reason"]} for e in events],
        "false_trips_before_incident": sum(1 for e in events if e["kind"] == "trip" and e["at"] < t_inc),
        "content_sends_by_week": [int(sent[(days >= w) & (days < w + 7)].sum()) for w in (0, 7, 14, 21)],
        "content_unsubscribes_from_incident": int(r.outcomes["unsubscribe"][sent & (world.ask_t >= t_inc)].sum()),
        "trip": trip_figures(world, r, events, t_inc, incident.content)}


def offensive(runs: dict[str, dict]) -> dict:
    """(a) from its three runs: the figures, what each breaker saved, and whether the runs decided
    alike until the breaker first acted."""
    assert not runs["no-breaker"]["events"], "a policy without [safety] has no breaker events"
    before = runs["breaker"]["ask_t"] < runs["breaker"]["first_event_at"]
    out = runs["breaker"]["world"] | {
        "same_decisions_until_the_first_event": bool(np.array_equal(runs["breaker"]["arm"][before],
                                                                    runs["no-breaker"]["arm"][before])),
        "runs": {name: {k: v for k, v in r.items() if k not in ("world", "arm", "ask_t", "first_event_at")}
                 for name, r in runs.items()}}
    nb = out["runs"]["no-breaker"]
    out["saved"] = {name: {k: nb[k] - out["runs"][name][k] for k in
                           ("unsubscribes", "unsubscribes_from_incident", "complaints", "complaints_from_incident",
                            "clicks", "shaped_reward")} for name in ("breaker", "window-only")}
    return out


def closeness(world, run) -> dict:
    """How close the breaker came in a run: at each day's end from the end of the first week, over
    the trailing window and its latest spans (all outcomes counted, as they arrived by the end: if
    anything more than the breaker saw), every watched rate's lower bound over its threshold; the
    worst (highest) ratio with where and when it was; and the sends per content per window and
    the share of (window, target) pairs with enough sends to be judged."""
    s = world.policy.spec.safety
    arm_ids = np.array([a.id for a in world.policy.arms])
    days = (world.ask_t - world.truth.start) / DAY
    worst = {"ratio": 0.0}
    content_sends, judged, windows = [], 0, 0

    def window_counts(start: float, end: float) -> dict:
        m = run.send & (days >= start) & (days < end)
        per_arm = {}
        for a in np.unique(run.arm[m]):
            k = m & (run.arm == a)
            per_arm[arm_ids[a]] = (int(k.sum()), int(run.outcomes["unsubscribe"][k].sum()),
                                   int(run.outcomes["complaint"][k].sum()))
        return per_arm

    for end in range(int(np.ceil(s.window / DAY)), int(world.days) + 1):
        per_arm = window_counts(end - s.window / DAY, end)
        for what in targets(world.policy, s.levels):
            counts = tally(world.policy, what, per_arm)
            windows += 1
            judged += counts[0] >= s.min_sends
            if what.startswith("content:"):
                content_sends.append(counts[0])
            for start in spans(s, end * DAY, end * DAY - s.window):  # the window and its latest spans
                for e in judge(tally(world.policy, what, window_counts(start / DAY, end)), s):
                    if e["sends"] >= s.min_sends and e["lower"] / e["threshold"] > worst["ratio"]:
                        worst = {"ratio": e["lower"] / e["threshold"], "target": what, "rate": e["rate"], "day": end,
                                 "span_days": end - start / DAY, "events": e["events"], "sends": e["sends"],
                                 "lower": e["lower"]}
    return {"worst": worst, "judged_share": judged / max(windows, 1),
            "content_sends_per_window": {"min": int(min(content_sends)), "median": float(np.median(content_sends))}}


def standard_run(decisions: int, seed: int, tmp: str) -> dict:
    """One seed of (b): the breaker where nothing changes."""
    world = build_world(SCENARIOS / "standard.toml", decisions=decisions, seed=seed)
    run, events = one_run(world, "tactful", Path(tmp))
    trips = [e for e in events if e["kind"] in ("trip", "reopen")]
    return {"seed": seed, "people": world.people, "sends": int(run.send.sum()),
            "violations": int((run.violations > 0).sum()),
            "unsubscribe_rate": float(run.outcomes["unsubscribe"][run.send].mean()),
            "complaint_rate": float(run.outcomes["complaint"][run.send].mean()),
            "trips": [{"day": round((e["at"] - world.truth.start) / DAY, 3), "target": e["target"],
                       "detail": e["reason"]} for e in trips]} | closeness(world, run)


def study(cfg: dict, offensive_seed: int | None, jobs: int, tmp: str, progress: bool) -> dict:
    """Every run, `jobs` at a time, with a progress bar over the runs."""
    tasks = {("offensive", v): (offensive_run, v, cfg["offensive_decisions"], offensive_seed, tmp) for v in RUNS}
    tasks |= {("standard", seed): (standard_run, cfg["standard_decisions"], seed, tmp)
              for seed in range(1, cfg["seeds"] + 1)}
    done = {}
    with ProcessPoolExecutor(jobs) as pool:
        futures = {pool.submit(*task): key for key, task in tasks.items()}
        for f in tqdm(as_completed(futures), total=len(futures), desc="breaker study", unit="run",
                      disable=not progress):
            done[futures[f]] = f.result()
    seeds = [done[("standard", seed)] for seed in range(1, cfg["seeds"] + 1)]
    return {"offensive": offensive({v: done[("offensive", v)] for v in RUNS}),
            "standard": {"decisions": cfg["standard_decisions"], "seeds": seeds,
                         "false_trips": sum(len(x["trips"]) for x in seeds)}}


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render(data: dict) -> str:
    a, b, cfg = data["offensive"], data["standard"], data["config"]
    lines = [
        SECTION, "",
        f"Written by `.venv/bin/python {cfg['command']}` ({data['seconds'] / 60:.0f} minutes; load average "
        f"{data['load'][0]} -> {data['load'][1]} on {os.cpu_count()} cores). The breaker is the scenario policy's "
        "`[safety]` table, the example policy's: a rate trips when its one-sided lower bound (99% shared by the "
        "window and its latest half, quarter and eighth) is over the threshold (unsubscribes 2%, complaints 0.5%) "
        "on at least 200 sends of the span, the trailing 7 days or less (docs/guardrails.md). In a simulation it is "
        "judged where the service's learner judges it, at each learning step: every 2 hours of virtual time.", "",
        f"**(a) `offensive`**: {a['decisions']:,} decisions ({a['people']:,} people, 28 days after a week of "
        f"warm-up), seed {a['seed']}; from day {a['incident_day']:g} `{a['content']}`'s unsubscribe and complaint "
        f"logits are {a['unsubscribe_shift']:+g} and {a['complaint_shift']:+g} (its unsubscribe rate goes from "
        "about 0.3% to about 5%). The same people, moments and draws for each run: Tactful with the breaker, "
        "with the breaker judging its whole window only as it did before the spans (`spans = 1`), and without a breaker "
        "(`no-breaker`: the same policy without `[safety]`). All three draw alike (the same event ids), so they "
        "decide alike until a breaker first acts" + (" (checked: the same decisions up to then)."
                                                     if a["same_decisions_until_the_first_event"] else
                                                     " -- **not so in this run: the decisions differ before**."), "",
        "| run | trip on the content: days after the incident | decisions until then | its sends until then | "
        "their unsubscribes | false trips before the incident |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("breaker", "window-only"):
        r, t = a["runs"][name], a["runs"][name]["trip"]
        lines.append(f"| {RUNS[name]} | " + (f"{t['hours_after_incident'] / 24:.2f} | {t['decisions']:,} | "
                     f"{t['content_sends']:,} | {t['content_unsubscribes']} (and {t['content_complaints']} "
                     "complaints)" if t else "never | | |") + f" | {r['false_trips_before_incident']} |")
    lines += ["", f"| run | unsubscribes | from the incident on | complaints | from the incident on | clicks | "
              f"shaped reward | sends of `{a['content']}` in weeks 1-4 | their unsubscribes from the incident on |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, label_ in RUNS.items():
        r = a["runs"][name]
        lines.append(f"| {label_} | {r['unsubscribes']:,} | {r['unsubscribes_from_incident']:,} | {r['complaints']} | "
                     f"{r['complaints_from_incident']} | {r['clicks']:,} | {r['shaped_reward']:,.0f} | "
                     f"{', '.join(f'{x:,}' for x in r['content_sends_by_week'])} | "
                     f"{r['content_unsubscribes_from_incident']} |")
    for name in ("breaker", "window-only"):
        x = a["saved"][name]
        lines += ["", f"Saved by {RUNS[name].replace('with the breaker', 'the breaker')} against no breaker, over the "
                  f"run: **{x['unsubscribes']} unsubscribes** ({x['unsubscribes_from_incident']} from the incident on), "
                  f"{x['complaints']} complaints ({x['complaints_from_incident']} from the incident on); it changed "
                  f"clicks by {-x['clicks']:+,} and shaped reward by {-x['shaped_reward']:+,.0f}."]
    for name in ("breaker", "window-only"):
        lines += ["", f"The breaker's events, {RUNS[name]}:", "", "| day | event | target | detail |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {e['day']:.2f} | {e['kind']} | `{e['target']}` | {e['detail']} |" for e in a["runs"][name]["events"]]
    seeds = b["seeds"]
    lines += ["", f"**(b) `standard`**, where nothing changes: {b['decisions']:,} decisions per seed "
              f"({seeds[0]['people']:,} people, 28 days after a week of warm-up), seeds {seeds[0]['seed']}-"
              f"{seeds[-1]['seed']} ({len(seeds)} runs), Tactful with the breaker: **{b['false_trips']} false trips**.", "",
              "| seed | sends | unsubscribe rate | complaint rate | trips | highest lower bound / threshold | "
              "where | sends per content per 7-day window (min, median) | (window, target) pairs judged |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in seeds:
        k = x["worst"]
        where = f"{label(k['target'])}, {k['rate']}, {k['span_days']:g} days to day {k['day']}" if "target" in k else "-"
        lines.append(f"| {x['seed']} | {x['sends']:,} | {pct(x['unsubscribe_rate'])} | {pct(x['complaint_rate'])} | "
                     f"{len(x['trips'])} | {k['ratio']:.2f} | {where} | {x['content_sends_per_window']['min']:,}, "
                     f"{x['content_sends_per_window']['median']:,.0f} | {100 * x['judged_share']:.0f}% |")
    worst = max(seeds, key=lambda x: x["worst"]["ratio"])
    w = worst["worst"]
    if "target" in w:
        lines += ["", f"Closest approach: seed {worst['seed']}, {label(w['target'])}'s {w['rate']} rate over the "
                  f"{w['span_days']:g} days to day {w['day']}: {w['events']} of {w['sends']:,} sends, lower bound "
                  f"{pct(w['lower'])}, {w['ratio']:.2f} of the threshold."]
    t_new, t_old = a["runs"]["breaker"]["trip"], a["runs"]["window-only"]["trip"]
    lines += ["", "How to read these figures, and the choices behind them:", ""]
    if t_new and t_old:
        lines.append(f"- The spans (the window's latest half, quarter and eighth, judged beside the window) tripped "
                     f"{(t_old['hours_after_incident'] - t_new['hours_after_incident']) / 24:.1f} days sooner than the "
                     f"whole window alone, after {t_new['content_sends']:,} sends of the offending content instead of "
                     f"{t_old['content_sends']:,}. What is left of the delay: the unsubscribes of a send arrive hours "
                     "later (4 hours on average, and `next_morning` sends go out up to a day after the decision), "
                     "the breaker is judged every 2 virtual hours here, and a span needs 200 sends.")
    lines += [
        "- *Saved* compares runs that decide alike until the breaker first acts (same people, moments, draws and "
        "event ids): the difference is the breaker's doing, not sampling noise between runs. Without a breaker "
        "the learner itself turns away from the offending content, but only as the 2-day reward windows of its "
        "bad sends close, and its exploration floor keeps sending it (the sends per week); once tripped, the "
        "breaker leaves it to the half-open probes (10% of people, from a day after the trip).",
        "- *False trips* count every trip and reopening, on any content, channel or the policy, in the measured "
        "28 days and in the warm-up week. *Highest lower bound / threshold* is the breaker's nearest miss, judged "
        "at each day's end over the trailing window and its spans with every outcome the people ever gave "
        "(more than the breaker had seen then), so if anything it overstates how close it came.",
        f"- Size: {b['decisions']:,} decisions per `standard` seed, so that most contents have the breaker's 200 "
        "sends in a 7-day window (the per-content column) and are really judged; with 4,000 decisions the median "
        "content had about 40 and a zero would prove little. The `offensive` runs are larger "
        f"({a['decisions']:,}), to measure the trip with the traffic of a real list. The whole study runs two "
        "runs at a time, one per core.",
    ]
    return "\n".join(lines) + "\n"


def with_section(doc: str, section: str) -> str:
    """`doc` with its SECTION (up to the next `## ` heading) replaced by `section`, or `section`
    appended."""
    start = doc.find("\n" + SECTION + "\n")
    if start < 0:
        return doc.rstrip("\n") + "\n\n" + section
    end = doc.find("\n## ", start + 1)
    return doc[:start + 1] + section + ("\n" + doc[end + 1:] if end >= 0 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help=f"small runs: {SMALL}")
    ap.add_argument("--offensive-decisions", type=int)
    ap.add_argument("--offensive-seed", type=int, help="default: the scenario's")
    ap.add_argument("--standard-decisions", type=int)
    ap.add_argument("--seeds", type=int, help="standard runs, seeds 1..N")
    ap.add_argument("--out", help="default out/breaker-study (out/breaker-study-small with --small)")
    ap.add_argument("--docs", action="store_true", help="rewrite docs/quality.md's Circuit breaker section")
    ap.add_argument("--render-only", action="store_true", help="re-render from --out's breaker.json")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core)")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args()
    cfg = dict(SMALL if args.small else FULL)
    for k in cfg:
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    out = Path(args.out or ROOT / "out" / ("breaker-study-small" if args.small else "breaker-study"))
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        data = json.loads((out / "breaker.json").read_text())
    else:
        cfg["command"] = "scripts/breaker_study.py " + " ".join(a for a in sys.argv[1:] if a != "--docs")
        cfg["command"] = cfg["command"].strip()
        t0, loads = time.time(), [load()]
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(prefix="tactful-breaker-", dir=shm if shm.is_dir() else None) as tmp:
            data = {"config": cfg} | study(cfg, args.offensive_seed, args.jobs, tmp, args.progress)
        data |= {"seconds": time.time() - t0, "load": loads + [load()]}
        (out / "breaker.json").write_text(json.dumps(data, indent=2) + "\n")
    section = render(data)
    (out / "breaker.md").write_text(section)
    if args.docs:
        doc = ROOT / "docs" / "quality.md"
        doc.write_text(with_section(doc.read_text(), section))
    print(section)
    a, b = data["offensive"], data["standard"]
    violations = sum(r["violations"] for r in a["runs"].values()) + sum(x["violations"] for x in b["seeds"])
    return 1 if b["false_trips"] or violations else 0


if __name__ == "__main__":
    sys.exit(main())
