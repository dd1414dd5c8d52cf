"""Learning with cached action examples (VWPolicy.learn) gives exactly the model that parsing
every line gives (VWPolicy.learn_text): the simulator's speed relies on it, the online learner too.
Where VW learns the chosen arm's example alone, the other arms are featureless stand-ins; the
model is still the same, bit for bit, and where VW uses every arm it gets the arms."""
from __future__ import annotations

import numpy as np
import pytest

from models.vw_policy import VWPolicy
from service.policy.bandit import arm_lines
from service.policy import load_policy
from conftest import POLICIES_DIR

LIFECYCLE = load_policy(POLICIES_DIR / "lifecycle.toml")
SETTINGS = {
    "the example policy's, with -q HA": (LIFECYCLE.spec.learner.vw_args + " -q HA", True),
    "epsilon-greedy, -q UA -q UI": ("--epsilon 0.1 -q UA -q UI -l 0.2", True),
    "ips": ("--cb_type ips -q UA", False),
    "bagging": ("--bag 3 -q UA", False),
    "SquareCB with elimination": ("--squarecb --elim -q UA", False),
}


def _learn_both(cached: VWPolicy, text: VWPolicy, lines: list[str], seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(600):
        shared = (f"shared |User segment=s{rng.integers(4)} tenure_days:{rng.random():.3f} "
                  f"|History contacts_7d:{rng.integers(5)} recency=lt3d")
        allowed = sorted(rng.choice(len(lines), size=int(rng.integers(1, len(lines))), replace=False).tolist())
        chosen, cost, p = int(rng.integers(len(allowed))), float(rng.random()), float(rng.uniform(0.02, 1))
        cached.learn(shared, allowed, chosen, cost, p)
        text.learn_text(shared, allowed, chosen, cost, p)
        if rng.random() < 0.1:  # predictions in between must not disturb learning
            cached.predict(shared, allowed)
            text.predict(shared, allowed)


def _same_predictions(a: VWPolicy, b: VWPolicy, arms: int) -> bool:
    everything = list(range(arms))
    for s in range(4):
        for contacts in range(5):
            shared = f"shared |User segment=s{s} tenure_days:0.5 |History contacts_7d:{contacts} recency=lt1d"
            if not np.array_equal(a.predict(shared, everything), b.predict(shared, everything)):
                return False
    return True


@pytest.mark.parametrize("name", SETTINGS)
def test_cached_learning_is_identical_to_text_learning(name):
    args, chosen_only = SETTINGS[name]
    lines = arm_lines(LIFECYCLE)
    cached, text = VWPolicy(lines, args), VWPolicy(lines, args)
    assert (cached._blanks is not None) is chosen_only  # the stand-ins only where VW learns one arm
    _learn_both(cached, text, lines)
    assert _same_predictions(cached, text, len(lines))
    # the saved weights are the same too; only the header's parser statistics (features parsed) differ
    a, b = cached.to_bytes(), text.to_bytes()
    assert len(a) == len(b) and a[-1024:] == b[-1024:]


def test_stand_ins_would_change_a_model_that_learns_every_arm():
    """Why the stand-ins are kept to the stacks that learn the chosen arm alone: with ips, VW
    learns every arm's example, and featureless ones teach it something else."""
    lines = arm_lines(LIFECYCLE)
    args = SETTINGS["ips"][0]
    forced, text = VWPolicy(lines, args), VWPolicy(lines, args)
    forced._blanks = []
    _learn_both(forced, text, lines)
    assert not _same_predictions(forced, text, len(lines))
