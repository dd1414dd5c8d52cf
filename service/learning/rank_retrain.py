"""`tactful evaluate` and `tactful retrain` for a Personalizer loop (a policy of kind
"personalizer", docs/personalizer.md), whose actions arrive with each Rank request instead of
coming from a catalogue of arms.

The catalogue tools (service/offline/evaluate.py, service/learning/retrain.py) score a fixed set
of arms; here every event carries its own action lines, logged with the decision, so a model is
replayed over those lines. The estimates are the same as the evaluations API's
(service/offline/personalizer.py): SNIPS over the learned events' final rewards, with a 95%
interval, beside `Online` (what was served: the mean logged reward) and `Baseline` (each
request's first action, or the slot's baseline).

A model is scored *progressively*: on each event it gives its probability of the logged action,
then learns that event, as the loop would after its promotion (it keeps learning online). So a
version's estimate is what it does from its own state on, and a setting's is what it learns from
nothing. The probabilities are the ones Rank would serve: the model's favourite, with the loop's
current `explorationPercentage` spread evenly (service/policy/personalizer.py `served_pmf`).

Retrain cuts the learned events by time into train | select | held out, as the catalogue retrain
does and for the same reason (the winner's curse, docs/models.md): each setting of a small grid
learns the training slice and is scored on the selection slice; the winner learns training and
selection slices together, is stored as a candidate version (source `retrain`, not active), and is
scored on the held-out slice only. Its lift over `Online` on that slice, with a bootstrap
interval, is the evaluation stored beside it, which `tactful models promote` checks.
"""
from __future__ import annotations

import numpy as np

from models.ope.data import BanditData
from models.ope.estimators import SNIPS
from models.vw_policy import VWPolicy
from service.learning.personalizer import SERVICE
from service.learning.registry import VersionRegistry
from service.offline.errors import EvaluationError, NotEnoughData
from service.offline.personalizer import (baseline_target, event_data, learn_events, logged_events, online_target,
                                          own_args, progressive)
from service.policy import Policy
from service.policy.personalizer import ServiceSettings, served_pmf
from service.store import Decision, Store
from service.times import to_rfc3339

# the settings retrain tries: the interactions Personalizer users reach for (context x action
# features; the same and context x action id), each at VW's default rate and a slower one
GRID = ("--cb_type mtr -q UA", "--cb_type mtr -q UA -q UI", "--cb_type mtr -q UA -q UI -l 0.1",
        "--cb_type mtr -q UA -q UI --power_t 0 -l 0.01")
MIN_EVENTS = 50
Event = tuple[Decision, float, bool]


def learned_events(store: Store, policy: Policy, now: float, since: float | None,
                   until: float | None) -> list[Event]:
    events = [e for e in logged_events(store, policy, since, until, now) if e[2]]
    events.sort(key=lambda e: (e[0].decided_at, e[0].seq))
    return events


def exploration(store: Store, policy: Policy) -> float:
    """The loop's explorationPercentage now (GET /personalizer/configurations/service)."""
    return ServiceSettings.from_stored(store.personalizer_document(policy.name, *SERVICE)).exploration


def _served(explore: float):
    return lambda pmf: served_pmf(pmf, explore)


def lift(data: BanditData, pi: np.ndarray, n_boot: int, seed: int) -> dict:
    """The candidate's SNIPS value minus the logged mean (Online), with a bootstrap 95% interval
    over events (the two share every event, so they are resampled together)."""
    w = pi[np.arange(data.n), data.action] / data.pscore
    y = data.reward
    value = float((w * y).sum() / w.sum() - y.mean())
    rng = np.random.default_rng(seed)
    rises = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, data.n, data.n)
        ws = w[idx].sum()
        rises[b] = ((w[idx] * y[idx]).sum() / ws if ws > 0 else np.nan) - y[idx].mean()
    lo, hi = np.nanquantile(rises, [0.025, 0.975])
    return {"value": value, "lo": float(lo), "hi": float(hi)}


def _estimate(name: str, data: BanditData, pi: np.ndarray) -> dict:
    est = SNIPS()
    lo, hi = est.interval(data, pi)
    return {"name": name, "value": float(est.estimate(data, pi)), "lo": float(lo), "hi": float(hi)}


def evaluation(name: str, data: BanditData, pi: np.ndarray, events: list[Event], n_boot: int, seed: int) -> dict:
    """A candidate's evaluation in the shape `tactful models promote` reads (n, lift, reference)."""
    return {"policy_kind": "personalizer", "candidate": name, "reference": "Online", "n": int(data.n),
            "from": to_rfc3339(events[0][0].decided_at), "to": to_rfc3339(events[-1][0].decided_at),
            "estimator": "SNIPS", "lift": lift(data, pi, n_boot, seed),
            "estimates": [_estimate(name, data, pi), _estimate("Online", data, online_target(data)),
                          _estimate("Baseline", data, baseline_target(events, data.n_arms))]}


def _need(events: list[Event], policy: Policy, what: str, need: int = MIN_EVENTS) -> None:
    if len(events) < need:
        raise NotEnoughData(f"policy {policy.name!r} has {len(events)} learned Rank events in that span; "
                            f"{what} needs at least {need}")


def evaluate_rank(store: Store, policy: Policy, candidate: str, now: float, since: float | None = None,
                  until: float | None = None, n_boot: int = 500, seed: int = 0) -> dict:
    """`tactful evaluate` on a Rank loop: `candidate` is a model version (3 or v3), scored from its
    own state on, or VW arguments (quoted, starting with `-`), scored learning from nothing."""
    events = learned_events(store, policy, now, since, until)
    _need(events, policy, "an evaluation", 1)
    data = event_data(events)
    version = None
    if candidate.lstrip("v").isdigit():
        version = int(candidate.lstrip("v"))
        row = store.model(policy.name, version)
        if row is None:
            raise EvaluationError(f"policy {policy.name!r} has no model version {version}")
        model = VWPolicy([], row["vw_args"] or "", seed, model_bytes=row["model"])
    elif candidate.startswith("-"):
        model = VWPolicy([], own_args(candidate), seed)
    else:
        raise EvaluationError(f"candidate {candidate!r}: a model version (3 or v3) or VW arguments "
                              "(for a Personalizer loop)")
    try:
        pi = progressive(model, events, data.n_arms, _served(exploration(store, policy)))
    finally:
        model.close()
    result = evaluation(f"version {version}" if version is not None else candidate, data, pi, events, n_boot, seed)
    return result | {"version": version}


def retrain_rank(store: Store, policy: Policy, now: float, since: float | None = None, until: float | None = None,
                 holdout: float = 0.2, select: float = 0.2, grid: tuple[str, ...] = GRID, n_boot: int = 500,
                 seed: int = 0) -> dict:
    events = learned_events(store, policy, now, since, until)
    _need(events, policy, "retraining", MIN_EVENTS)
    n = len(events)
    a, b = int(n * (1 - select - holdout)), int(n * (1 - holdout))
    train, choose, held_out = events[:a], events[a:b], events[b:]
    k = event_data(events).n_arms
    explore = exploration(store, policy)
    search = []
    for args in grid:
        model = VWPolicy([], args, seed)
        try:
            learn_events(model, train)
            pi = progressive(model, choose, k, _served(explore))
        finally:
            model.close()
        search.append(_estimate(args, _padded(choose, k), pi) | {"vw_args": args})
    chosen = max(search, key=lambda r: r["value"])["vw_args"]
    model = VWPolicy([], chosen, seed)
    try:
        learn_events(model, train + choose)
        model_bytes = model.to_bytes()
        data = _padded(held_out, k)
        pi = progressive(model, held_out, k, _served(explore))
    finally:
        model.close()
    registry = VersionRegistry(store)
    note = {"trained_on": len(train) + len(choose), "n_learned": len(train) + len(choose),
            "trained_to": to_rfc3339(choose[-1][0].decided_at),
            "selected_on": len(choose), "held_out": len(held_out),
            "search": search, "chosen": chosen}
    version, new = registry.add_retrained(policy.name, model_bytes, chosen, now, note)
    result = evaluation(f"version {version}", data, pi, held_out, n_boot, seed) | {"held_out": True}
    registry.store_evaluation(policy.name, version, result, now)  # the latest is what promote reads
    return {"version": version, "new": new, "chosen": chosen, "search": search, "evaluation": result,
            "train": len(train), "select": len(choose), "held_out": len(held_out)}


def _padded(events: list[Event], k: int) -> BanditData:
    """event_data with K the widest action set of the whole log, so every slice's arrays agree."""
    data = event_data(events)
    if data.n_arms == k:
        return data
    allowed = np.zeros((data.n, k), dtype=bool)
    allowed[:, :data.n_arms] = data.allowed
    return BanditData(reward=data.reward, action=data.action, pscore=data.pscore, allowed=allowed,
                      reward_bounds=data.reward_bounds)


def table(result: dict) -> str:
    lines = [f"{'policy':<40} {'SNIPS':>8} {'95% interval':>20}   (n = {result['n']}, reward in [-1, 1])"]
    for e in result["estimates"]:
        lines.append(f"{e['name'][:40]:<40} {e['value']:>8.4f} [{e['lo']:>8.4f}, {e['hi']:>8.4f}]")
    lf = result["lift"]
    lines.append(f"lift over Online: {lf['value']:+.4f} [{lf['lo']:+.4f}, {lf['hi']:+.4f}] (bootstrap)")
    return "\n".join(lines)


__all__ = ["GRID", "evaluate_rank", "retrain_rank", "table"]
