"""Each worker's copy of the model versions it scores with, refreshed and swapped without a
restart: the active version of every policy (what decisions are served from), and the shadow
candidate (service/learning/shadow.py). One cache does both, told which version to hold."""
from __future__ import annotations

import logging
from typing import Callable, Mapping

from models.vw_policy import VWPolicy
from service.policy import Policy
from service.policy.bandit import arm_lines
from service.store import Store

log = logging.getLogger("tactful.models")

PUSHED_REFRESH = 30.0  # seconds between look-ups when the store pushes changes (a safety net)


class VersionCache:
    """One model per policy: the version `which(policy)` names, looked up at most every
    `refresh_seconds` of `monotonic` time, or as soon as the store announces a change (PostgreSQL
    pushes them), and loaded from the store when it changed (or when it could not be loaded
    before), or when its policy was reloaded (`policies` is the engine's own mapping). Workers
    only predict: a model here is never trained."""

    def __init__(self, store: Store, policies: Mapping[str, Policy], which: Callable[[str], int | None],
                 refresh_seconds: float, monotonic: Callable[[], float], label: str = "active"):
        self.store = store
        self.policies = policies
        self.which = which
        self.refresh_seconds = refresh_seconds
        self.monotonic = monotonic
        self.label = label
        self._models: dict[str, tuple[int | None, VWPolicy | None]] = {}
        self._checked: dict[str, float] = {}
        self._generations: dict[str, int | None] = {}
        self._built_for: dict[str, Policy] = {}  # the policy each model's arm lines were built from

    def get(self, policy: str) -> tuple[int | None, VWPolicy | None]:
        now = self.monotonic()
        current = self._models.get(policy)
        if current is not None and self._built_for.get(policy) is not self.policies[policy]:
            current = None  # the policy was reloaded (its arms may have changed): build it again
        generation = self.store.model_generation(policy)
        # a backend that pushes changes (PostgreSQL) is looked up at once when one arrives and
        # polled only rarely otherwise; without pushes (SQLite, or the push connection down),
        # every `refresh_seconds`. 0 always looks (replays need the version just published).
        every = self.refresh_seconds if generation is None or not self.refresh_seconds else PUSHED_REFRESH
        if (current is not None and now - self._checked.get(policy, 0.0) < every
                and generation == self._generations.get(policy)):
            return current
        self._checked[policy] = now
        self._generations[policy] = generation
        version = self.which(policy)
        if current is not None and current[0] == version and (current[1] is not None or version is None):
            return current
        model = None
        if version is not None:
            try:
                model = VWPolicy(arm_lines(self.policies[policy]), model_bytes=self.store.model(policy, version)["model"])
                log.info("policy %s: now using %s model version %s", policy, self.label, version)
            except RuntimeError as exc:
                # VW refuses the bytes: no model until a later look-up loads it (the engine serves
                # the fallback, the shadow scores nothing), never the version it replaced
                log.error("policy %s: %s model version %s cannot be loaded: %s", policy, self.label, version, exc)
        old = self._models.get(policy)
        if old is not None and old[1] is not None:
            old[1].close()
        self._models[policy] = (version, model)
        self._built_for[policy] = self.policies[policy]
        return version, model


class ModelCache(VersionCache):
    """The active version of every policy: what the decision engine scores with."""

    def __init__(self, store: Store, policies: Mapping[str, Policy], refresh_seconds: float,
                 monotonic: Callable[[], float]):
        super().__init__(store, policies, store.active_version, refresh_seconds, monotonic, "active")
