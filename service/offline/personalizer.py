"""A Personalizer loop's offline evaluation (POST/PUT /personalizer/evaluations, docs/personalizer.md):
each learning setting (VW arguments) replayed over the logged Rank events, and its expected reward
estimated off-policy with a confidence interval.

A setting is trained from scratch in log order, and every event is scored before it is learned
(progressive validation): the target probability of the logged action is the setting's
probability before it saw that event. The estimate is SNIPS (models/ope/estimators.py) over the
events' final rewards; its interval is Student's t with the weights' degrees of freedom, as for
every Tactful evaluation (docs/ope.md). Besides the settings asked for, the result always holds
the `Online` policy (what was served: the mean of the logged rewards) and the `Baseline` (the
first action of each request, Personalizer's baseline).
"""
from __future__ import annotations

import numpy as np

from models.featurize import action_line, shared_line
from models.ope.data import BanditData
from models.ope.estimators import SNIPS
from models.vw_policy import VWPolicy
from service.policy import Policy
from service.policy.bandit import decision_reward
from service.policy.personalizer import learnable, reward_cost
from service.store import Decision, Store

MAX_EVENTS = 200_000


def logged_events(store: Store, policy: Policy, since: float | None, until: float | None,
                  now: float) -> list[tuple[Decision, float, bool]]:
    """The final Rank events decided in [since, until): each with its reward and whether it is
    learned (not LoggingOnly, activated when deferred)."""
    decisions = store.final_decisions(policy.name, 0, now, since, until, MAX_EVENTS)
    outcomes = store.outcomes_for([d.event_id for d in decisions])
    return [(d, decision_reward(policy, d, outcomes[d.event_id]), learnable(d, outcomes[d.event_id]))
            for d in decisions if d.history.get("personalizer", {}).get("actions")]


def event_data(events: list[tuple[Decision, float, bool]]) -> BanditData:
    """Rank events as logged bandit feedback: K the most actions an event had, each event's
    actions in their logged order."""
    k = max(len(d.allowed) for d, _, _ in events)
    n = len(events)
    allowed = np.zeros((n, k), dtype=bool)
    action = np.zeros(n, dtype=int)
    for i, (d, _, _) in enumerate(events):
        allowed[i, :len(d.allowed)] = True
        action[i] = d.allowed.index(d.arm)
    return BanditData(reward=np.array([r for _, r, _ in events]), action=action,
                      pscore=np.array([d.probability for d, _, _ in events]), allowed=allowed,
                      reward_bounds=(-1.0, 1.0))


def estimate(name: str, arguments: str, source: str, data: BanditData, pi: np.ndarray) -> dict:
    """A target policy's expected reward over Rank events (SNIPS) and its 95% interval."""
    return _result(name, arguments, source, data, pi)


def _result(name: str, arguments: str, source: str, data: BanditData, pi: np.ndarray) -> dict:
    est = SNIPS()
    lo, hi = est.interval(data, pi)
    value = est.estimate(data, pi)
    return {"name": name, "arguments": arguments, "policySource": source,
            "summary": {"expectedReward": _finite(value), "confidenceInterval": [_finite(lo), _finite(hi)]},
            "events": int(data.n)}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_settings(events: list[tuple[Decision, float, bool]], settings: list[tuple[str, str]],
                      online_args: str) -> list[dict]:
    """The expected reward of the online policy, the baseline and each (name, arguments) setting
    over `events`, with a 95% interval each."""
    events = [e for e in events if e[2]]  # only the events the loop learns are evaluated
    if not events:
        return []
    data = event_data(events)
    out = [_result("Online", online_args, "Online", data, online_target(data)),
           _result("Baseline", "", "Baseline", data, baseline_target(events, data.n_arms))]
    for name, arguments in settings:
        out.append(_result(name, arguments, "Custom", data, _replay(events, arguments, data.n_arms)))
    return out


def online_target(data: BanditData) -> np.ndarray:
    """What was served: the logged action with its own probability (weights of 1: SNIPS gives the
    logged mean)."""
    pi = np.zeros((data.n, data.n_arms))
    pi[np.arange(data.n), data.action] = data.pscore
    return pi


def baseline_target(events: list[tuple[Decision, float, bool]], k: int) -> np.ndarray:
    """Personalizer's baseline: each request's first action, or the slot's baseline action."""
    pi = np.zeros((len(events), k))
    for i, (d, _, _) in enumerate(events):
        pi[i, d.allowed.index(d.history["personalizer"].get("baseline", d.allowed[0]))] = 1.0
    return pi


def event_lines(d: Decision) -> tuple[str, list[str]]:
    """A Rank event's VW shared line and action lines, rebuilt from what its decision logged."""
    actions = d.history["personalizer"]["actions"]
    return shared_line(d.context, {}), [action_line(a["id"], a["features"]) for a in actions]


def learn_events(model: VWPolicy, events: list[tuple[Decision, float, bool]]) -> None:
    """`model` learns the events the loop learns, in log order."""
    for d, reward, learned in events:
        if learned:
            shared, lines = event_lines(d)
            model.learn_lines(shared, lines, d.allowed.index(d.arm), reward_cost(reward), d.probability)


def progressive(model: VWPolicy, events: list[tuple[Decision, float, bool]], k: int,
                serve=None) -> np.ndarray:
    """The model's probability of every logged action (through `serve`, when given: the pmf Rank
    would serve from the model's), each before it learns that event."""
    pi = np.zeros((len(events), k))
    for i, (d, reward, _) in enumerate(events):
        shared, lines = event_lines(d)
        pmf = model.predict_lines(shared, lines)
        pi[i, :len(lines)] = serve(pmf) if serve is not None else pmf
        model.learn_lines(shared, lines, d.allowed.index(d.arm), reward_cost(reward), d.probability)
    return pi


def _replay(events: list[tuple[Decision, float, bool]], arguments: str, k: int) -> np.ndarray:
    """The setting's probability of every logged action, before it learned that event."""
    model = VWPolicy([], own_args(arguments))
    try:
        return progressive(model, events, k)
    finally:
        model.close()


def train_setting(events: list[tuple[Decision, float, bool]], arguments: str, seed: int = 0) -> bytes:
    """A model of the setting learned from nothing over the events the loop learns, in log order:
    what applying an evaluated setting (POST /configurations/applyFromEvaluation) serves."""
    model = VWPolicy([], own_args(arguments), seed)
    try:
        learn_events(model, events)
        return model.to_bytes()
    finally:
        model.close()


def own_args(arguments: str) -> str:
    """A setting's arguments without what Tactful sets itself (`--cb_explore_adf` and file options)."""
    drop = {"--cb_explore_adf", "--cb_adf", "--quiet"}
    return " ".join(t for t in arguments.split() if t not in drop)
