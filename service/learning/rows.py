"""How the online learner learns a bandit policy's decisions from the rows the store gives it
(`Store.learning_rows`: the few columns learning uses, the JSON ones as the text stored), rather
than from `Decision`s: what it learns is the same, decision by decision, as
`service.policy.bandit.decision_reward` and `models.featurize.shared_line` make of a Decision
(tests/test_learner.py compares the models, byte for byte).

Most of learning a decision used to go to Python around VW: a dict and a dataclass per row, three
JSON parses (the allowed arms, the context, the history) and featurizing the context and history
again for every decision. The texts repeat: a simulated log of 25,000 decisions holds 123
distinct lists of allowed arms, 3,140 contexts and 60 histories. So each text is parsed and
featurized once and kept, by the text itself, for as long as the policy is the same object (a
reloaded policy file gets fresh ones, its arms may differ); each cache is emptied when it
reaches `CACHE_SIZE`, so a log whose contexts never repeat costs a parse per row, as before.
"""
from __future__ import annotations

from typing import Sequence

from models.featurize import history_parts, join_shared, user_features
from models.reward import to_cost
from models.vw_policy import VWPolicy
from service.policy import Policy
from service.policy.bandit import logged_reward, reward_spec
from service.store import UNDELIVERED, Outcome
from service.store.records import delivered, loads

CACHE_SIZE = 65536  # entries of each cache


class BanditRows:
    """A bandit policy's logged decisions, learned from the store's learning rows."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.spec = reward_spec(policy)
        # allowed text -> (the arms' indices, the position of each arm in the list), or None when
        # an arm is no longer the policy's
        self._allowed: dict[str, tuple[list[int], dict[str, int]] | None] = {}
        self._user: dict[str, str] = {}  # context text -> its User features
        self._history: dict[str, tuple[tuple[str, str], int]] = {}  # history text -> (history_parts, fatigue)

    def learn(self, model: VWPolicy, rows: Sequence, outcomes: dict[str, list[Outcome]],
              learned: list[tuple[int, float]]) -> int:
        """Learn `rows` (of `LEARNING_COLUMNS`) into `model`, appending each one's (seq, reward)
        to `learned`; how many were skipped (OnlineLearner._learn says which and why)."""
        spec, arm_index = self.spec, self.policy.arm_index
        # most decisions have no outcome: their reward depends on whether they sent and on the
        # fatigue count alone; and a reward's cost on the reward alone (both for this call only)
        plain: dict[tuple[bool, int], float] = {}
        costs: dict[float, float] = {}
        skipped = 0
        for seq, event_id, closes_at, arm, probability, channel, delivery, allowed, context, history in rows:
            hist = self._history.get(history)
            if hist is None:
                hist = self._history_of(history)
            is_send = delivered(channel, delivery)
            got = outcomes[event_id]
            if got:
                reward = logged_reward(spec, got, closes_at, is_send, hist[1])
            else:
                reward = plain.get((is_send, hist[1]))
                if reward is None:
                    reward = plain[is_send, hist[1]] = logged_reward(spec, (), closes_at, is_send, hist[1])
            learned.append((seq, reward))
            if delivery in UNDELIVERED:
                skipped += 1
                continue
            arms = self._allowed[allowed] if allowed in self._allowed else self._allowed_of(allowed)
            if arm not in arm_index or arms is None:
                skipped += 1  # the policy's arms changed since: nothing to map this decision to
                continue
            position = arms[1].get(arm)
            if position is None:
                raise ValueError(f"decision {event_id}: its arm {arm!r} is not among its allowed arms")
            user = self._user.get(context)
            if user is None:
                user = self._user_of(context)
            cost = costs.get(reward)
            if cost is None:
                cost = costs[reward] = to_cost(spec, reward)
            model.learn(join_shared(user, hist[0]), arms[0], position, cost, probability)
        return skipped

    def _allowed_of(self, text: str) -> tuple[list[int], dict[str, int]] | None:
        allowed = loads(text)
        indices = [self.policy.arm_index.get(a) for a in allowed]
        positions: dict[str, int] = {}
        for pos, a in enumerate(allowed):
            positions.setdefault(a, pos)  # the first, as list.index gives
        out = None if None in indices else (indices, positions)
        return _keep(self._allowed, text, out)

    def _user_of(self, text: str) -> str:
        return _keep(self._user, text, user_features(loads(text)))

    def _history_of(self, text: str) -> tuple[tuple[str, str], int]:
        history = loads(text)
        return _keep(self._history, text, (history_parts(history), int(history.get("fatigue_contacts", 0))))


def _keep(cache: dict, key: str, value):
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[key] = value
    return value
