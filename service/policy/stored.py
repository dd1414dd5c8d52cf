"""The policies a store was written with, and how a command notices other ones.

Whoever decides or learns with a policy (the app factory, `tactful serve`, the simulator) records
it in the store: its name, a fingerprint of its parsed file (SHA-256 of the canonical JSON of the
spec, so comments and layout do not count), the spec itself and the file it came from, appended
when any of them changes. The offline commands (export, evaluate, retrain, models) compare the
policy they were given with the latest recorded one and refuse a different one, naming what
differs, unless told to go on (`--ignore-policy-mismatch`): a log read with another policy's
arms, reward or window gives wrong numbers silently.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from service.policy import Policy
from service.store import Store
from service.times import to_rfc3339


def canonical(policy: Policy) -> str:
    """The policy's parsed spec as canonical JSON text: what the fingerprint is taken of."""
    spec = policy.spec.model_dump(mode="json")
    if spec.get("kind") == "catalog":  # a key added after stores were written: its default keeps their fingerprints
        del spec["kind"]
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def fingerprint(policy: Policy) -> str:
    return hashlib.sha256(canonical(policy).encode()).hexdigest()


def source(policy: Policy) -> str | None:
    """The file a policy came from, resolved (None for a policy built in memory)."""
    return None if policy.path.startswith("<") else str(Path(policy.path).resolve())


def remember(store: Store, policies: Mapping[str, Policy] | Iterable[Policy], at: float | None) -> None:
    """Record each policy in the store unless it is recorded as it is."""
    for policy in (policies.values() if isinstance(policies, Mapping) else policies):
        store.record_policy(policy.name, fingerprint(policy), canonical(policy), source(policy), at)


@dataclass
class Mismatch:
    """The policy a command was given differs from the one the store was written with."""
    policy: Policy
    location: str
    recorded: dict
    differences: list[str]

    def __str__(self) -> str:
        there = self.recorded["path"] or "a policy built in memory"
        when = to_rfc3339(self.recorded["recorded_at"]) or "when the service started"
        shown = "; ".join(self.differences[:5]) + ("; ..." if len(self.differences) > 5 else "")
        hint = f" (--policies {Path(there).parent})" if self.recorded["path"] else ""
        return (f"policy {self.policy.name!r} of {self.policy.path} is not the one {self.location} was written with "
                f"(recorded {when} from {there}; fingerprint {fingerprint(self.policy)[:12]} here, "
                f"{self.recorded['fingerprint'][:12]} in the store). It differs in: {shown}. Pass --policies with the "
                f"policy files the service used{hint}, or --ignore-policy-mismatch to read the log with these anyway")


def mismatch(store: Store, policy: Policy) -> Mismatch | None:
    """How `policy` differs from the latest one recorded under its name; None when it is the
    same, or when the store recorded none (a store older than the record, or never served)."""
    recorded = store.recorded_policy(policy.name)
    if recorded is None or recorded["fingerprint"] == fingerprint(policy):
        return None
    theirs, ours = _flat(json.loads(recorded["spec"])), _flat(json.loads(canonical(policy)))
    diffs = [f"{k}: {_show(theirs.get(k))} in the store, {_show(ours.get(k))} here"
             for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    return Mismatch(policy, store.location, recorded, diffs)


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _show(value) -> str:
    text = "absent" if value is None else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
