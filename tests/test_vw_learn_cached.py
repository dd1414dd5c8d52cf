"""Learning with cached action examples (VWPolicy.learn) gives exactly the model that parsing
every line gives (VWPolicy.learn_text): the simulator's speed relies on it, the online learner too."""
from __future__ import annotations

import numpy as np

from models.vw_policy import VWPolicy
from service.policy.bandit import arm_lines
from service.policy import load_policy
from conftest import POLICIES_DIR


def test_cached_learning_is_identical_to_text_learning():
    policy = load_policy(POLICIES_DIR / "lifecycle.toml")
    lines = arm_lines(policy)
    args = policy.spec.learner.vw_args + " -q HA"
    cached, text = VWPolicy(lines, args), VWPolicy(lines, args)
    rng = np.random.default_rng(3)
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
    everything = list(range(len(lines)))
    for s in range(4):
        for contacts in range(5):
            shared = f"shared |User segment=s{s} tenure_days:0.5 |History contacts_7d:{contacts} recency=lt1d"
            assert np.array_equal(cached.predict(shared, everything), text.predict(shared, everything))
    # the saved weights are the same too; only the header's parser statistics (features parsed) differ
    a, b = cached.to_bytes(), text.to_bytes()
    assert len(a) == len(b) and a[-1024:] == b[-1024:]
