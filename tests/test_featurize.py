"""The arm itself sits in a namespace of its own (`Id`), so that a policy's vw_args decide whether
the model may learn a table of arms beyond their parts: `-q UI` can learn favourites that are not
additive in content and channel; `--ignore I` makes the token invisible to the model."""
from __future__ import annotations

import numpy as np

from models.featurize import arm_line
from models.vw_policy import VWPolicy

CONTENTS, CHANNELS = ("spring_sale", "win_back"), ("email", "push")
ARMS = [(c, ch) for c in CONTENTS for ch in CHANNELS]
LINES = [arm_line(c, "promotion", ("seasonal",), ch, "now") for c, ch in ARMS]


def good(segment: int, arm: int) -> bool:
    """An XOR population: segment 0 likes spring_sale by email and win_back by push, segment 1
    the other two. No content and no channel is better than another in either segment."""
    c, ch = ARMS[arm]
    return ((c == "spring_sale") == (ch == "email")) != bool(segment)


def train(vw_args: str, lines: list[str], n: int = 3000, seed: int = 0) -> VWPolicy:
    model = VWPolicy(lines, vw_args)
    rng = np.random.default_rng(seed)
    allowed = list(range(len(lines)))
    for _ in range(n):
        s = int(rng.integers(2))
        chosen = int(rng.integers(len(lines)))
        clicked = rng.random() < (0.8 if good(s, chosen) else 0.2)
        model.learn(f"shared |User segment=s{s}", allowed, chosen, 0.0 if clicked else 1.0, 1 / len(lines))
    return model


def test_crossing_the_arm_itself_learns_a_favourite_that_is_not_additive():
    model = train("--squarecb --gamma_scale 300 -q UA -q UI -b 20", LINES)
    for s in (0, 1):
        pmf = model.predict(f"shared |User segment=s{s}", list(range(len(ARMS))))
        assert sum(p for a, p in enumerate(pmf) if good(s, a)) > 0.9, pmf


def test_ignore_I_makes_the_model_blind_to_the_arm_itself():
    without = [line.split(" |Id ")[0] for line in LINES]
    assert all(" |Id arm=" in line for line in LINES) and without != LINES
    args = "--squarecb --gamma_scale 300 -q UA -q UI --ignore I -b 20"
    a, b = train(args, LINES), train(args, without)
    for s in (0, 1):
        shared = f"shared |User segment=s{s}"
        assert np.array_equal(a.predict(shared, [0, 1, 2, 3]), b.predict(shared, [0, 1, 2, 3]))
    assert a.to_bytes()[-1024:] == b.to_bytes()[-1024:]
