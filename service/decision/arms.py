"""Arms and contents switched at runtime: retired, out of stock or active again, and validity
windows, effective on the next decision in every worker (the guardrails read them with the
person's state)."""
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
