"""Contact history crossed with the arms (`-q HA`: recent contacts, recency x the arms' parts,
hold included) lets the learner leave a tired person alone; without the cross, history shifts
every arm's score equally under `--cb_explore_adf` and never changes the choice. The example
policy does not ship the cross (it cost learning speed on `standard`: docs/policies.md); this is
the evidence of what it does, with the example's settings otherwise.

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


def example_args() -> str:
    return load_policy(EXAMPLE).spec.learner.vw_args


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_history_crossed_with_the_arms_holds_back_a_tired_person(tmp_path, seed):
    blind = example_args()
    assert "-q HA" not in blind
    example = blind.replace("-q UA", "-q UA -q HA")
    crossed = tiring_log(tmp_path / "crossed.db", example, seed)
    uncrossed = tiring_log(tmp_path / "uncrossed.db", blind, seed)
    assert crossed["tired"] > 100 and crossed["rested"] > 50, crossed
    # it holds a tired person back far more often than a rested one ...
    assert crossed["hold_tired"] - crossed["hold_rested"] > 0.3, crossed
    # ... which history that is not crossed with the arms cannot do (its choice ignores history)
    assert (crossed["hold_tired"] - crossed["hold_rested"]) - (uncrossed["hold_tired"] - uncrossed["hold_rested"]) \
        > 0.25, (crossed, uncrossed)
    assert crossed["reward"] > uncrossed["reward"], (crossed, uncrossed)
