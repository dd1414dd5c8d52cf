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

The live catalog (service/policy/catalog.py) goes the same way: a process serves its policy's
file (or the text a reload published) with every catalog change applied, and follows both.

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
from service.policy.catalog import parse_content, with_catalog
from service.policy.stored import remember
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
        self._bases: dict[str, Policy] = dict(policies)  # each as its file (or a reload) declares it
        self._revisions: dict[str, int] = {}  # policy -> the latest catalog change it serves
        for name, policy in policies.items():
            try:
                self._serving[name] = digest(read_text(policy))
            except PolicyError:  # built in memory (tests, simulations): whatever is published is news
                pass
        self._checked = float("-inf")

    def follow(self) -> None:
        """Put to use what was published since the last look (at most every `refresh_seconds`):
        reloaded files and catalog changes (service/policy/catalog.py)."""
        now = self.monotonic()
        if now - self._checked < self.refresh_seconds:
            return
        self._checked = now
        published, revisions = self.store.published_policies(), self.store.catalog_revisions()
        for name in list(self.policies):
            changed = False
            record = published.get(name)
            if record is not None and record["hash"] != self._serving.get(name):
                self._serving[name] = record["hash"]
                try:
                    self._bases[name] = policy_from_text(record["text"], self.policies[name].path)
                    changed = True
                    log.info("policy %s: reloaded (%s, %s)", name, record["hash"], record.get("source"))
                except PolicyError as exc:  # published by a newer Tactful, say: keep the running one
                    log.error("policy %s: the reloaded file does not validate here, keeping the running one: %s",
                              name, exc)
            if revisions.get(name, 0) != self._revisions.get(name, 0):
                self._revisions[name] = revisions[name]
                changed = True
            if changed:
                self._serve(name)

    def _serve(self, name: str) -> None:
        try:
            policy = with_catalog(self._bases[name], self.store.catalog_changes(name))
        except PolicyError as exc:
            log.error("policy %s: its catalog does not apply, keeping the running one: %s", name, exc)
            return
        self.apply(policy)

    def change_content(self, name: str, content_id: str, fields: dict | None, at: float, source: str,
                       reason: str | None) -> Policy:
        """Put a content (`fields`: topic, tags, features, valid_from, valid_until) into the
        policy's catalog, or retire it (`fields` None); PolicyError when the content is not valid
        or the policy would not be (its fallback arm's content retired). This process serves the
        change at once, every other within about a second of its next request."""
        if fields is not None:
            parse_content(content_id, fields)
        proposed = {"id": None, "content_id": content_id, "action": "put" if fields is not None else "delete",
                    "content": fields}
        with_catalog(self._bases[name], self.store.catalog_changes(name) + [proposed])
        self._revisions[name] = self.store.add_catalog_change(name, content_id, proposed["action"], fields, at,
                                                              source, reason)
        self._serve(name)
        return self.policies[name]

    def reload(self, name: str, at: float, source: str, reason: str | None = None) -> dict:
        """Validate the policy's file and publish it; PolicyError (the running policy kept) when
        it does not validate or renames the policy. Returns what was published (without the text)."""
        running = self.policies[name]
        text = read_text(running)
        base = policy_from_text(text, running.path)
        if base.name != name:
            raise PolicyError(running.path, "name", f"a reload cannot rename policy {name!r} to {base.name!r}")
        policy = with_catalog(base, self.store.catalog_changes(name))  # the live catalog stays
        record = {"hash": digest(text), "at": at, "source": source, "reason": reason,
                  "changed": digest(text) != self._serving.get(name), "arm_count": len(policy.arms)}
        self.store.publish_policy(name, record | {"text": text})
        remember(self.store, [base], at)  # offline commands now expect this file (service/policy/stored.py)
        self._serving[name], self._bases[name] = record["hash"], base
        self.apply(policy)
        return record
