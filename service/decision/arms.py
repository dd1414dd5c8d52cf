"""Arms and contents switched at runtime: retired, out of stock or active again, and validity
windows; and the whole policy paused or resumed by an operator. Effective on the next decision in
every worker (the guardrails read them with the person's state)."""
from __future__ import annotations

from typing import Callable

from service.clock import Clock
from service.errors import BadRequest, NotFound
from service.policy import HOLD_ARM, Policy
from service.store import Store
from service.times import to_rfc3339


class ArmSwitches:
    def __init__(self, store: Store, policy: Callable[[str], Policy], clock: Clock):
        self.store = store
        self.policy = policy  # a policy by name, NotFound naming `policy` otherwise
        self.clock = clock

    def set_state(self, policy_name: str, target: str, status: str, valid_from: float | None,
                  valid_until: float | None, reason: str | None) -> dict:
        policy = self.policy(policy_name)
        if target not in policy.arm_index and target not in policy.content_index:
            raise NotFound(f"{target!r} is neither an arm nor a content of policy {policy.name!r}", "arm")
        if target == HOLD_ARM:
            raise BadRequest("the hold arm (send nothing) is always available and cannot be switched off", "arm")
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            raise BadRequest("valid_until must be after valid_from", "valid_until")
        self.store.set_arm_state(policy.name, target, status, valid_from, valid_until, reason, self.clock.now())
        return self.state(policy_name, target)

    def state(self, policy_name: str, target: str) -> dict:
        policy = self.policy(policy_name)
        st = self.store.arm_states(policy.name).get(target) or {"status": "active"}
        arms = [target] if target in policy.arm_index else [
            a.id for a in policy.arms if a.content is not None and a.content.id == target]
        return {"policy": policy.name, "target": target, "kind": "arm" if target in policy.arm_index else "content",
                "arms": arms, "status": st["status"], "valid_from": to_rfc3339(st.get("valid_from")),
                "valid_until": to_rfc3339(st.get("valid_until")), "reason": st.get("reason"),
                "updated_at": to_rfc3339(st.get("updated_at"))}


class PolicyPause:
    """An operator's switch for a whole policy: paused, it holds every decision (reason `paused`,
    with the operator's reason) until it is resumed. Each change is recorded with who and why."""

    def __init__(self, store: Store, policy: Callable[[str], Policy], clock: Clock):
        self.store = store
        self.policy = policy
        self.clock = clock

    def set(self, policy_name: str, paused: bool, reason: str, by: str | None) -> dict:
        """Pause or resume; pausing a paused policy (or resuming a running one) changes nothing
        and says so (`changed`: false), so an operator's retry is harmless."""
        policy = self.policy(policy_name)
        if not reason.strip():
            raise BadRequest("reason must say why, in a few words", "reason")
        changed = self.store.set_paused(policy.name, paused, reason.strip(), by, self.clock.now())
        return self.state(policy.name) | {"changed": changed}

    def state(self, policy_name: str) -> dict:
        policy = self.policy(policy_name)
        pause = self.store.pause_state(policy.name)
        return {"policy": policy.name, "paused": pause is not None,
                "reason": pause["reason"] if pause else None,
                "since": to_rfc3339(pause["since"]) if pause else None,
                "events": [e | {"at": to_rfc3339(e["at"])} for e in self.store.safety_events(policy.name, 20)]}
