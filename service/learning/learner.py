"""The online learner: one process that turns closed decisions into new model versions.

Every few seconds, for each policy: take the decisions after the learner's cursor whose reward
window has closed (in order, stopping at the first still open), compute their shaped rewards,
learn with VW (cost = the reward mapped to [0, 1], the logged probability), and publish a new
immutable model version. The version, each decision's reward and the new cursor are written in
one transaction, so a learner killed at any moment resumes exactly where it stopped: no decision
learned twice, none skipped.

Only one learner learns at a time, whichever replica it runs on: it holds a lease row in the
store, renewed every couple of seconds. A lease row rather than a PostgreSQL advisory lock held
on a dedicated connection: a lease ends on its own clock when its holder stops renewing (a
process killed, a machine gone, a network cut), where a session lock lasts until the server
notices the connection is dead (TCP keepalives: minutes to hours by default); and it works the
same on SQLite. Exactly-once never rests on the lease alone: publishing re-checks, under the
store's write lock, that the version learned from is still active and that no decision in it was
learned before, so a deposed leader that publishes late writes nothing.

The learner continues from whatever version is active (an online one, a retrained or imported
candidate, a rolled-back one) with that version's own recorded `vw_args`, and records those args
on every version it publishes from it: a model file does not carry every argument it was trained
with (models/vw_policy.py), and the policy's `vw_args` describe only the models the policy starts
from. Recorded args that contradict the model's own file (versions published before this was so)
are not used: the learner continues with the options the file carries and records those.

Speed (docs/benchmarks.md, `scripts/bench_store.py --parts learner`): a bandit policy's decisions
are read as the store's `learning_rows` (the ten columns learning uses, the JSON as text) and
learned by service/learning/rows.py, which parses and featurizes each distinct allowed list,
context and history once; the model and rewards are the same, byte for byte, as learning each
decision as a Decision (tests/test_learner_rows.py). What is left per decision is mostly VW
(parsing two examples and learning: about 30 us) and the store (reading the row, writing its
reward: each rewrites a whole row of the decision log).
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from typing import Callable, Mapping, Sequence

from models.featurize import action_line, shared_line
from models.vw_policy import VWPolicy, options_args, resume_conflicts, stored_options
from service.clock import Clock
from service.policy import Policy
from service.learning.rows import BanditRows
from service.policy.bandit import arm_lines, ensure_active_version
from service.policy.personalizer import event_reward, learnable, reward_cost
from service.metrics import LEARNED, STORE_ERRORS, VERSIONS_PUBLISHED
from service.store import Store, StoreUnavailable
from service.store.decisions import LEARNING_COLUMNS

log = logging.getLogger("tactful.learner")

LEASE = "learner"
LEASE_TTL = 10.0  # seconds a leader's lease outlives its last renewal
TICK = 2.0        # seconds between renewals (and looks for work)
REQUEST_TICK = 0.25  # the same under a request clock, whose time may pass a day in seconds
CHUNK = 20000     # decisions read at a time
_SEQ, _EVENT_ID, _CLOSES_AT = (LEARNING_COLUMNS.index(c) for c in ("seq", "event_id", "closes_at"))


class OnlineLearner:
    """Learns every decision whose reward window has closed, exactly once, and publishes a new model
    version. Build it with `service.runtime.build_learner`, which passes the revert guard as a
    `before_step` check."""

    def __init__(self, store: Store, policies: Mapping[str, Policy], clock: Clock, pace: Callable[[], float],
                 batch: int = 100_000, before_step: Sequence[Callable[[Policy, float], None]] = (),
                 every_tick: Sequence[Callable[[Policy, float], None]] = (),
                 follow: Callable[[], None] = lambda: None, tick: float = TICK):
        self.store = store
        self.policies = policies
        self.clock = clock
        self.pace = pace  # the time that paces the rounds (service.runtime.build_learner)
        self.tick = tick  # real seconds between looks for work (`run`)
        self.batch = batch
        self.before_step = tuple(before_step)  # checks run before each step (the revert guard)
        self.every_tick = tuple(every_tick)  # checks run on every tick of `run` (the circuit breaker)
        self._models: dict[str, tuple[int, VWPolicy, str]] = {}  # policy -> (version, model, its vw_args)
        self._built_for: dict[str, Policy] = {}  # the policy each model's arm lines come from
        self.follow = follow  # called before each step: follows policy files reloaded anywhere
        self._rows: dict[str, BanditRows] = {}  # policy -> its parsed texts (service/learning/rows.py)

    def _model(self, policy: Policy) -> tuple[int, VWPolicy, str]:
        active = ensure_active_version(self.store, policy, self.clock.known())
        current = self._models.get(policy.name)
        if current is None or current[0] != active or self._built_for.get(policy.name) is not policy:
            if current is not None:
                current[1].close()
            row = self.store.model(policy.name, active)
            args = self._resume_args(policy.name, active, row["model"], row["vw_args"] or "")
            current = (active, VWPolicy(arm_lines(policy), args, model_bytes=row["model"]), args)
            self._models[policy.name] = current
            self._built_for[policy.name] = policy
        return current

    @staticmethod
    def _resume_args(policy: str, version: int, model: bytes, recorded: str) -> str:
        """The arguments to go on learning from a stored version with: its recorded ones, unless
        they contradict its model file."""
        conflicts = resume_conflicts(model, recorded)
        if not conflicts:
            return recorded
        args = options_args(stored_options(model))
        log.warning("policy %s: model version %s was recorded with vw_args %r, which do not describe its model "
                    "(%s); learning on with the options its file carries: %s",
                    policy, version, recorded, "; ".join(conflicts), args)
        return args

    def step(self, policy_name: str, limit: int | None = None) -> int:
        """Learn the decisions of a policy whose window has closed, at most `limit` (else the
        learner's batch) into one new version; return how many. They are read `CHUNK` at a time,
        so a large version does not hold every decision in memory at once."""
        self.follow()  # a reloaded policy file, a catalog change: its arms from this step on
        policy = self.policies[policy_name].known()  # with its retired contents: decisions logged with them
        for check in self.before_step:
            check(policy, self.clock.now())
        now = self.clock.now()
        limit = limit or self.batch
        parent, model, vw_args = self._model(policy)
        cursor = self.store.learner_cursor(policy.name)
        learned: list[tuple[int, float]] = []
        skipped = 0
        try:
            while len(learned) < limit:
                # only the decisions before the first still open are read: every few seconds the
                # learner would otherwise re-read (and parse) every pending decision of the window
                want = min(CHUNK, limit - len(learned))
                ready, last = self._read(policy, cursor, want, now)
                if not ready:
                    break
                skipped += self._learn(policy, model, ready, learned)
                cursor = last
                if len(ready) < want:  # an open window or the end of the log
                    break
            if not learned:
                return 0
            note = {"decisions": len(learned), "skipped": skipped, "first_seq": learned[0][0],
                    "last_seq": learned[-1][0], "mean_reward": sum(r for _, r in learned) / len(learned)}
            changed = skipped < len(learned)  # a version only when the model learned something
            version = self.store.publish_learned(policy.name, parent, model.to_bytes() if changed else None, vw_args,
                                                 now, learned, cursor, note)
        except BaseException:
            # the model in memory learned decisions the store did not record: never reuse it
            self._models.pop(policy.name)[1].close()
            raise
        if version is None:
            # somebody activated another version meanwhile: start again from it, same decisions
            log.info("policy %s: active version changed under the learner; reloading", policy.name)
            self._models.pop(policy.name)[1].close()
            return 0
        self._models[policy.name] = (version, model, vw_args)
        LEARNED.labels(policy.name).inc(len(learned))
        if version == parent:
            log.warning("policy %s: none of %d closed decisions maps to the policy's arms or reached anyone; "
                        "no new version",
                        policy.name, len(learned))
        else:
            VERSIONS_PUBLISHED.labels(policy.name).inc()
            log.info("policy %s: learned %d decisions -> model version %d", policy.name, len(learned), version)
        return len(learned)

    def _read(self, policy: Policy, cursor: int, want: int, now: float) -> tuple[list, int | None]:
        """Up to `want` decisions after `cursor` whose window has closed by `now`, and the last one's
        seq: a Personalizer loop's as Decisions, a bandit policy's as the store's learning rows."""
        if policy.spec.kind == "personalizer":
            candidates = self.store.decisions_after(policy.name, cursor, want, closed_by=now)
            ready = list(itertools.takewhile(lambda d: d.closes_at <= now, candidates))
            return ready, ready[-1].seq if ready else None
        rows = self.store.learning_rows(policy.name, cursor, want, closed_by=now)
        ready = list(itertools.takewhile(lambda r: r[_CLOSES_AT] <= now, rows))
        return ready, ready[-1][_SEQ] if ready else None

    def _learn(self, policy: Policy, model: VWPolicy, ready: list, learned: list[tuple[int, float]]) -> int:
        """Learn `ready` into `model`, appending each one's (seq, reward) to `learned`; how many
        were skipped: their arms are no longer the policy's, or their message never reached the
        person (a delivery report of not_sent, bounced or failed). Such a decision says nothing
        of what its arm does to a person, so it is not learned as a contact, as an inactive event
        is not learned by Personalizer; it is marked learned with its no-contact reward, so
        evaluation keeps it (docs/ope.md).

        A bandit policy's decisions are learned from the store's rows (service/learning/rows.py),
        with each distinct allowed list, context and history parsed and featurized once: the
        same model, byte for byte, as learning each as a Decision."""
        if policy.spec.kind == "personalizer":
            outcomes = self.store.outcomes_for([d.event_id for d in ready])
            return _learn_events(model, ready, outcomes, learned)
        rows = self._rows.get(policy.name)
        if rows is None or rows.policy is not policy:
            rows = self._rows[policy.name] = BanditRows(policy)
        return rows.learn(model, ready, self.store.outcomes_for([r[_EVENT_ID] for r in ready]), learned)

    def step_all(self) -> int:
        return sum(self.step(name) for name in self.policies)

    def run(self, stop: threading.Event, interval: float | None = None, lease_ttl: float = LEASE_TTL) -> None:
        """Learn until `stop` is set, while holding the lease; another candidate waits and takes over
        within `lease_ttl` plus a tick of the leader dying. The lease is renewed every tick by a
        thread of its own, also while a long step runs.

        A policy is learned at most once per its `learn_every_seconds` (or `interval`) of the
        time `pace` tells (real time, or the requests' under `--clock request`), into one version
        of up to `batch` decisions; only when more than that closed meanwhile does the next
        version follow at the next tick. A step that fails (the store
        unreachable) is logged and tried again at the next tick: exactly-once does not depend on
        it, since a version, its decisions' rewards and the cursor are one transaction."""
        every = {name: interval or p.spec.learner.learn_every_seconds for name, p in self.policies.items()}
        tick = min(self.tick, lease_ttl / 3, *every.values())
        # renewed at its own pace: looking for work 4 times a second (a request clock) need not
        # take the store's write lock as often
        lease = _Lease(self.store, lease_holder(os.getpid()), lease_ttl, min(TICK, lease_ttl / 3), stop)
        last: dict[str, float] = {}
        backlog: dict[str, bool] = {}
        lease.start()
        try:
            while not stop.is_set():
                for name in self.policies:
                    if stop.is_set() or not lease.held:
                        break
                    for check in self.every_tick:
                        check(self.policies[name], self.clock.now())
                    now = self.pace()
                    if not backlog.get(name) and now - last.get(name, -1e18) < every[name]:
                        continue
                    try:
                        backlog[name] = self.step(name) >= self.batch
                        last[name] = now
                    except Exception as exc:  # noqa: BLE001 -- the learner outlives a store briefly away
                        if isinstance(exc, StoreUnavailable):
                            STORE_ERRORS.labels("learner").inc()
                        log.exception("policy %s: learning failed; trying again in %.1fs", name, tick)
                stop.wait(tick)
        finally:
            stop.set()
            lease.join()


def _learn_events(model: VWPolicy, ready: list, outcomes: dict, learned: list[tuple[int, float]]) -> int:
    """Learn Rank events (a Personalizer loop's, service/decision/personalizer.py) from the actions
    and features logged with each: the catalogue plays no part. An event in LoggingOnly mode, or
    deferred and never activated, is marked learned with its reward but not learned; how many."""
    skipped = 0
    for d in ready:
        logged = outcomes[d.event_id]
        reward = event_reward(d, logged)
        learned.append((d.seq, reward))
        actions = d.history.get("personalizer", {}).get("actions")
        if not actions or not learnable(d, logged):
            skipped += 1
            continue
        lines = [action_line(a["id"], a["features"]) for a in actions]
        model.learn_lines(shared_line(d.context, {}), lines, d.allowed.index(d.arm), reward_cost(reward),
                          d.probability)
    return skipped


def lease_holder(pid: int) -> str:
    """Who holds the lease when the learner process `pid` of this machine leads: what `tactful
    serve` frees when it sees that process die (service/cli/serve.py)."""
    return f"{socket.gethostname()}:{pid}"


class _Lease(threading.Thread):
    """Takes and renews the learner's lease every `tick` until `stop`, then releases it; `held`
    says whether this process leads."""

    def __init__(self, store: Store, holder: str, ttl: float, tick: float, stop: threading.Event):
        super().__init__(name="tactful-lease", daemon=True)
        self.store, self.holder, self.ttl, self.tick, self.stop = store, holder, ttl, tick, stop
        self.held = False

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                held = self.store.acquire_lease(LEASE, self.holder, self.ttl)  # the store's clock
            except Exception as exc:  # noqa: BLE001
                log.warning("could not renew the learner lease: %s", exc)
                held = False
            if held != self.held:
                log.info("learner %s %s the lease", self.holder, "holds" if held else "lost")
            self.held = held
            self.stop.wait(self.tick)
        self.held = False
        try:
            self.store.release_lease(LEASE, self.holder)
        except Exception:  # noqa: BLE001
            log.warning("could not release the learner lease; it expires in %.0fs", self.ttl)


def run_forever(learner: OnlineLearner, interval: float | None = None) -> None:
    """Run the learner until SIGINT or SIGTERM; the current step finishes, then it stops."""
    stop = threading.Event()

    def _stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    log.info("learner started for policies: %s", ", ".join(learner.policies))
    learner.run(stop, interval)
    log.info("learner stopped")
