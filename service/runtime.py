"""One way to build Tactful's moving parts, so that every engine and every learner behaves the
same wherever it runs: the HTTP app, `tactful learn`, the simulator, the scripts and the tests.

    build_engine   the decision engine with its model cache and its shadow scorer
    build_learner  the online learner with the revert guard before each step

Everything is passed in: the store, the policies, the clock, the source of event ids (every
random draw of a decision derives from its event id) and the monotonic time that paces model
refreshes. This is the outermost edge of the library; below it nothing reads the wall clock or a
global random source on its own.
"""
from __future__ import annotations

import itertools
import time
import uuid
from typing import Callable, Mapping, Sequence

from service.clock import Clock
from service.decision.engine import DecisionEngine
from service.decision.modelcache import ModelCache, VersionCache
from service.learning.breaker import CircuitBreaker
from service.learning.guard import RevertGuard
from service.learning.learner import REQUEST_TICK, TICK, OnlineLearner
from service.learning.registry import VersionRegistry
from service.learning.shadow import ShadowScorer
from service.policy import Policy
from service.policy.reload import PolicyReloads
from service.store import Store


def random_ids() -> Callable[[], str]:
    """Event ids for a served engine: random, unguessable."""
    return lambda: uuid.uuid4().hex


def numbered_ids(prefix: str, width: int = 7) -> Callable[[], str]:
    """Event ids for a reproducible run (simulation, tests): `prefix` and a running number of
    `width` digits, from 0."""
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):0{width}d}"


def build_engine(store: Store, policies: Mapping[str, Policy], clock: Clock, *,
                 new_id: Callable[[], str] | None = None, refresh_seconds: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic, models: VersionCache | None = None
                 ) -> DecisionEngine:
    """The decision engine, with the shadow candidate scoring beside every decision.
    `refresh_seconds` of `monotonic` time pace how often each policy's active and shadow versions
    are looked up (0: on every decision, as replays want); `models` replaces the active versions
    with other scorers (the simulator's baselines)."""
    models = models if models is not None else ModelCache(store, policies, refresh_seconds, monotonic)
    shadow = ShadowScorer(VersionRegistry(store), policies, refresh_seconds, monotonic)
    return DecisionEngine(store, policies, clock, models, new_id or random_ids(), [shadow])


# how often a long-running process's SQLite store (a served worker's, the learner's) checkpoints its
# WAL, in a thread of its own rather than in whichever commit fills it past SQLite's threshold
# (SQLiteStore.checkpoint_in_background; PostgreSQL has nothing to do)
CHECKPOINT_SECONDS = 1.0

def build_learner(store: Store, policies: Mapping[str, Policy], clock: Clock, *, batch: int = 100_000,
                  pace: Callable[[], float] | None = None, follow_reloads: bool = False,
                  also: Sequence[Callable[[Policy, float], None]] = ()) -> OnlineLearner:
    """The online learner, with the revert guard judging a newly activated version before each
    step, and the circuit breaker (service/learning/breaker.py) judging the policy's rates before
    each step and on each tick of its loop (when its `check_every` has passed); `also`: checks
    run on each tick too (the contents review, which `tactful learn` adds:
    service/learning/retire.py). `pace` says the time by which each policy is learned at most once
    per its `learn_every_seconds`: by default real seconds, except under a clock that takes the
    requests' timestamps (`--clock request`), whose time it is: a replay that passes two weeks in
    a minute is learned at most once per `learn_every_seconds` of those two weeks, not once per
    real interval however many days each one holds (its loop then looks for work every
    REQUEST_TICK real seconds, so a fast replay may pass more than that between steps). The
    lease goes by the store's own clock. With `follow_reloads`, it learns each policy as its file
    was last reloaded (service/policy/reload.py), as `tactful learn` does."""
    guard = RevertGuard(VersionRegistry(store))
    breaker = CircuitBreaker(store)
    policies = dict(policies)
    follow = (PolicyReloads(store, policies, lambda p: policies.__setitem__(p.name, p)).follow if follow_reloads
              else lambda: None)
    by_requests = clock.accepts_timestamps
    return OnlineLearner(store, policies, clock, pace or (clock.now if by_requests else time.time), batch,
                         before_step=[guard.before_step, breaker.before_step], every_tick=[breaker.before_step, *also],
                         follow=follow, tick=REQUEST_TICK if by_requests else TICK)
