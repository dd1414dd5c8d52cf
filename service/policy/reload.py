"""Policy files reloaded without a restart (`POST /v1/policies/{policy}/reload`, SIGHUP to
`tactful serve`).

A reload reads the policy's file and validates it; a file that fails is refused with its error
(file, key, reason) and the running policy is kept. A valid one is *published*: its text, hash,
time, source and reason go to the store, and every process that serves the policy (each gunicorn
worker, the learner, every replica) follows it within `refresh_seconds` of its next request or
learning step, from the published text rather than its own copy of the file, so they all serve
the same validated policy even if the file changes again meanwhile. A server that starts reads
its files and forgets what earlier reloads published (`tactful serve` does it once, before its
workers start), so a file edited while nothing ran is what serves.

What a reload may change: everything in the file but the policy's name. Arms may come and go:
the model keeps what it learned of the features the arms share (content, topic, tags, channel,
timing), a decision logged with an arm that is gone is skipped by the learner and by evaluation.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable, MutableMapping

from service.policy import Policy, PolicyError, policy_from_text
from service.store import Store

log = logging.getLogger("tactful.policies")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_text(policy: Policy) -> str:
    try:
        return Path(policy.path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(policy.path, "", f"cannot be read: {exc.strerror}") from None


class PolicyReloads:
    """This process's policies following the published reloads. `apply(policy)` puts a reloaded
    policy to use (the engine's `use_policy`, or replacing it in the learner's mapping)."""

    def __init__(self, store: Store, policies: MutableMapping[str, Policy], apply: Callable[[Policy], None],
                 refresh_seconds: float = 1.0, monotonic: Callable[[], float] = time.monotonic):
        self.store, self.policies, self.apply = store, policies, apply
        self.refresh_seconds, self.monotonic = refresh_seconds, monotonic
        self._serving: dict[str, str] = {}  # policy -> the hash of the text it serves, once known
        for name, policy in policies.items():
            try:
                self._serving[name] = digest(read_text(policy))
            except PolicyError:  # built in memory (tests, simulations): whatever is published is news
                pass
        self._checked = float("-inf")

    def follow(self) -> None:
        """Put to use what was published since the last look (at most every `refresh_seconds`)."""
        now = self.monotonic()
        if now - self._checked < self.refresh_seconds:
            return
        self._checked = now
        for name, record in self.store.published_policies().items():
            if name not in self.policies or record["hash"] == self._serving.get(name):
                continue
            self._serving[name] = record["hash"]
            try:
                policy = policy_from_text(record["text"], self.policies[name].path)
            except PolicyError as exc:  # published by a newer Tactful, say: keep the running one
                log.error("policy %s: the reloaded file does not validate here, keeping the running one: %s", name, exc)
                continue
            self.apply(policy)
            log.info("policy %s: reloaded (%s, %s)", name, record["hash"], record.get("source"))

    def reload(self, name: str, at: float, source: str, reason: str | None = None) -> dict:
        """Validate the policy's file and publish it; PolicyError (the running policy kept) when
        it does not validate or renames the policy. Returns what was published (without the text)."""
        running = self.policies[name]
        text = read_text(running)
        policy = policy_from_text(text, running.path)
        if policy.name != name:
            raise PolicyError(running.path, "name", f"a reload cannot rename policy {name!r} to {policy.name!r}")
        record = {"hash": digest(text), "at": at, "source": source, "reason": reason,
                  "changed": digest(text) != self._serving.get(name), "arm_count": len(policy.arms)}
        self.store.publish_policy(name, record | {"text": text})
        self._serving[name] = record["hash"]
        self.apply(policy)
        return record
