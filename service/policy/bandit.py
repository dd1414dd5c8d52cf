"""A policy as the learning parts in `models/` see it: its arms as VW action lines, its reward
specification, a fresh model and a policy's first version, and a decision's final shaped reward.
The decision engine, the learner and the offline tools all build their models from here."""
from __future__ import annotations

from models.featurize import arm_line
from models.reward import RewardSpec, shaped_reward
from models.vw_policy import VWPolicy
from service.policy import Policy
from service.policy.personalizer import event_reward
from service.store import Decision, Outcome, Store


def arm_lines(policy: Policy) -> list[str]:
    lines = []
    for arm in policy.arms:
        if arm.hold:
            lines.append(arm_line(None))
        else:
            c = arm.content
            lines.append(arm_line(c.id, c.topic, c.tags, arm.channel, arm.timing.name, c.features))
    return lines


def reward_spec(policy: Policy) -> RewardSpec:
    r = policy.spec.reward
    lo, hi = r.bounds
    return RewardSpec(weights=dict(r.weights), default=r.default,
                      fatigue_per_contact=r.fatigue.per_contact, lo=lo, hi=hi)


def new_model(policy: Policy) -> VWPolicy:
    return VWPolicy(arm_lines(policy), policy.spec.learner.vw_args, seed=policy.spec.learner.seed)


def ensure_active_version(store: Store, policy: Policy, now: float | None) -> int:
    """The policy's active model version; when it has none, a fresh (untrained) model published
    as its first version, created at `now` (None: the clock has no time yet, see
    `Clock.known`). The engine, the learner and `tactful serve` all start from here."""
    active = store.active_version(policy.name)
    if active is None:
        model = new_model(policy)
        try:
            active = store.ensure_initial_version(policy.name, model.to_bytes(), policy.spec.learner.vw_args, now)
        finally:
            model.close()
    return active


def decision_reward(policy: Policy, d: Decision, outcomes: list[Outcome], spec: RewardSpec | None = None) -> float:
    """The final shaped reward of a decision: outcomes counted are those inside its window.
    `spec`: the policy's `reward_spec`, when the caller rewards many decisions. A send reported
    as never delivered (not_sent, bounced, failed) is rewarded as no contact: no fatigue. A
    Personalizer loop's event is rewarded as Personalizer did (service/policy/personalizer.py)."""
    if policy.spec.kind == "personalizer":
        return event_reward(d, outcomes)
    return logged_reward(spec or reward_spec(policy), outcomes, d.closes_at, d.delivered,
                         int(d.history.get("fatigue_contacts", 0)))


def logged_reward(spec: RewardSpec, outcomes, closes_at: float, delivered: bool, fatigue: int) -> float:
    """A logged bandit decision's final shaped reward from its parts (`decision_reward`'s, and the
    learner's, which reads them from the store's rows: service/learning/rows.py)."""
    counted = [(o.type, o.value) for o in outcomes if o.counted and o.at <= closes_at]
    return shaped_reward(spec, counted, is_send=delivered, recent_contacts=fatigue)
