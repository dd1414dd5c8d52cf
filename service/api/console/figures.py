"""What the console's overview and policy pages show, computed from the store (service/store/console.py
and the queries the API already uses) for one policy and one time window. No Flask here.

The window: the last `span` seconds up to now; if the policy's newest decision is older than that
(a store written by a simulation with a virtual clock, or an idle policy) or later than now, the
window that ends with its newest decision instead, and the page says so."""
from __future__ import annotations

import math
from dataclasses import dataclass

from service.decision.engine import DecisionEngine
from service.learning.registry import VersionRegistry
from service.policy import Policy
from service.policy.catalog import catalog_view
from service.times import to_rfc3339

HOUR = 3600.0
SPANS = {"24h": (24 * HOUR, 24), "7d": (7 * 24 * HOUR, 28)}  # name -> (seconds, buckets)
VERSIONS_SHOWN = 8  # the newest versions listed on a policy's page (the active one always)
Z95 = 1.959964


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    width: float
    count: int
    name: str
    anchored: bool  # ends with the newest decision rather than now

    @property
    def hours(self) -> float:
        return (self.end - self.start) / HOUR


def window(eng: DecisionEngine, policy: str, name: str) -> Window:
    span, count = SPANS[name]
    now = eng.clock.now()
    latest = eng.store.latest_decision_at(policy)
    anchored = latest is not None and not now - span <= latest <= now
    end = latest + 1.0 if anchored else now
    return Window(end - span, end, span / count, count, name, anchored)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def overview(eng: DecisionEngine, p: Policy, w: Window) -> dict:
    """Decisions per hour, sends and holds, explorations, reward (final decisions) against the
    holdout group by bucket, removals by reason, the learner's lag, the active version and its age;
    and the all-time counts GET /v1/policies gives."""
    store = eng.store
    buckets = store.decision_buckets(p.name, w.start, w.width, w.count)
    n = sum(b["decisions"] for b in buckets)
    sends = sum(b["sends"] for b in buckets)
    rewarded, holdout_rewarded = sum(b["rewarded"] for b in buckets), sum(b["holdout_rewarded"] for b in buckets)
    status = store.learning_status(p.name) or {}
    now = eng.clock.now()
    created, closes = status.get("created_at"), status.get("first_unlearned_closes_at")
    return {
        "policy": p.name, "description": p.spec.description, "buckets": buckets,
        "totals": store.policy_counts(p.name, now),
        "decisions": n, "per_hour": n / w.hours, "sends": sends, "holds": n - sends,
        "send_share": _share(sends, n), "hold_share": _share(n - sends, n),
        "explore_share": _share(sum(b["explores"] for b in buckets), n),
        "holdout_share": _share(sum(b["holdouts"] for b in buckets), n),
        "reward": _mean(sum(b["reward_sum"] for b in buckets), rewarded), "rewarded": rewarded,
        "holdout_reward": _mean(sum(b["holdout_reward_sum"] for b in buckets), holdout_rewarded),
        "holdout_rewarded": holdout_rewarded,
        "reward_series": [_mean(b["reward_sum"], b["rewarded"]) for b in buckets],
        "holdout_series": [_mean(b["holdout_reward_sum"], b["holdout_rewarded"]) for b in buckets],
        "removed": store.removal_reasons(p.name, w.start, w.end),
        "active_version": status.get("active_version"),
        "version_age": max(0.0, now - created) if created is not None else None,
        "lag": max(0.0, now - closes) if closes is not None else 0.0,
        "paused": store.pause_state(p.name) is not None,
    }


def interval(total: float, squares: float, n: int) -> tuple[float | None, float | None, float | None]:
    """Mean and a normal 95% interval from a sum, a sum of squares and a count (None below 2)."""
    if n == 0:
        return None, None, None
    mean = total / n
    if n < 2:
        return mean, None, None
    var = max(0.0, (squares - n * mean * mean) / (n - 1))
    half = Z95 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def arms(eng: DecisionEngine, p: Policy, w: Window) -> list[dict]:
    """Every arm of the policy (and any other the window's log chose): its status, share of the
    choices and mean shaped reward of its final decisions with a 95% interval."""
    figures = eng.store.arm_figures(p.name, w.start, w.end)
    states = eng.store.arm_states(p.name)
    chosen = sum(f["chosen"] for f in figures.values())
    rank = p.spec.kind == "personalizer"  # its actions arrive with each Rank request: none declared
    by_id = {} if rank else {a.id: a for a in p.arms}
    out = []
    for arm_id in list(by_id) + sorted(set(figures) - set(by_id)):
        f = figures.get(arm_id, {"chosen": 0, "reward_sum": 0.0, "reward_squares": 0.0, "rewarded": 0})
        arm = by_id.get(arm_id)
        content = arm.content.id if arm is not None and arm.content is not None else None
        state = states.get(arm_id) or states.get(content) or {}
        mean, lo, hi = interval(f["reward_sum"], f["reward_squares"], f["rewarded"])
        out.append({"arm": arm_id, "content": content, "in_policy": arm is not None, "per_request": rank,
                    "status": state.get("status", "active"), "reason": state.get("reason"),
                    "chosen": f["chosen"], "share": _share(f["chosen"], chosen), "rewarded": f["rewarded"],
                    "mean": mean, "lo": lo, "hi": hi})
    return out


def contents(eng: DecisionEngine, p: Policy) -> list[dict]:
    """The policy's contents (and the retired ones) with their switch status and valid window."""
    states = eng.store.arm_states(p.name)
    view = catalog_view(p, eng.store.catalog_changes(p.name), to_rfc3339)
    out = []
    for c, retired in [(c, False) for c in view["contents"]] + [(c, True) for c in view["retired"]]:
        st = states.get(c["id"]) or {}
        out.append(c | {"status": "retired (catalog)" if retired else st.get("status", "active"),
                        "switchable": not retired, "switch_reason": st.get("reason"),
                        "valid_from": to_rfc3339(st.get("valid_from")) or c.get("valid_from"),
                        "valid_until": to_rfc3339(st.get("valid_until")) or c.get("valid_until")})
    return out


def versions(registry: VersionRegistry, eng: DecisionEngine, p: Policy, w: Window) -> dict:
    """The newest model versions (and the active one) with their stored off-policy estimates, the
    latest activations, and the shadow candidate's agreement and estimated value."""
    all_versions = registry.versions(p.name)
    shown = [v for i, v in enumerate(reversed(all_versions)) if i < VERSIONS_SHOWN or v["active"]]
    for v in shown:
        v["evaluation"] = _estimates(registry.latest_evaluation(p.name, v["version"]))
    shadow = registry.shadow_version(p.name)
    shadow_view = None
    if shadow is not None:
        agreement = eng.store.shadow_agreement(p.name, shadow, w.start)
        shadow_view = {"version": shadow, **agreement, "agreement": _share(agreement["agreed"], agreement["scored"]),
                       "evaluation": _estimates(registry.latest_evaluation(p.name, shadow))}
    active = eng.store.active_version(p.name)
    last = registry.activations(p.name, 10)
    return {"versions": shown, "count": len(all_versions), "active": active, "shadow": shadow_view,
            "activations": last,
            "rollback_to": last[0]["previous"] if last and last[0]["previous"] is not None else None}


def _estimates(evaluation: dict | None) -> dict | None:
    """A stored evaluation as the page shows it: the candidate's estimates (value, interval, n),
    the lift over the reference, and when it was made."""
    if not evaluation:
        return None
    body = evaluation.get("evaluation", evaluation)
    rows = [r for r in body.get("rows", []) if isinstance(r, dict)]
    candidate = body.get("candidate")
    mine = [r for r in rows if r.get("target") == candidate] or rows
    if not mine and isinstance(body.get("estimates"), list):  # a Personalizer loop's (rank_retrain.py)
        mine = [{"estimator": f"SNIPS {e.get('name')}", "value": e.get("value"), "lo": e.get("lo"),
                 "hi": e.get("hi"), "n": body.get("n")} for e in body["estimates"] if isinstance(e, dict)]
    by = "SNIPS" if body.get("policy_kind") == "personalizer" else "DR"
    return {"rows": mine[:4], "lift": body.get("lift"), "reference": body.get("reference"), "lift_by": by,
            "at": evaluation.get("stored_at"),
            "held_out": bool(body.get("held_out"))}
