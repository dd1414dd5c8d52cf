"""How reliably does a policy learn the two-segment test population? (docs/policies.md)

An in-process replica of tests/test_e2e_serve.py -- the same population, decisions, clicks and
conversions, probes -- without HTTP, so that many seeds fit in minutes: the engine decides, the
learner learns every `--learn-every` decisions, and after the run each segment is asked for its
favourite on 60 new consented people. A run fails when a segment's most frequent favourite is not
its best arm. It also reports the mean realized reward over the last third of the decisions.

    python scripts/learning_reliability.py --seeds 12 [--vw-args "..."] [--learn-every 200]
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from service.clock import ManualClock  # noqa: E402
from service.decision.engine import DecideInput, OutcomeInput  # noqa: E402
from service.policy import load_policies  # noqa: E402
from service.runtime import build_engine, build_learner, numbered_ids  # noqa: E402
from service.store import open_store# noqa: E402
from service.store.decisions import DECISION_ROWS  # noqa: E402
from synthetic import BEST, CHANNELS, best_arm, click_probability  # noqa: E402

START = 1772438400.0  # 2026-03-02 08:00 UTC, as in the e2e test
USERS, DECISIONS, SPAN, CONVERT_GIVEN_CLICK = 2000, 12000, 14 * 86400.0, 0.5  # as in the e2e test


def run(seed: int, policies_dir: Path, learn_every: int, workdir: Path, decisions: int = DECISIONS) -> dict:
    policies = load_policies(policies_dir)
    store = open_store(str(workdir / f"run-{seed}.db"))
    clock = ManualClock(START)
    # the engine's draws derive from event ids: numbered ones make a run reproducible
    engine = build_engine(store, policies, clock, new_id=numbered_ids(f"s{seed}-"), refresh_seconds=0)
    engine.ensure_models()
    learner = build_learner(store, policies, clock)
    rng = np.random.default_rng(seed)
    segments = list(BEST)
    users = [(f"user-{i}", segments[i % 2]) for i in range(USERS)]
    for user, _ in users:
        engine.people.set_consent(user, {c: True for c in CHANNELS}, "reliability", None)
    for n in range(decisions):
        clock.t = max(clock.t, START + SPAN * n / decisions)
        user, segment = users[rng.integers(USERS)]
        d = engine.decide("lifecycle", DecideInput(user, {"segment": segment, "country": "FR", "tenure_days": 30}))
        if rng.random() < click_probability(segment, d["action"]["arm"]):
            engine.record_outcome(d["event_id"], OutcomeInput("click", outcome_id="click-1"))
            if rng.random() < CONVERT_GIVEN_CLICK:
                engine.record_outcome(d["event_id"], OutcomeInput("convert", outcome_id="convert-1"))
        if n % learn_every == learn_every - 1:
            learner.step("lifecycle")
    clock.t = START + SPAN + 3 * 86400  # past the example's 2-day reward window
    while learner.step("lifecycle"):
        pass
    wrong = {}
    for segment in segments:
        favourites = collections.Counter()
        for i in range(60):
            user = f"probe-{segment}-{i}"
            engine.people.set_consent(user, {c: True for c in CHANNELS}, "reliability", None)
            d = engine.decide("lifecycle", DecideInput(user, {"segment": segment, "country": "FR", "tenure_days": 30}))
            if d["mode"] != "holdout":
                favourites[d["explanation"]["model_favourite"]["arm"]] += 1
        top = favourites.most_common(1)[0][0]
        if top != best_arm(segment):
            wrong[segment] = top
    last = store.conn.execute(f"SELECT avg(reward) FROM {DECISION_ROWS} WHERE seq > ? AND seq <= ?",
                              (2 * decisions // 3, decisions)).fetchone()[0]
    return {"seed": seed, "wrong": wrong, "reward_last_third": float(last)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--learn-every", type=int, default=200, help="decisions between learner steps")
    ap.add_argument("--vw-args", help="replaces the example policy's [learner] vw_args")
    ap.add_argument("--decisions", type=int, default=DECISIONS, help="decisions per run (the e2e test's 12,000)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = (ROOT / "examples" / "policies" / "lifecycle.toml").read_text()
        if args.vw_args:
            text = re.sub(r'^vw_args = ".*"', f'vw_args = "{args.vw_args}"', text, flags=re.M)
        (work / "policies").mkdir()
        (work / "policies" / "lifecycle.toml").write_text(text)
        print(re.search(r'^vw_args = "(.*)"', text, flags=re.M).group(1), f"learner every {args.learn_every} decisions")
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = run(seed, work / "policies", args.learn_every, work, args.decisions)
            results.append(r)
            print(f"seed {seed}: reward over the last third {r['reward_last_third']:.3f}"
                  + "".join(f"; {s} learned {a}" for s, a in r["wrong"].items()), flush=True)
    failed = sum(1 for r in results if r["wrong"])
    print(f"{failed} of {len(results)} runs learned a wrong favourite; mean reward over the last third "
          f"{np.mean([r['reward_last_third'] for r in results]):.3f}")


if __name__ == "__main__":
    main()
