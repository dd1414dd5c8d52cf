"""How often a Personalizer loop's learning settings learn a two-context preference from a few
hundred Rank events (docs/personalizer.md, "The example policy's learning rate").

Two contexts (`time`: morning, evening), two actions (news, sport); the morning prefers news and
the evening sport (reward 1, else 0). The events are logged as an untrained loop serves them
(its favourite, the first action, with probability 0.9, the other 0.1), learned as the online
learner learns Rank events (models/featurize.py's action lines, cost (1 - reward) / 2), and a run
succeeds when the model's favourite is each context's preference. Each run draws the logged
actions with its own seed.

    python scripts/personalizer_learning_rate.py --runs 100 --events 300 \
        "--epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q UA -q UI" "--epsilon 0.2 --cb_type mtr -q UA -q UI"
"""
from __future__ import annotations

import argparse

import numpy as np

from models.featurize import action_line, flatten_features, shared_line
from models.vw_policy import VWPolicy

ACTIONS = [("news", [{"topic": "news", "length": 3}]), ("sport", [{"topic": "sport"}, {"length": 1}])]
PREFERS = {"morning": "news", "evening": "sport"}


def learns(args: str, events: int, seed: int) -> bool:
    lines = [action_line(aid, flatten_features(features)) for aid, features in ACTIONS]
    shared = {c: shared_line(flatten_features([{"time": c}]), {}) for c in PREFERS}
    rng = np.random.default_rng(seed)
    model = VWPolicy([], args)
    try:
        for i in range(events):
            context = ("morning", "evening")[i % 2]
            pos = 0 if rng.random() < 0.9 else 1
            reward = 1.0 if ACTIONS[pos][0] == PREFERS[context] else 0.0
            model.learn_lines(shared[context], lines, pos, (1 - reward) / 2, 0.9 if pos == 0 else 0.1)
        return all(ACTIONS[int(np.argmax(model.predict_lines(shared[c], lines)))][0] == PREFERS[c] for c in PREFERS)
    finally:
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vw_args", nargs="+", help="learning settings (VW arguments) to compare")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--events", type=int, default=300)
    opts = parser.parse_args()
    for args in opts.vw_args:
        ok = sum(learns(args, opts.events, seed) for seed in range(opts.runs))
        print(f"{ok:>4} of {opts.runs} runs learned both preferences from {opts.events} events: {args}")


if __name__ == "__main__":
    main()
