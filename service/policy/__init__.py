"""Policies: one decision problem each, declared in a TOML file (the format: `spec.py`,
docs/policies.md), parsed once into a `Policy` whose arms are enumerated once.

A policy file is parsed once into frozen pydantic models. Every validation error names the file,
the key (dotted, with list indices) and the reason, so a typo is found without reading code.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from service.specfile import read_toml, validate
from service.policy.spec import (HOLD_ARM, Cap, Content, FeatureSpec, PolicyError, PolicySpec, Timing)

__all__ = ["HOLD_ARM", "Arm", "Cap", "Content", "FeatureSpec", "Policy", "PolicyError", "PolicySpec", "Timing",
           "load_policies", "load_policy", "parse_policy", "policy_from_text"]


@dataclass(frozen=True)
class Arm:
    id: str
    content: Content | None
    channel: str | None
    timing: Timing | None

    @property
    def hold(self) -> bool:
        return self.content is None


class Policy:
    """A validated policy with its arms enumerated once. `retired`: contents it no longer offers
    (deleted from its live catalog, service/policy/catalog.py) whose logged decisions are still
    learned and evaluated: `known()` is the policy with them, which the learner and the offline
    tools use, so that an arm set that changed over time maps every logged arm."""

    def __init__(self, spec: PolicySpec, path: str = "<memory>", retired: tuple[Content, ...] = ()):
        self.spec = spec
        self.path = path
        self.retired = retired
        self._known: Policy | None = None if retired else self
        arms: list[Arm] = []
        if spec.arms.hold:
            arms.append(Arm(HOLD_ARM, None, None, None))
        for content in spec.content:
            for channel in spec.channels:
                for timing in spec.timing:
                    if any(r.matches(content.id, channel, timing.name) for r in spec.arms.exclude):
                        continue
                    arms.append(Arm(f"{content.id}:{channel}:{timing.name}", content, channel, timing))
        if not arms:
            raise PolicyError(path, "arms", "every combination is excluded and hold is off: no arm is left")
        self.arms: tuple[Arm, ...] = tuple(arms)
        self.arm_index = {a.id: i for i, a in enumerate(self.arms)}
        self.arm_ids = [a.id for a in self.arms]
        if spec.learner.fallback_arm not in self.arm_index:
            raise PolicyError(path, "learner.fallback_arm",
                              f"{spec.learner.fallback_arm!r} is not an arm of this policy")
        self.outcome_types = tuple(spec.reward.weights)
        self.tz = ZoneInfo(spec.timezone)
        sup = spec.guardrails.suppression
        self.engagement_types = frozenset(
            (sup.engagement if sup and sup.engagement is not None else None)
            or (t for t, w in spec.reward.weights.items() if w > 0))
        self.content_index = {c.id: c for c in spec.content}

    @property
    def name(self) -> str:
        return self.spec.name

    def known(self) -> "Policy":
        """This policy with its retired contents offered again: every arm it ever had (one
        object per policy, so caches keyed on it hold)."""
        if self._known is None:
            self._known = Policy(self.spec.model_copy(update={"content": self.spec.content + self.retired}), self.path)
        return self._known

    def summary(self) -> dict:
        s = self.spec
        return {
            "name": s.name,
            "kind": s.kind,  # "personalizer": its actions arrive with each Rank (docs/personalizer.md)
            "description": s.description,
            "timezone": s.timezone,
            "arms": [
                {"arm": a.id, "hold": a.hold, "content": a.content.id if a.content else None,
                 "topic": a.content.topic if a.content else None, "channel": a.channel,
                 "timing": a.timing.name if a.timing else None}
                for a in self.arms
            ],
            "arm_count": len(self.arms),
            "channels": list(s.channels),
            "content": [c.model_dump(mode="json", exclude_none=True) for c in s.content],
            "timing": [t.model_dump(exclude_none=True) for t in s.timing],
            "features": {k: v.model_dump(exclude_defaults=True) | {"type": v.type} for k, v in s.features.items()},
            "guardrails": {
                "consent": dict(s.guardrails.consent),
                "caps": [{"channel": c.channel, "max": c.max, "window_seconds": c.window} for c in s.guardrails.caps],
                "min_gap_seconds": s.guardrails.min_gap,
                "quiet_hours": s.guardrails.quiet_hours.model_dump() if s.guardrails.quiet_hours else None,
                "cooldown_seconds": s.guardrails.cooldown.model_dump(),
                "suppression": s.guardrails.suppression.model_dump() if s.guardrails.suppression else None,
                "blocked_topics": list(s.guardrails.blocked_topics),
                "daily_budget": s.guardrails.daily_budget,
            },
            "privacy": s.privacy.model_dump(),
            "consistency_ttl_seconds": s.consistency.ttl,
            "outcome_types": list(self.outcome_types),
            "reward": {"weights": dict(s.reward.weights), "default": s.reward.default,
                       "fatigue_per_contact": s.reward.fatigue.per_contact,
                       "fatigue_window_seconds": s.reward.fatigue.window,
                       "range": list(s.reward.bounds)},
            "reward_window_seconds": s.reward.window,
            "learner": s.learner.model_dump(),
        }


def parse_policy(data: dict, path: str = "<memory>", default_name: str | None = None) -> Policy:
    return Policy(validate(PolicySpec, data, path, PolicyError, "docs/policies.md", default_name), path)


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    return parse_policy(read_toml(path, PolicyError), str(path), default_name=path.stem)


def policy_from_text(text: str, path: str | Path) -> Policy:
    """A policy from the text of its file (a reload publishes the text it validated)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(str(path), "", f"not valid TOML: {exc}") from None
    return parse_policy(data, str(path), default_name=path.stem)


def load_policies(directory: str | Path) -> dict[str, Policy]:
    """Every `*.toml` in `directory`, keyed by policy name; or the one policy of a file."""
    directory = Path(directory)
    if directory.is_file():
        policy = load_policy(directory)
        return {policy.name: policy}
    if not directory.is_dir():
        raise PolicyError(str(directory), "", "is neither a directory of policy files nor a policy file")
    policies: dict[str, Policy] = {}
    for file in sorted(directory.glob("*.toml")):
        policy = load_policy(file)
        if policy.name in policies:
            raise PolicyError(str(file), "name", f"policy {policy.name!r} is declared twice "
                                                 f"(also in {policies[policy.name].path})")
        policies[policy.name] = policy
    if not policies:
        raise PolicyError(str(directory), "", "holds no *.toml policy file")
    return policies
