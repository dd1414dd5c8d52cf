"""The example policy learns to leave a tired person alone (issue 15): its `vw_args` cross recent
contact pressure with the hold arm (`-q HR --ignore_linear R`, models/featurize.py). Without a
cross, history shifts every arm's score equally under `--cb_explore_adf` and never changes the
choice; docs/policies.md measures this cross against none and against `-q HA` (history x every
part of every arm).

The population (`tiring_log`, service/simulation/known_truth.py) runs through the real engine,
store and online learner: a send's click probability is 0.4 to a person with no contact in the
last 7 days and falls by 70% with each recent contact, and the policy's reward charges 0.2 per
recent contact (its fatigue term), so sending pays only to a rested person; holding is worth 0."""
from __future__ import annotations

from pathlib import Path

import pytest

from service.policy import load_policy
from service.simulation.known_truth import tiring_log

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policies" / "lifecycle.toml"
CROSS = "-q HR --ignore_linear R"


def example_args() -> str:
    return load_policy(EXAMPLE).spec.learner.vw_args


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_example_policy_holds_back_a_tired_person(tmp_path, seed):
    shipped = example_args()
    assert CROSS in shipped
    blind = " ".join(shipped.replace(CROSS, "").split())
    example = tiring_log(tmp_path / "example.db", shipped, seed)
    uncrossed = tiring_log(tmp_path / "uncrossed.db", blind, seed)
    assert example["tired"] > 100 and example["rested"] > 50, example
    # it holds a tired person back far more often than a rested one ...
    assert example["hold_tired"] - example["hold_rested"] > 0.5, example
    # ... which history that is not crossed with the hold arm cannot do (its choice ignores history)
    assert (example["hold_tired"] - example["hold_rested"]) - (uncrossed["hold_tired"] - uncrossed["hold_rested"]) \
        > 0.25, (example, uncrossed)
    assert example["reward"] > uncrossed["reward"], (example, uncrossed)
