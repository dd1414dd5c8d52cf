"""The arm itself sits in a namespace of its own (`Id`), so that a policy's vw_args decide whether
the model may learn a table of arms beyond their parts: `-q UI` can learn favourites that are not
additive in content and channel; `--ignore I` makes the token invisible to the model."""
from __future__ import annotations

import numpy as np

from models.featurize import arm_line, half_octave_bin, history_features, shared_line
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


# -- Rest: the hold arm in a namespace of its own, crossed with contact pressure (-q HR) ---------

REST_LINES = [arm_line(None), arm_line("spring_sale", "promotion", (), "email", "now"),
              arm_line("win_back", "retention", (), "push", "now")]


def test_rest_is_written_only_for_a_model_that_crosses_it():
    crossed = VWPolicy(REST_LINES, "--squarecb -q UA -q HR --ignore_linear R")
    assert crossed.arm_lines[0] == "|Arm hold |Rest hold" and crossed.arm_lines[1:] == REST_LINES[1:]
    assert VWPolicy(REST_LINES, "--squarecb -q UA").arm_lines == REST_LINES
    # a model loaded from its bytes alone (as workers load versions) knows its own interactions
    assert VWPolicy(REST_LINES, model_bytes=crossed.to_bytes()).arm_lines == crossed.arm_lines


def _tiring(vw_args: str, n: int = 4000, seed: int = 0) -> VWPolicy:
    """Sending pays a rested person (no contact this week) and costs a tired one; holding is
    worth the same to both."""
    model = VWPolicy(REST_LINES, vw_args)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        contacts = int(rng.choice([0, 3]))
        chosen = int(rng.integers(3))
        cost = 0.5 if chosen == 0 else (0.2 if contacts == 0 else 0.8)
        model.learn(f"shared |User segment=all |History contacts_7d:{contacts}", [0, 1, 2], chosen, cost, 1 / 3)
    return model


def test_history_crossed_with_rest_holds_a_tired_person_and_sends_to_a_rested_one():
    model = _tiring("--epsilon 0.05 -q UA -q HR --ignore_linear R")
    rested, tired = (model.predict(f"shared |User segment=all |History contacts_7d:{c}", [0, 1, 2]) for c in (0, 3))
    assert tired[0] > 0.9 and rested[0] < 0.1, (tired, rested)
    # without the cross, history moves every arm's score alike: the choice cannot depend on it
    blind = _tiring("--epsilon 0.05 -q UA")
    rested, tired = (blind.predict(f"shared |User segment=all |History contacts_7d:{c}", [0, 1, 2]) for c in (0, 3))
    assert np.argmax(rested) == np.argmax(tired), (tired, rested)


# -- numbers: a log-scaled value and a half-octave bin ------------------------------------------

def test_a_number_is_written_as_its_log_and_its_half_octave_bin():
    # bins start at 1, 2, 3, 5, 7, 11, 15, 22, 31...: floor(2 * log2(1 + |x|)), signed
    values = (0, 0.5, 1, 1.9, 2, 3, 4, 5, 6, 7, 10, 11, 14, 15, 21, 22, 30, 31, 400, -3)
    assert [half_octave_bin(v) for v in values] == [0, 0, 2, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 17, -4]
    # on integers: no rounding moves a number across an edge
    assert [half_octave_bin(v) for v in (0.9999999999999999, -0.0, 2.0**53 - 2, 2.0**53 - 1)] == [0, 0, 105, 106]
    line = shared_line({"tenure_days": 400, "segment": "new"}, history_features(2, None))
    assert line == ("shared |User tenure_days:5.99396 tenure_days=h17 segment=new "
                    "|History contacts_7d:1.09861 contacts_7d=h3 recency=never")


AB_LINES = [arm_line("feature_tour", "product", (), "in_app", "now"),
            arm_line("spring_sale", "promotion", (), "email", "now")]


def _by_tenure(n: int = 4000, seed: int = 0) -> VWPolicy:
    """The middle of tenure (one to six months) likes the product tour; the newest and the oldest
    customers like the sale: no line in log(tenure) separates the three."""
    model = VWPolicy(AB_LINES, "--squarecb --gamma_scale 300 -q UA -b 20")
    rng = np.random.default_rng(seed)
    for _ in range(n):
        tenure = float(rng.choice([5, 90, 1500])) + float(rng.integers(5))
        chosen = int(rng.integers(2))
        likes = 0 if 30 <= tenure < 180 else 1
        cost = 0.2 if chosen == likes else 0.8
        model.learn(shared_line({"tenure_days": tenure}, {}), [0, 1], chosen, cost, 0.5)
    return model


def test_the_bins_let_the_arms_depend_on_a_number_that_is_not_monotone():
    model = _by_tenure()
    for tenure, likes in ((6, 1), (92, 0), (1502, 1)):
        pmf = model.predict(shared_line({"tenure_days": tenure}, {}), [0, 1])
        assert pmf[likes] > 0.9, (tenure, pmf)
