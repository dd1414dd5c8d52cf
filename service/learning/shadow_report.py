"""How a shadow candidate did on live decisions: how often it agreed with the served arm (on the
same draw) and with the served favourite, and its estimated value against the logged one and
uniform choice (off-policy, with intervals). The scores come from `shadow.py`'s scorer.

Apart from the scorer because it needs the off-policy estimators (scipy, scikit-learn), which a
serving worker never loads."""
from __future__ import annotations

import numpy as np

from models.ope import OffPolicyEvaluation, RewardModel, default_estimators
from service.offline.errors import EvaluationError
from service.offline.evaluate import bandit_data
from service.offline.export import final_decisions
from service.offline.personalizer import estimate, event_data
from service.offline.target_policies import uniform_target
from service.policy.spec import format_duration
from service.policy import Policy
from service.store import Store
from service.times import to_rfc3339


def shadow_report(store: Store, policy: Policy, now: float, since: float | None = None, until: float | None = None,
                  seed: int = 0) -> dict:
    """Agreement of the shadow candidate with the served decisions and its estimated value."""
    policy = policy.known()  # every arm it ever had: the log's arm sets change over time
    shadows = store.shadow_decisions(policy.name)
    if not shadows:
        raise EvaluationError(_nothing_scored(store, policy))
    rows = [r for r in final_decisions(store, policy, now, since, until) if r.decision.event_id in shadows]
    if not rows:
        first = min(s["at"] for s in shadows.values())
        closes = first + policy.spec.reward.window
        raise EvaluationError(
            f"the shadow candidate of {policy.name!r} has scored {len(shadows)} live decisions, none of them final "
            f"at {to_rfc3339(now)}" + (" in that time range" if since is not None or until is not None else "")
            + f": a decision is final once its reward window ({format_duration(policy.spec.reward.window)}) has "
            f"closed, the first at about {to_rfc3339(closes)}. Run again then (or pass --now with a later time)")
    if policy.spec.kind == "personalizer":
        return _ranked_report(policy, rows, shadows)
    data = bandit_data(policy, rows)
    pi = np.zeros((len(rows), len(policy.arms)))
    agree = greedy = 0
    versions = set()
    for i, row in enumerate(rows):
        s = shadows[row.decision.event_id]
        versions.add(s["version"])
        probs = s["probabilities"]
        pi[i, [policy.arm_index[a] for a in row.decision.allowed]] = probs
        agree += s["arm"] == row.decision.arm
        greedy += int(np.argmax(probs)) == int(np.argmax(row.decision.probabilities))
    ope = OffPolicyEvaluation(data, default_estimators(), RewardModel(), seed=seed)
    est = ope.run(pi)
    base = ope.run(uniform_target(data))
    lines = [f"shadow candidate version(s) {sorted(versions)} of {policy.name}: {len(rows)} final decisions",
             f"agreement with the served arm: {agree / len(rows):.1%} (same draw); same favourite arm: "
             f"{greedy / len(rows):.1%}",
             f"served (logged) mean reward: {float(data.reward.mean()):.4f}"]
    for e in est:
        lines.append(f"  candidate {e.estimator:<9} {e.value:.4f} [{e.lo:.4f}, {e.hi:.4f}]  ESS {e.ess:.0f}")
    for e in base:
        lines.append(f"  uniform   {e.estimator:<9} {e.value:.4f} [{e.lo:.4f}, {e.hi:.4f}]")
    return {"versions": sorted(versions), "n": len(rows), "agreement": agree / len(rows),
            "favourite_agreement": greedy / len(rows), "logged_mean_reward": float(data.reward.mean()),
            "estimates": [e.as_dict() for e in est], "uniform": [e.as_dict() for e in base], "text": "\n".join(lines)}


def _ranked_report(policy: Policy, rows: list, shadows: dict) -> dict:
    """The shadow report of a Personalizer loop's Rank events: agreement with the served actions
    and the candidate's expected reward (SNIPS, docs/personalizer.md)."""
    events = [(r.decision, r.reward, True) for r in rows]
    data = event_data(events)
    pi = np.zeros((data.n, data.n_arms))
    agree = greedy = 0
    for i, row in enumerate(rows):
        s = shadows[row.decision.event_id]
        pi[i, :len(s["probabilities"])] = s["probabilities"]
        agree += s["arm"] == row.decision.arm
        greedy += int(np.argmax(s["probabilities"])) == int(np.argmax(row.decision.probabilities))
    est = estimate("shadow", "", "Custom", data, pi)["summary"]
    versions = sorted({shadows[r.decision.event_id]["version"] for r in rows})
    text = (f"shadow candidate version(s) {versions} of {policy.name}: {len(rows)} final Rank events\n"
            f"agreement with the served action: {agree / len(rows):.1%} (same draw); same favourite: "
            f"{greedy / len(rows):.1%}\nserved (logged) mean reward: {float(data.reward.mean()):.4f}\n"
            f"  candidate SNIPS {est['expectedReward']} {est['confidenceInterval']}")
    return {"versions": versions, "n": len(rows), "agreement": agree / len(rows),
            "favourite_agreement": greedy / len(rows), "logged_mean_reward": float(data.reward.mean()),
            "estimates": [{"estimator": "SNIPS", "value": est["expectedReward"], "lo": est["confidenceInterval"][0],
                           "hi": est["confidenceInterval"][1]}], "uniform": [], "text": text}


def _nothing_scored(store: Store, policy: Policy) -> str:
    """Why there is no shadow decision to report on: no shadow set, or one set that has not
    scored a live decision yet."""
    version = store.shadow_version(policy.name)
    if version is None:
        return (f"policy {policy.name!r} has no shadow candidate: set one with "
                f"`tactful models shadow --policy {policy.name} VERSION`, let the service decide for a while, "
                f"then run this again")
    return (f"version {version} shadows policy {policy.name!r} but has scored no decision yet: it scores each "
            f"decision the running service (`tactful serve` on this store) makes from now on, and the report "
            f"needs those decisions to be final (reward window {format_duration(policy.spec.reward.window)}). "
            f"Run this again once decisions were made and their window closed")
