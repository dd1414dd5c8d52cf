"""Targets: where the decision code runs. The simulator talks to either through the same few
calls (`Target`), as a campaign tool would: grant consent, register a time zone, ask for a
decision, report an outcome; and lets the learner learn when virtual time says so.

    InProcess   the real engine, store and learner in this process, on a ManualClock; the
                baselines take the VW model's place (makers.py)
    OverHTTP    a running `tactful serve --clock request`, through its HTTP API
"""
from __future__ import annotations

import http.client
import json
import time
from typing import Callable, Protocol
from urllib.parse import quote, urlsplit

from models.baselines import Ask, Feedback, Uniform
from service.clock import ManualClock
from service.decision.engine import DecideInput, OutcomeInput
from service.decision.modelcache import ModelCache
from service.runtime import build_engine, build_learner, numbered_ids
from service.simulation.errors import SimulationError
from service.simulation.makers import (LEARNERS, AfterLearning, Phase, Scorer, ScorerCache, make_baseline,
                                       maker_policy)
from service.simulation.world import World
from service.store import open_store
from service.times import parse_time, to_rfc3339


class Target(Protocol):
    mode: str  # "in-process" or "http", as the metrics report it

    def warm_up(self, on: bool) -> None: ...

    def grant(self, user: str, channels: dict[str, bool], t: float) -> None: ...

    def register(self, user: str, timezone: str, t: float) -> None: ...

    def decide(self, user: str, context: dict, t: float, ask: Ask) -> tuple[str, str, float | None, str]:
        """(event id, arm id, send_at, mode)"""

    def outcome(self, event_id: str, kind: str, at: float, outcome_id: str) -> None: ...

    def learn(self, t: float, feedback: list[Feedback]) -> None: ...

    def active_version(self) -> int | None:
        """The model version the target serves now (None for a baseline, which has none)."""

    def close(self) -> None: ...


class InProcess:
    """The real engine, store and learner in this process, on a ManualClock. `monotonic` (the
    caller's wall clock, e.g. time.monotonic) is what the engine's model caches are paced by: the
    active version is looked up after each learning step whatever it says (AfterLearning), the
    shadow candidate's at most once a second of it."""

    mode = "in-process"

    def __init__(self, world: World, maker: str, db: str, seed: int, monotonic: Callable[[], float]):
        self.world = world
        policy = maker_policy(maker, world)
        self.policy = policy
        self.policies = {policy.name: policy}
        self.store = open_store(db, secret=f"tactful-simulation-{seed}")  # same keys, same holdout group, every run
        if self.store.decision_count():
            raise SimulationError(f"--db {db} already holds decisions: give a new file")
        self.clock = ManualClock(float(min([world.ask_t[0], *world.warm_t[:1]])) - 1.0)
        # reproducible event ids; `no-breaker` takes Tactful's, hence its draws: the two runs are
        # the same until a breaker first acts
        new_id = numbered_ids(f"{('tactful' if maker == 'no-breaker' else maker)[:6]}{seed:x}-", 8)
        self.scorer: Scorer | None = None
        self.learner = None
        self.ready = self.learned = 0
        if maker in LEARNERS:
            cache = AfterLearning(ModelCache(self.store, self.policies, 0.0, monotonic))
            self.learner = build_learner(self.store, self.policies, self.clock)
        else:
            self.scorer = Scorer(make_baseline(maker, world, seed))
            cache = ScorerCache(self.scorer)
        self.phase = Phase(ScorerCache(Scorer(Uniform())), cache)
        self.engine = build_engine(self.store, self.policies, self.clock, new_id=new_id, models=self.phase,
                                   monotonic=monotonic)
        self.engine.ensure_models()

    def warm_up(self, on: bool) -> None:
        """Business as usual while `on`, then the decision maker."""
        self.phase.warming = on

    def grant(self, user: str, channels: dict[str, bool], t: float) -> None:
        self.engine.people.set_consent(user, channels, "simulation", t)

    def register(self, user: str, timezone: str, t: float) -> None:
        """The person's time zone, as a campaign tool registers it (PUT /v1/users/{id}/preferences)."""
        self.engine.people.set_preferences(user, {"timezone": timezone}, t)

    def decide(self, user: str, context: dict, t: float, ask: Ask) -> tuple[str, str, float | None, str]:
        if self.scorer is not None:
            self.scorer.ask = ask
        out = self.engine.decide(self.policy.name, DecideInput(user, context, None, t))
        a = out["action"]
        return out["event_id"], a["arm"], parse_time(a["send_at"]), out["mode"]

    def outcome(self, event_id: str, kind: str, at: float, outcome_id: str) -> None:
        self.engine.record_outcome(event_id, OutcomeInput(kind, 1.0, outcome_id, at))

    def learn(self, t: float, feedback: list[Feedback]) -> None:
        self.clock.observe(t)
        if self.learner is not None:
            self.phase.main.stale = True
            # Exactly the decisions whose window has closed (the simulator knows how many): the
            # learner then reads each logged decision once, instead of re-reading every decision
            # still inside its window at every step.
            self.ready += len(feedback)
            if self.ready > self.learned:
                self.learned += self.learner.step(self.policy.name, limit=self.ready - self.learned)
            else:  # nothing to learn: the checks the service's learner runs on every tick (the breaker)
                for check in self.learner.every_tick:
                    check(self.policy, t)
        else:
            self.scorer.maker.learn(feedback)

    def active_version(self) -> int | None:
        return self.store.active_version(self.policy.name) if self.learner is not None else None

    def close(self) -> None:
        self.store.close()


class OverHTTP:
    """A running `tactful serve --clock request`: its engine, guardrails, store and learner."""

    mode = "http"

    def __init__(self, world: World, url: str, wait_seconds: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SimulationError(f"--url {url!r}: give an http:// address such as http://127.0.0.1:8000")
        self.world = world
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
        self.prefix = parts.path.rstrip("/")
        policy = world.policy
        health = self._wait_healthy(url, wait_seconds)
        if health.get("clock") != "request":
            raise SimulationError(f"--url {url}: the server must run with --clock request "
                                  f"(it runs with the {health.get('clock')} clock)")
        served = self._call("GET", f"/v1/policies/{quote(policy.name)}", ok=(200, 404))
        if "arms" not in served:
            raise SimulationError(f"--url {url}: the server has no policy {policy.name!r}")
        mine = policy.summary()
        for key, what in (("arms", "arms"), ("reward", "reward"), ("reward_window_seconds", "reward window"),
                          ("guardrails", "guardrails")):
            if served.get(key) != json.loads(json.dumps(mine[key])):
                raise SimulationError(f"--url {url}: the server's policy {policy.name!r} has other {what} than "
                                      f"{policy.path}: simulate with the policy file the server loaded (--policy)")
        self.policy = policy

    def _wait_healthy(self, url: str, seconds: float) -> dict:
        """/healthz's answer, waiting up to `seconds` for a server that is still starting (the
        README starts `tactful serve` in the background and the simulation right after it)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self._call("GET", "/healthz")
            except OSError as exc:
                self.conn.close()
                if time.monotonic() > deadline:
                    raise SimulationError(f"--url {url}: cannot reach the server ({exc}); start it with "
                                          "`tactful serve --clock request --policies POLICY` first") from None
                time.sleep(0.5)

    def _call(self, method: str, path: str, body: dict | None = None, ok=(200, 202)) -> dict:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):
            try:
                self.conn.request(method, self.prefix + path, payload, headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt:
                    raise
        if resp.status not in ok:
            raise SimulationError(f"{method} {path}: HTTP {resp.status}: {data[:500].decode(errors='replace')}")
        return json.loads(data)

    def warm_up(self, on: bool) -> None:
        pass  # the server's own policy decides during the warm-up

    def grant(self, user: str, channels: dict[str, bool], t: float) -> None:
        self._call("PUT", f"/v1/users/{quote(user)}/consent",
                   {"channels": channels, "source": "simulation", "timestamp": to_rfc3339(t)})

    def register(self, user: str, timezone: str, t: float) -> None:
        self._call("PUT", f"/v1/users/{quote(user)}/preferences", {"timezone": timezone, "timestamp": to_rfc3339(t)})

    def decide(self, user: str, context: dict, t: float, ask: Ask) -> tuple[str, str, float | None, str]:
        out = self._call("POST", f"/v1/policies/{quote(self.policy.name)}/decide",
                         {"user_id": user, "context": context, "timestamp": to_rfc3339(t)})
        a = out["action"]
        return out["event_id"], a["arm"], parse_time(a["send_at"]), out["mode"]

    def outcome(self, event_id: str, kind: str, at: float, outcome_id: str) -> None:
        self._call("POST", f"/v1/events/{event_id}/outcomes",
                   {"type": kind, "outcome_id": outcome_id, "timestamp": to_rfc3339(at)})

    def learn(self, t: float, feedback: list[Feedback]) -> None:
        pass  # the server's own learner learns, on its own cadence

    def active_version(self) -> int | None:
        return self._call("GET", f"/v1/policies/{quote(self.policy.name)}").get("active_model_version")

    def close(self) -> None:
        self.conn.close()
