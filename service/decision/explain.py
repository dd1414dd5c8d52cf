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

WHY = {
    "explore": "sampled an arm other than the model's favourite, to keep learning",
    "exploit": "the model's favourite among the allowed arms",
    "holdout": "this person is in the policy's holdout group and gets the baseline",
    "consistent": "kept the content of an earlier decision with the same consistency key",
}


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
    favourite = None
    if d.allowed:
        top = max(range(len(d.probabilities)), key=d.probabilities.__getitem__)
        favourite = {"arm": d.allowed[top], "probability": d.probabilities[top]}
    if "paused" in reasons:
        why = "the policy is paused by an operator: nothing is sent until it is resumed (see removed)"
    elif set(reasons) == {"circuit_breaker"} and reasons["circuit_breaker"] == sum(not a.hold for a in policy.arms):
        why = "the policy's circuit breaker is open: nothing is sent until it closes (see removed)"
    elif d.mode == "fallback":
        why = ("no usable model, or no arm allowed: the policy's fallback was served" if d.allowed
               else "every arm was removed by a guardrail: nothing is sent")
    else:
        why = WHY[d.mode]
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
            "hold": d.channel is None,
        },
        "probability": d.probability,
        "removed": {"count": len(d.removed), "reasons": reasons},
        "explanation": explanation,
    }
