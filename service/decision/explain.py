"""What a decision says about itself: its mode and why, the model's favourite, what was removed
and why (grouped by rule), the send time and the person's time zone. The same rendering answers
a decide, `GET /v1/events/{id}` and a person's "why did I get this?"."""
from __future__ import annotations

from service.decision.guardrails import Verdict
from service.policy import Policy
from service.store import Decision
from service.times import to_rfc3339

# the modes of a decision, defined once: the engine sets them, the store logs them, the simulator
# counts them
MODES = ("explore", "exploit", "holdout", "fallback", "consistent")

# A probability within this relative distance of the largest ties with it: the engine's mode and
# the explanation's favourite both read ties through `favourites`, so they cannot disagree.
TIE = 1e-4

SUMMARY = {
    "exploit": "the model's favourite among the allowed arms",
    "exploit_tied": "one of the model's {n} equal favourites among the allowed arms",
    "explore": "sampled an arm other than the model's favourite, to keep learning",
    "explore_flat": ("the model has no favourite yet (all {n} allowed arms are equally likely): "
                     "one was drawn at random, to learn"),
    "holdout": "this person is in the policy's holdout group and gets the baseline, not the model",
    "consistent": "kept the content of an earlier decision with the same consistency key",
    "fallback": "no usable model: the policy's fallback was served",
    "fallback_empty": "every arm was removed by a guardrail: nothing is sent",
}


def favourites(probabilities) -> list[int]:
    """The positions of the most probable arms: every arm tied with the largest probability."""
    probs = list(probabilities)
    if not probs:
        return []
    floor = max(probs) * (1 - TIE)  # once, not once per arm
    return [i for i, p in enumerate(probs) if p >= floor]


def scored_mode(probabilities, pos: int) -> str:
    """The mode of a draw at `pos` from the model's own distribution: `exploit` when the drawn
    arm is a favourite and the model has one (a flat distribution over several arms has none:
    every draw from it explores)."""
    top = favourites(probabilities)
    flat = len(top) == len(probabilities) > 1
    return "exploit" if pos in top and not flat else "explore"


def explain_choice(mode: str, allowed: list[str], probabilities: list[float], arm: str) -> tuple[dict | None, str]:
    """The model's favourite ({arm, probability} or None) and the summary of a decision, read
    from what was logged, so that they agree with its mode and its chosen arm in every case:

    - holdout, fallback: the model did not choose, so it names no favourite;
    - exploit: the favourite is the chosen arm (on a tie, the chosen one of the tied arms);
    - explore: the favourite is a more probable arm than the chosen one, or None when the
      distribution is flat (the model has no favourite yet);
    - consistent: the favourite among the arms of the kept content (only those were scored), or
      None when they are equally likely.
    """
    if mode == "fallback" or not allowed:
        return None, SUMMARY["fallback" if allowed else "fallback_empty"]
    if mode == "holdout":
        return None, SUMMARY["holdout"]
    top = favourites(probabilities)
    pos = allowed.index(arm) if arm in allowed else -1
    scored = sum(map((0.0).__lt__, probabilities))  # the arms with p > 0, counted in C
    flat = len(top) == scored > 1
    if mode == "consistent":
        if flat:
            return None, SUMMARY["consistent"] + "; the model has no favourite among its arms yet"
        best = pos if pos in top else top[0]
        tail = ("; among its arms, the model's favourite" if best == pos
                else "; among its arms, another than the model's favourite, to keep learning")
        return {"arm": allowed[best], "probability": probabilities[best]}, SUMMARY["consistent"] + tail
    if mode == "exploit" and pos in top:
        fav = {"arm": allowed[pos], "probability": probabilities[pos]}
        return fav, SUMMARY["exploit_tied"].format(n=len(top)) if len(top) > 1 else SUMMARY["exploit"]
    others = [i for i in top if i != pos]
    if flat or not others:
        return None, SUMMARY["explore_flat"].format(n=scored)
    return {"arm": allowed[others[0]], "probability": probabilities[others[0]]}, SUMMARY["explore"]


def removed_summary(removed: dict[str, list]) -> tuple[dict[str, int], list[dict]]:
    """How many removed arms each reason code removed, and the removed arms grouped by rule
    ([{reason, detail, arms}], the largest group first). Arms removed by the same rules share
    one reason list (guardrails.evaluate), so each distinct list is read once."""
    per_list: dict[int, list] = {}  # id(list) -> [the list, how many arms share it]
    for rs in removed.values():
        entry = per_list.get(id(rs))
        if entry is None:
            per_list[id(rs)] = [rs, 1]
        else:
            entry[1] += 1
    counts: dict[str, int] = {}
    groups: dict[tuple[str, str], int] = {}
    for rs, n in per_list.values():
        for code in {r[0] for r in rs}:
            counts[code] = counts.get(code, 0) + n
        for code, detail in rs:
            groups[(code, detail)] = groups.get((code, detail), 0) + n
    return counts, [{"reason": c, "detail": d, "arms": n}
                    for (c, d), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))]


def render(policy: Policy, d: Decision, verdict: Verdict | None = None) -> dict:
    arm = policy.arms[policy.arm_index[d.arm]] if d.arm in policy.arm_index else None
    reasons, groups = removed_summary(d.removed)
    favourite, why = explain_choice(d.mode, d.allowed, d.probabilities, d.arm)
    if "paused" in reasons:  # only the hold was left to choose: say why
        why = "the policy is paused by an operator: nothing is sent until it is resumed (see removed)"
    elif set(reasons) == {"circuit_breaker"} and reasons["circuit_breaker"] == sum(not a.hold for a in policy.arms):
        why = "the policy's circuit breaker is open: nothing is sent until it closes (see removed)"
    explanation = {
        "summary": why,
        "decided_at": to_rfc3339(d.decided_at),
        "allowed_count": len(d.allowed),
        "model_favourite": favourite,
        "removed": groups,
        "history": d.history,
    }
    if verdict is not None:
        explanation["timezone"] = verdict.timezone
        if verdict.moved:
            explanation["moved_out_of_quiet_hours"] = verdict.moved_text()
    if d.history.get("dropped_features"):
        explanation["dropped_features"] = d.history["dropped_features"]
    return {
        "event_id": d.event_id,
        "policy": d.policy,
        "model_version": d.model_version,
        "mode": d.mode,
        "action": {
            "arm": d.arm,
            "content": arm.content.id if arm and arm.content else None,
            "channel": d.channel,
            "timing": arm.timing.name if arm and arm.timing else None,
            "send_at": to_rfc3339(d.send_at),
            # a Rank event (per-request actions) holds only when its guardrails left no action
            "hold": d.channel is None if policy.spec.kind == "catalog" else d.arm not in d.allowed,
        },
        "probability": d.probability,
        "removed": {"count": len(d.removed), "reasons": reasons},
        "explanation": explanation,
    }
