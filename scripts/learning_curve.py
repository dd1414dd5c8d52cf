#!/usr/bin/env python
"""Learning curves behind docs/quality.md, "Learning curves (issue 15)": every decision maker on
every scenario, for several seeds, at several run sizes.

    nice .venv/bin/python scripts/learning_curve.py --points 2000,5000 --docs     # the recorded points
    nice .venv/bin/python scripts/learning_curve.py --points 2000,5000,20000,50000,200000 --jobs 2 --docs
                                                                                # the whole study (days)
    .venv/bin/python scripts/learning_curve.py --small                          # CI: well under a minute

Each point (scenario, decision maker, seed, N decisions) is its own run of `tactful simulate`'s
world (service/simulation): a point cannot be read as a checkpoint of one longer run, because the
simulator scales the population with N over the same days (`build_world`: a small run is a small
town, not a short one); `--check-checkpoints` shows it. All makers of one (scenario, seed, N) share
one world: the same people, moments and random draws.

Tactful runs the example policy's learner settings (examples/policies/lifecycle.toml `[learner]`):
for a scenario whose policy has other settings, the scenario policy with its `[learner]` table
replaced by the example's (written under --out/policies/). Only the learner changes: the
baselines take the VW model's place, but the rest of `[learner]` (the holdout group) applies to
them too.

Each finished run is kept in --out/results.json as soon as it ends, so that a later session can
extend the study (more points, more seeds) without redoing work; a kept run whose scenario, policy
or learner settings have changed since is run again (a baseline's not when only `vw_args` changed:
`fingerprint`). One run at a time, or `--jobs N` side by side in N processes (this one keeps
what they make).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
import tomllib
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from models.featurize import FEATURES_VERSION  # noqa: E402
from service.simulation.metrics import run_metrics  # noqa: E402
from service.simulation.run import run_maker  # noqa: E402
from service.simulation.scenario import load_scenario  # noqa: E402
from service.simulation.world import build_world  # noqa: E402

SCENARIOS = ROOT / "examples" / "scenarios"
# the study kept in the repository: its points.json is the table docs/quality.md shows
KEPT = ROOT / "docs" / "quality" / "learning-curve"
EXAMPLE = ROOT / "examples" / "policies" / "lifecycle.toml"
ALL_SCENARIOS = ("standard", "fatigue-heavy", "drift", "many-similar", "hold-mostly", "tenure-driven")
MAKERS = ("tactful", "thompson", "static-best", "uniform", "oracle")
POINTS = (2000, 5000, 20000, 50000, 200000)
SMALL = {"scenarios": ("standard", "tenure-driven"), "seeds": (1, 2), "points": (200, 400)}
HEADING = "## Learning curves (issue 15)"
KEPT_TOTALS = ("decisions", "shaped_reward", "expected_shaped_reward", "oracle_in_place_expected_reward",
               "sends", "holds", "clicks", "conversions", "unsubscribes", "complaints")
# two-sided 95% Student t quantiles by degrees of freedom (1..30); beyond, the normal's
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


# -- the policies Tactful runs ---------------------------------------------------------------

def _learner_block(text: str) -> tuple[int, int]:
    """Where a policy file's `[learner]` table starts and ends (up to the next table or EOF)."""
    m = re.search(r"^\[learner\]\s*$", text, flags=re.M)
    if m is None:
        raise SystemExit("no [learner] table in the policy")
    nxt = re.search(r"^\[", text[m.end():], flags=re.M)
    return m.start(), m.end() + nxt.start() if nxt else len(text)


def example_learner() -> dict:
    return tomllib.loads(EXAMPLE.read_text())["learner"]


def study_policy(scenario: str, workdir: Path) -> Path:
    """The scenario's policy file when its `[learner]` is the example's, else a copy of it with the
    example's `[learner]` table in place of its own."""
    path = load_scenario(SCENARIOS / f"{scenario}.toml").policy_path
    text = path.read_text()
    if tomllib.loads(text).get("learner") == example_learner():
        return path
    s, e = _learner_block(text)
    es, ee = _learner_block(EXAMPLE.read_text())
    new = (f"# {path.name} with the example policy's [learner] (scripts/learning_curve.py)\n"
           + text[:s] + EXAMPLE.read_text()[es:ee].rstrip("\n") + "\n" + text[e:])
    assert tomllib.loads(new)["learner"] == example_learner()
    out = workdir / "policies" / f"{scenario}.toml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(new)
    return out


def fingerprint(scenario: str, policy: Path) -> tuple[str, str]:
    """What a run depends on, as two prints that change when what the scenario file and the policy
    run say changes (not with their comments): everything, and everything but the policy's
    `vw_args`, which only the VW model reads: a baseline takes the model's place, so a change of
    the learner's arguments reruns Tactful's runs only. (The rest of `[learner]` stays in: the
    holdout group and the fallback arm shape every decision maker's decisions; the rest is kept
    in to be safe.)"""
    said = [tomllib.loads(p.read_text()) for p in (SCENARIOS / f"{scenario}.toml", policy)]
    whole = hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]
    said[1].get("learner", {}).pop("vw_args", None)
    world = hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return whole, world


def maker_print(scenario_prints: tuple[str, str], maker: str) -> str:
    """A run's fingerprint: for a baseline, its scenario's without the learner's arguments; for
    Tactful, whose model sees the features, the whole scenario's and the features' version (a
    change of featurization reruns Tactful's runs only)."""
    whole, world = scenario_prints
    if maker != "tactful":
        return world
    return hashlib.sha256(f"{whole} {FEATURES_VERSION}".encode()).hexdigest()[:16]


# -- running and keeping results ---------------------------------------------------------------

def key(scenario: str, maker: str, seed: int, n: int) -> str:
    return f"{scenario}/{maker}/{seed}/{n}"


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def save_results(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: an interrupted session never leaves a half-written file


def pending(results: dict, scenarios, seeds, points, prints: dict) -> list[tuple[str, int, int, list[str]]]:
    """(scenario, seed, N, makers still to run) for every world with something left to run."""
    todo = []
    for sc in scenarios:
        for n in points:
            for seed in seeds:
                left = [m for m in MAKERS if results["runs"].get(key(sc, m, seed, n), {}).get("fingerprint")
                        != maker_print(prints[sc], m)]
                if left:
                    todo.append((sc, seed, n, left))
    return todo


def current_prints(scenarios, out: Path) -> tuple[dict, dict]:
    """Each scenario's study policy (`study_policy`) and today's prints of it (`fingerprint`)."""
    policies = {sc: study_policy(sc, out) for sc in scenarios}
    return policies, {sc: fingerprint(sc, policies[sc]) for sc in scenarios}


def stale_runs(results: dict, out: Path, scenarios, seeds, points) -> list[str]:
    """The kept runs of these points that were made with other settings or features than
    today's: what a run without --no-run would make again (`pending`), and what the tables must
    not show as today's."""
    _, prints = current_prints(scenarios, out)
    return [key(sc, m, seed, n) for sc, seed, n, left in pending(results, scenarios, seeds, points, prints)
            for m in left if key(sc, m, seed, n) in results["runs"]]


def run_all(out: Path, scenarios, seeds, points, progress: bool, jobs: int = 1) -> int:
    """Run every missing point, keeping each as it ends; returns how many runs it made. With
    `jobs` above 1, that many processes run them side by side (`_run_parallel`)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = load_results(path)
    policies, prints = current_prints(scenarios, out)
    todo = pending(results, scenarios, seeds, points, prints)
    if not todo:
        return 0
    lock = out / "results.lock"  # two processes keeping the same file would lose each other's runs
    try:
        lock.open("x").write(str(os.getpid()))
    except FileExistsError:
        raise SystemExit(f"{lock} exists: another run keeps its results there (remove it if none does)")
    try:
        if jobs > 1:
            return _run_parallel(path, results, todo, policies, prints, progress, jobs)
        return _run(path, results, todo, policies, prints, progress)
    finally:
        lock.unlink()


def _entry(sc: str, seed: int, n: int, maker: str, policy: Path, prints: tuple[str, str], world=None) -> dict:
    """One run of `maker` in the world (sc, seed, n), as results.json keeps it; the world is built
    when not given (each maker's run leaves it as it was: the makers of one world share it)."""
    if world is None:
        world = build_world(SCENARIOS / f"{sc}.toml", policy=policy, decisions=n, seed=seed)
    t0 = time.monotonic()
    run = run_maker(world, maker, monotonic=time.monotonic, progress=False)
    m = run_metrics(run, None)
    return {"scenario": sc, "maker": maker, "seed": seed, "n": n,
            "fingerprint": maker_print(prints, maker),
            "policy": str(policy.relative_to(ROOT)) if policy.is_relative_to(ROOT) else policy.name,
            "people": world.people, "seconds": round(time.monotonic() - t0, 1),
            "violations": m["guardrail_violations"]["total"],
            "totals": {k: m["totals"][k] for k in KEPT_TOTALS}}


def _worker_entry(*args) -> dict:
    """`_entry` in a worker process: an error comes back as a RuntimeError with its text (an
    exception that pickle cannot rebuild, such as a library's taking several arguments, would
    break the whole pool)."""
    try:
        return _entry(*args)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


def _run(path: Path, results: dict, todo: list, policies: dict, prints: dict, progress: bool) -> int:
    made = 0
    bar = tqdm(total=sum(len(t[3]) for t in todo), disable=not progress, unit="run")
    for sc, seed, n, makers in todo:
        world = build_world(SCENARIOS / f"{sc}.toml", policy=policies[sc], decisions=n, seed=seed)
        for maker in makers:
            bar.set_description(f"{sc} n={n} seed={seed} {maker}")
            results["runs"][key(sc, maker, seed, n)] = _entry(sc, seed, n, maker, policies[sc], prints[sc], world)
            save_results(path, results)
            made += 1
            bar.update()
    bar.close()
    results["machine"] = machine()
    save_results(path, results)
    return made


def _run_parallel(path: Path, results: dict, todo: list, policies: dict, prints: dict, progress: bool,
                  jobs: int) -> int:
    """The same runs in `jobs` processes, one run each at a time, the longest first (so that the
    last to finish are short); this process keeps each as it ends. A run builds its own world,
    the same one as its fellow makers' (built from the same seed)."""
    tasks = sorted(((sc, seed, n, maker) for sc, seed, n, makers in todo for maker in makers),
                   key=lambda t: -t[2])
    made, failed = 0, []
    bar = tqdm(total=len(tasks), disable=not progress, unit="run")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs)
    try:
        running = {pool.submit(_worker_entry, sc, seed, n, maker, policies[sc], prints[sc]): (sc, seed, n, maker)
                   for sc, seed, n, maker in tasks}
        for done in concurrent.futures.as_completed(running):
            sc, seed, n, maker = running[done]
            try:
                results["runs"][key(sc, maker, seed, n)] = done.result()
            except Exception as exc:  # noqa: BLE001 -- the other runs go on and are kept
                failed.append(f"{key(sc, maker, seed, n)}: {exc!r}")
                bar.write(f"run {failed[-1]}")
                continue
            save_results(path, results)
            made += 1
            bar.set_description(f"{sc} n={n} seed={seed} {maker}")
            bar.update()
    finally:
        # an interrupted study (Ctrl-C) does not start what it has not started
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if failed:
        raise SystemExit(f"{len(failed)} runs failed (the {made} others are kept):\n" + "\n".join(failed))
    results["machine"] = machine(jobs)
    save_results(path, results)
    return made


def machine(jobs: int = 1) -> str:
    return (f"{os.cpu_count()} cores ({platform.machine()}), {platform.python_implementation()} "
            f"{platform.python_version()}, " + ("one process" if jobs <= 1 else f"{jobs} processes"))


# -- reading the points ------------------------------------------------------------------------

def interval(values) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student t interval of the mean over seeds."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = (T975[len(x) - 2] if len(x) - 1 <= len(T975) else 1.96) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def gap_closed(reward: dict, maker: str) -> np.ndarray:
    """Seed by seed, the share of the gap between uniform choice and the oracle that `maker`
    closes: (R - uniform) / (oracle - uniform), from each maker's shaped rewards over the seeds."""
    span = reward["oracle"] - reward["uniform"]  # > 0 wherever choosing matters
    return (reward[maker] - reward["uniform"]) / span


def points_table(results: dict, scenarios, seeds, points) -> list[dict]:
    """One row per (scenario, N, maker) with all its seeds done: share of the oracle's shaped
    reward (realized, per seed against the oracle run of the same world), unsubscribes and clicks
    per 1,000 decisions, the share of decisions held, and the share of the gap between uniform
    choice and the oracle closed, (R - uniform) / (oracle - uniform), each as mean and 95% interval
    over seeds; and, for Tactful, its gap closed minus per-segment Thompson sampling's, seed by seed
    (the same worlds): the difference of their rewards over a denominator that stays positive,
    where the share of the oracle divides by a sum that can be near 0 (hold-mostly)."""
    runs = results["runs"]
    rows = []
    for sc in scenarios:
        for n in points:
            got = lambda m, s: runs.get(key(sc, m, s, n))  # noqa: E731
            done = [s for s in seeds if all(got(m, s) for m in MAKERS)]
            if len(done) != len(seeds):
                continue
            reward = {m: np.array([got(m, s)["totals"]["shaped_reward"] for s in done]) for m in MAKERS}
            share = {m: reward[m] / reward["oracle"] for m in MAKERS}
            gap = {m: gap_closed(reward, m) for m in MAKERS}
            for m in MAKERS:
                per_k = lambda k: [1000 * got(m, s)["totals"][k] / n for s in done]  # noqa: E731,B023
                row = {"scenario": sc, "n": n, "maker": m, "seeds": len(done),
                       "share": interval(share[m]), "gap": interval(gap[m]),
                       "unsubscribes": interval(per_k("unsubscribes")),
                       "clicks": interval(per_k("clicks")), "holds": interval([h / 10 for h in per_k("holds")]),
                       "violations": sum(got(m, s)["violations"] for s in done)}
                if m == "tactful":
                    row["minus_thompson"] = interval(gap["tactful"] - gap["thompson"])
                rows.append(row)
    return rows


def check_checkpoints(scenario: str = "standard", small: int = 2000, large: int = 5000, seed: int = 1) -> dict:
    """Whether the first `small` decisions of a `large` run are a `small` run: the population and
    the days they span, from the simulator's own world."""
    a = build_world(SCENARIOS / f"{scenario}.toml", decisions=small, seed=seed)
    b = build_world(SCENARIOS / f"{scenario}.toml", decisions=large, seed=seed)
    day = 86400.0
    return {"scenario": scenario, "small": small, "large": large,
            "people": [a.people, b.people],
            "days_spanned_by_first_small_decisions": [round(float(a.ask_t[small - 1] - a.ask_t[0]) / day, 1),
                                                       round(float(b.ask_t[small - 1] - b.ask_t[0]) / day, 1)],
            "asks_per_person_in_first_small_decisions": [round(small / a.people, 1),
                                                         round(small / len(set(b.ask_person[:small].tolist())), 1)]}


def fmt(iv: tuple[float, float, float], pct: bool = False) -> str:
    scale, unit = (100, "%") if pct else (1, "")
    mean, lo, hi = (scale * v for v in iv)
    if math.isnan(lo):
        return f"{mean:.1f}{unit}"
    return f"{mean:.1f}{unit} [{lo:.1f}, {hi:.1f}]"


def print_table(rows: list[dict]) -> None:
    print("| scenario | N | decision maker | share of oracle | gap closed | unsubscribes /1k | clicks /1k | "
          "Tactful - Thompson (gap) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        diff = fmt(r["minus_thompson"], pct=True) if "minus_thompson" in r else ""
        print(f"| {r['scenario']} | {r['n']:,} | {r['maker']} | {fmt(r['share'], pct=True)} | {fmt(r['gap'], pct=True)} | "
              f"{fmt(r['unsubscribes'])} | {fmt(r['clicks'])} | {diff} |")


def before_after(before: dict, after: dict, scenarios, seeds, points) -> list[str]:
    """Tactful's runs of two results files side by side (the same worlds: every other maker's runs
    are the same), as markdown: its gap closed in each and their difference seed by seed, and its
    holds and unsubscribes. What `--before` prints, for a change of Tactful's features or settings."""
    old = {(r["scenario"], r["n"]): r for r in points_table(before, scenarios, seeds, points) if r["maker"] == "tactful"}
    lines = ["| scenario | decisions | gap closed, before | after | after - before (paired) | holds (%), before | after "
             "| unsubscribes /1k, before | after |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in points_table(after, scenarios, seeds, points):
        b = old.get((r["scenario"], r["n"]))
        if r["maker"] != "tactful" or b is None:
            continue
        gaps = [gap_closed({m: np.array([res["runs"][key(r["scenario"], m, sd, r["n"])]["totals"]["shaped_reward"]
                                         for sd in seeds]) for m in ("tactful", "uniform", "oracle")}, "tactful")
                for res in (before, after)]
        lines.append(f"| `{r['scenario']}` | {r['n']:,} | {fmt(b['gap'], True)} | {fmt(r['gap'], True)} | "
                     f"{fmt(interval(gaps[1] - gaps[0]), True)} | {fmt(b['holds'])} | {fmt(r['holds'])} | "
                     f"{fmt(b['unsubscribes'])} | {fmt(r['unsubscribes'])} |")
    return lines


# -- docs/quality.md ---------------------------------------------------------------------------

LABELS = {"share": "shaped reward, share of the oracle (%)", "gap": "gap closed, uniform 0% to oracle 100%",
          "unsubscribes": "unsubscribes per 1,000 decisions", "clicks": "clicks per 1,000 decisions"}


def plot(rows: list[dict], scenario: str, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (a script: only --docs needs it)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, what in zip(axes, LABELS):
        for j, m in enumerate(MAKERS):
            pts = [r for r in rows if r["scenario"] == scenario and r["maker"] == m]
            if not pts:
                continue
            scale = 100 if what in ("share", "gap") else 1
            x = np.array([r["n"] for r in pts]) * (1 + 0.03 * (j - 2))  # side by side, not on top
            mean = np.array([scale * r[what][0] for r in pts])
            err = np.array([[scale * (r[what][0] - r[what][1]) for r in pts], [scale * (r[what][2] - r[what][0]) for r in pts]])
            ax.errorbar(x, mean, yerr=np.nan_to_num(err), marker="o", capsize=3, label=m)
        ax.set_xscale("log")
        ax.set_xlabel("decisions in the run")
        ax.set_title(LABELS[what], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{scenario}: mean and 95% interval over seeds", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def verdict(iv: tuple[float, float, float]) -> str:
    mean, lo, hi = iv
    if not math.isnan(lo) and lo > 0:
        return "yes, better"
    if mean >= 0:
        return "yes, matches (not surely better)"
    if not math.isnan(hi) and hi >= 0:
        return "not surely worse (mean below)"
    return "**no**, worse"


def section(results: dict, rows: list[dict], scenarios, seeds, points, command: str) -> list[str]:
    ran = {(r["scenario"], r["n"]) for r in rows}
    done = sorted({n for _, n in ran if all((sc, n) in ran for sc in scenarios)})  # on every scenario
    partly = {n: [sc for sc in scenarios if (sc, n) in ran] for n in sorted({n for _, n in ran}) if n not in done}
    left = [p for p in POINTS if p not in done]
    so_far = "".join(f"; {n:,} for {', '.join(f'`{sc}`' for sc in scs)} only" for n, scs in partly.items())
    # the runs this section's tables show (results.json may keep others: a check like tenure-offset)
    shown = [r for r in results["runs"].values()
             if r["scenario"] in scenarios and r["seed"] in seeds and r["n"] in points]
    seconds = sum(r["seconds"] for r in shown)
    ck = check_checkpoints()
    lines = [HEADING, "",
             "Written by `scripts/learning_curve.py --docs` (command below); `tests/test_learning_curve.py` runs "
             "its `--small` version in CI. Every decision maker on every scenario, "
             f"{len(seeds)} seeds per point (seeds {', '.join(map(str, seeds))}); each figure is the mean over seeds "
             "with its 95% interval (Student t) in brackets. Shaped reward is the scenario policy's own, realized, as "
             "a share of the oracle run's in the same world (same people, moments and draws); unsubscribes and "
             "clicks are per 1,000 decisions, so that sizes compare; holds are the share of decisions that sent nothing. "
             "*Gap closed* is (R - uniform's) / (oracle's - uniform's), seed by seed: 0% is uniform choice, 100% the "
             "oracle. Where the oracle itself earns little (`hold-mostly`: it holds most asks, and a seed's realized sum "
             "can be near or below 0) the share of the oracle is a ratio to a noisy number near 0 and its "
             "interval says nothing; read the gap closed there. Negative shares (`fatigue-heavy`, `many-similar`) "
             "mean a loss: sends whose fatigue and unsubscribes cost more than they earned. `Tactful - Thompson` is Tactful's gap closed minus "
             "per-segment Thompson sampling's, seed by seed.", "",
             f"Tactful runs the **example policy's learner settings** (`examples/policies/lifecycle.toml` "
             f"`[learner]`: `{example_learner()['vw_args']}`), not the scenario policies' tuned ones: for "
             "`standard`, `drift` and `fatigue-heavy` the scenario policy with its `[learner]` replaced "
             "(`docs/quality/learning-curve/policies/`); the three new scenarios' policies ship with it. The "
             "scenarios are described in [simulation.md](simulation.md#scenario-files); `many-similar`, "
             "`hold-mostly` and `tenure-driven` are new. In `tenure-driven` the policy has no segment label, but "
             "per-segment Thompson sampling counts by the simulator's true segment: an advantage no deployment has.",
             "",
             "Each point is its own run, not a checkpoint of a longer one: the simulator scales the population "
             "with the run's size over the same 28 days (`build_world`). On `standard`, seed 1, a "
             f"{ck['small']:,}-decision run has {ck['people'][0]} people asked over {ck['days_spanned_by_first_small_decisions'][0]} "
             f"days; the first {ck['small']:,} decisions of a {ck['large']:,}-decision run span "
             f"{ck['days_spanned_by_first_small_decisions'][1]} days of {ck['people'][1]} people "
             "(`scripts/learning_curve.py --check-checkpoints`).", "",
             f"Points run so far: {', '.join(f'{n:,}' for n in done) or 'none'} decisions{so_far}."
             + (f" **Still to run: {', '.join(f'{n:,}' for n in left)}**"
                + (" (on the other scenarios)" if partly else "")
                + (" (estimated from the 1,585 s that the five 200,000-decision runs of `standard` took for this page: "
                   "some 18 hours of one core for the three on six scenarios and five seeds)"
                   if left == [20000, 50000, 200000] else "") + ", with "
                "`nice .venv/bin/python scripts/learning_curve.py --jobs 2 --docs` (one process per core), which keeps every finished run in "
                "`docs/quality/learning-curve/results.json` and runs only what is missing." if left else ""),
             "",
             f"Machine: {results.get('machine', machine())}, shared with other work; {len(shown)} runs, "
             f"{seconds / 60:.0f} minutes in all. Command: `{command}`.", "",
             "### Does the example policy at least match per-segment Thompson sampling?", "",
             "Judged on the share of the gap between uniform choice and the oracle that each closes (the same "
             "ordering as their shaped rewards, over a denominator that stays positive), seed by seed; the "
             "verdict is *better* when the 95% interval of the difference is above 0.", "",
             "| scenario | decisions | Tactful: share of oracle | Thompson: share of oracle | Tactful: gap closed | "
             "Thompson: gap closed | Tactful - Thompson (gap) | |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r["maker"] == "tactful" and r["n"] >= 5000:
            th = next(x for x in rows if x["scenario"] == r["scenario"] and x["n"] == r["n"] and x["maker"] == "thompson")
            lines.append(f"| `{r['scenario']}` | {r['n']:,} | {fmt(r['share'], True)} | {fmt(th['share'], True)} | "
                         f"{fmt(r['gap'], True)} | {fmt(th['gap'], True)} | "
                         f"{fmt(r['minus_thompson'], True)} | {verdict(r['minus_thompson'])} |")
    for sc in scenarios:
        lines += ["", f"### `{sc}`", "",
                  "| decisions | decision maker | share of oracle | gap closed | unsubscribes /1k | clicks /1k | holds (%) |",
                  "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['n']:,} | {r['maker']} | {fmt(r['share'], True)} | {fmt(r['gap'], True)} | {fmt(r['unsubscribes'])} | "
                  f"{fmt(r['clicks'])} | {fmt(r['holds'])} |" for r in rows if r["scenario"] == sc]
        lines += ["", f"![{sc}](quality/curve-{sc}.png)"]
    return lines + [""]


def replace_section(page: str, text: str) -> str:
    """`page` with its learning-curve section replaced by `text` (appended when it has none)."""
    start = page.find("\n" + HEADING + "\n")
    if start < 0:
        return page.rstrip("\n") + "\n\n" + text
    end = page.find("\n## ", start + 1)
    return page[:start + 1] + text + ("\n" + page[end + 1:] if end >= 0 else "")


def write_docs(results: dict, rows: list[dict], scenarios, seeds, points, args) -> None:
    for sc in scenarios:
        plot(rows, sc, ROOT / "docs" / "quality" / f"curve-{sc}.png")
    command = ("nice .venv/bin/python scripts/learning_curve.py --seeds " + ",".join(map(str, seeds))
               + " --points " + ",".join(map(str, points)) + " --docs")
    page = ROOT / "docs" / "quality.md"
    text = "\n".join(section(results, rows, scenarios, seeds, points, command))
    page.write_text(replace_section(page.read_text(), text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="names under examples/scenarios")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--points", default=",".join(str(p) for p in POINTS), help="decisions per run")
    ap.add_argument("--out", default=None, help="where results.json is kept (default docs/quality/learning-curve, "
                                                "kept in the repository; out/learning-curve-small with --small)")
    ap.add_argument("--docs", action="store_true", help="write the section of docs/quality.md and its plots")
    ap.add_argument("--small", action="store_true", help=f"a tiny version for CI: {SMALL}")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--jobs", type=int, default=1, help="processes running runs side by side (default 1; one per "
                                                        "core is the most that helps)")
    ap.add_argument("--no-run", action="store_true", help="run nothing: read --out's results (and write --docs)")
    ap.add_argument("--before", type=Path, default=None,
                    help="another results.json (an earlier commit's): print Tactful's runs in both side by side")
    ap.add_argument("--check-checkpoints", action="store_true",
                    help="show that a short run is not a checkpoint of a longer one, and stop")
    args = ap.parse_args(argv)
    if args.check_checkpoints:
        print(json.dumps(check_checkpoints(), indent=1))
        return 0
    if args.small:
        scenarios, seeds, points = SMALL["scenarios"], SMALL["seeds"], SMALL["points"]
    else:
        scenarios = tuple(args.scenarios.split(","))
        seeds = tuple(int(s) for s in args.seeds.split(","))
        points = tuple(int(p) for p in args.points.split(","))
    unknown = [s for s in scenarios if not (SCENARIOS / f"{s}.toml").exists()]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)}")
    out = Path(args.out or (ROOT / "out" / "learning-curve-small" if args.small else KEPT))
    t0 = time.monotonic()
    made = 0 if args.no_run else run_all(out, scenarios, seeds, points, progress=not args.quiet,
                                            jobs=args.jobs)
    results = load_results(out / "results.json")
    rows = points_table(results, scenarios, seeds, points)
    # the kept study's table is the page's, written with it: a query or a run of a few points
    # leaves it as it is; another study's (--small, --out) is written beside its results
    kept = out.resolve() == KEPT.resolve()
    if not kept:
        (out / "points.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)
    print(f"\n{made} runs made in {time.monotonic() - t0:.0f} s; results in {out / 'results.json'}")
    if args.before:
        print("\n" + "\n".join(before_after(load_results(args.before), results, scenarios, seeds, points)))
    stale = stale_runs(results, out, scenarios, seeds, points)
    if stale:
        print(f"\n{len(stale)} kept runs were made with other settings or features than today's (a run "
              f"without --no-run makes them again): {', '.join(stale[:4])}{', ...' if len(stale) > 4 else ''}")
    if args.docs:
        if stale:
            raise SystemExit("not writing docs/quality.md: its tables would show runs made with other settings "
                             "than today's as today's; run them again first")
        if kept:
            (out / "points.json").write_text(json.dumps(rows, indent=1))
        write_docs(results, rows, scenarios, seeds, points, args)
    return 1 if any(r["violations"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
