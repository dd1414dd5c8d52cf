"""The circuit breaker: pause what starts to offend people, on a strong signal only.

A policy with a `[safety]` table (service/policy/spec.py `Safety`, docs/guardrails.md) is watched
over a sliding window of its sends: the unsubscribe and complaint rates per content, per channel
and for the whole policy. A rate trips its breaker when, over the window or one of its latest
spans (half, quarter, ...: `spans` of them, so that a content turning bad mid-window trips on its
recent sends rather than once they outnumber the window's good ones), at least `min_sends`
sends are counted and the rate's one-sided lower confidence bound (Clopper and Pearson's exact
interval, which stays honest for a handful of rare complaints; at `1 - (1 - confidence) / spans`
each, so that the spans together keep the policy's confidence) is above the threshold -- so a
few unlucky sends never trip it, and a content whose rate is truly twice the threshold trips
after a few hundred.

An open breaker is a row of `arm_state` (service/store/safety.py) that the guardrails read with
each person's state: its content's or channel's arms are removed with reason `circuit_breaker`
and this module's detail, or the whole policy holds. It stays open until an operator resets it
(`reset`), or, with `probe_after`, the guardrails let `probe_share` of people through after that
cool-off (half-open) and this check closes it once `min_sends` of their sends show the rate's
upper bound under the threshold, or opens it again when their lower bound is above. After a close
or a reset, only sends made since count for that breaker, so old evidence cannot trip it again.

The online learner runs `check` (every `check_every` of the policy's clock: virtual time in a
simulation) beside each step and on every tick of its loop; only the leading learner does, so
two replicas never judge at once. Every trip, reopening, close and reset is stored with its
evidence (`safety_events`)."""
from __future__ import annotations

import logging

import numpy as np

from models.proportions import clopper_pearson
from service.policy import Policy
from service.policy.spec import Safety
from service.store import Store
from service.times import to_rfc3339

log = logging.getLogger("tactful.safety")

RATES = (("unsubscribe", "max_unsubscribe_rate"), ("complaint", "max_complaint_rate"))


def targets(policy: Policy, levels: tuple[str, ...]) -> list[str]:
    """What the breaker watches: `content:<id>`, `channel:<name>`, `policy`, for the levels asked."""
    out = []
    if "content" in levels:
        out += [f"content:{c.id}" for c in policy.spec.content]
    if "channel" in levels:
        out += [f"channel:{ch}" for ch in policy.spec.channels]
    if "policy" in levels:
        out.append("policy")
    return out


def label(what: str) -> str:
    kind, _, name = what.partition(":")
    return "the policy" if kind == "policy" else f"{kind} {name!r}"


def tally(policy: Policy, what: str, per_arm: dict[str, tuple[int, int, int]],
          skip: frozenset[str] = frozenset()) -> tuple[int, int, int]:
    """Sends, unsubscribes and complaints of what `what` watches, from the per-arm counts, leaving
    out the arms in `skip`."""
    kind, _, name = what.partition(":")
    sends = unsub = compl = 0
    for arm_id, (n, u, c) in per_arm.items():
        if arm_id in skip:
            continue
        i = policy.arm_index.get(arm_id)
        arm = policy.arms[i] if i is not None else None
        if kind == "policy" or (arm is not None and (
                (kind == "channel" and arm.channel == name)
                or (kind == "content" and arm.content is not None and arm.content.id == name))):
            sends, unsub, compl = sends + n, unsub + u, compl + c
    return sends, unsub, compl


def span_confidence(s: Safety) -> float:
    """The one-sided level each of the `spans` judged spans is held to (Bonferroni): together they
    trip a rate that is truly at its threshold with at most the policy's 1 - confidence."""
    return 1 - (1 - s.confidence) / s.spans


def spans(s: Safety, now: float, start: float) -> list[float]:
    """Where the judged spans start, longest first: the window (from `start`, which a close or a
    reset may have moved later), then its latest half, quarter, ... (those after `start`)."""
    out = [start]
    for i in range(1, s.spans):
        t = now - s.window / 2 ** i
        if t > out[-1]:
            out.append(t)
    return out


def answered(policy: Policy, what: str, opened: set[str]) -> tuple[list[str], frozenset[str]]:
    """The open breakers below `what` (a channel's contents; the policy's contents and channels)
    and their arms, whose sends `what` leaves out: an offending content already stopped must not
    trip its channel or the whole policy too, on the same sends."""
    kind = what.partition(":")[0]
    below = [w for w in sorted(opened) if (kind == "channel" and w.startswith("content:"))
             or (kind == "policy" and w.startswith(("content:", "channel:")))]
    arms = frozenset(a.id for a in policy.arms if not a.hold and (
        f"content:{a.content.id}" in below or f"channel:{a.channel}" in below))
    return below, arms


def judge(counts: tuple[int, int, int], s: Safety, confidence: float | None = None) -> list[dict]:
    """Each rate's evidence: events, sends, point estimate, exact bounds at `confidence` (each
    one-sided; by default a span's, `span_confidence`), the threshold, and whether it is surely
    over or surely under."""
    sends = counts[0]
    confidence = span_confidence(s) if confidence is None else confidence
    out = []
    for (rate, key), events in zip(RATES, counts[1:]):
        threshold = getattr(s, key)
        lower, upper = clopper_pearson(events, sends, 2 * (1 - confidence)) if sends else (0.0, 1.0)
        enough = sends >= s.min_sends
        out.append({"rate": rate, "events": events, "sends": sends, "point": events / sends if sends else None,
                    "lower": lower, "upper": upper, "confidence": confidence, "threshold": threshold,
                    "over": enough and lower > threshold, "under": enough and upper < threshold})
    return out


class Window:
    """A policy's sends of its breaker's window, kept between checks: read by time when nothing
    held reaches back to the window's start (the first check, a longer window, a learner that
    leads again after more than a window), else only the sends logged since the last check, by
    seq, up to the store's committed seq so that a send still being written is never skipped.
    Each check also reads the window's unsubscribes and complaints, which are few. The counts
    are those of `Store.breaker_counts`, which reads the whole window every time; a span that
    starts before the window (a probe running for longer than it) is left to that.

    Sends pruned from inside the window (`tactful prune` with an age under the window) still
    count here until the learner restarts, without the signals pruned with them."""

    def __init__(self) -> None:
        self.after = 0                # the highest seq read
        self.start = float("inf")     # every send decided from here on (up to `after`) is held
        self.refreshed = float("-inf")  # the clock's time of the last refresh
        self.times = np.empty(0)      # decided_at of each send held
        self.arms = np.empty(0, dtype=np.int32)  # its arm, an index into `_index` (in its order)
        self._index: dict[str, int] = {}
        self.signals: list[tuple[str, float, str]] = []

    def refresh(self, store: Store, policy: str, floor: float, now: float) -> None:
        """Hold every send decided from `floor` on and no older one, and their signals."""
        upto = store.committed_seq()
        again = floor < self.start or self.refreshed < floor  # what is held cannot be caught up
        rows = (store.breaker_sends_between(policy, floor, float("inf"), upto) if again
                else store.breaker_sends_after(policy, self.after, upto))
        signals = store.breaker_signals(policy, floor, upto)
        # every read succeeded: only now is what is held changed (a failed check changes nothing)
        if again:
            self.times, self.arms = np.empty(0), np.empty(0, dtype=np.int32)
        self._add(rows)
        keep = self.times >= floor
        self.times, self.arms = self.times[keep], self.arms[keep]
        self.after, self.start, self.refreshed, self.signals = upto, floor, now, signals

    def _add(self, rows: list[tuple[int, str, float]]) -> None:
        if rows:
            arms = [self._index.setdefault(arm, len(self._index)) for _, arm, _ in rows]
            self.times = np.concatenate([self.times, np.fromiter((t for _, _, t in rows), float, len(rows))])
            self.arms = np.concatenate([self.arms, np.asarray(arms, dtype=np.int32)])

    def counts(self, since: float) -> dict[str, tuple[int, int, int]] | None:
        """Per arm, of the sends decided at or after `since`: how many, how many brought an
        unsubscribe, how many a complaint; None when `since` is before what is held."""
        if since < self.start:
            return None
        sends = np.bincount(self.arms[self.times >= since], minlength=len(self._index))
        signals: dict[str, list[int]] = {}
        for arm, at, kind in self.signals:
            if at >= since:
                signals.setdefault(arm, [0, 0])[kind == "complaint"] += 1
        return {name: (int(n), *signals.get(name, (0, 0))) for name, n in zip(self._index, sends) if n}


class CircuitBreaker:
    """Judges every watched rate of a policy and opens, reopens or closes its breakers."""

    def __init__(self, store: Store):
        self.store = store
        self._last: dict[str, float] = {}
        self._windows: dict[str, Window] = {}

    def before_step(self, policy: Policy, now: float) -> None:
        """The learner's hook (before each step and on each tick): check when one is due; a
        failure is logged, never stops learning."""
        try:
            self.check(policy, now)
        except Exception:  # noqa: BLE001 -- the learner goes on; the next check tries again
            log.exception("policy %s: the circuit breaker check failed", policy.name)

    def check(self, policy: Policy, now: float, force: bool = False) -> list[dict]:
        """Judge the policy's watched rates if `check_every` has passed (or `force`); the changes made."""
        s = policy.spec.safety
        if s is None or (not force and now - self._last.get(policy.name, float("-inf")) < s.check_every):
            return []
        self._last[policy.name] = now
        states = self.store.breakers(policy.name)
        window = self._windows.setdefault(policy.name, Window())
        window.refresh(self.store, policy.name, now - s.window, now)
        counts: dict[float, dict] = {}

        def since(t: float) -> dict:
            if t not in counts:  # a probe that began before the window: counted afresh
                held = window.counts(t)
                counts[t] = held if held is not None else self.store.breaker_counts(policy.name, t)
            return counts[t]

        opened = {w for w, st in states.items() if st["status"] == "open"}
        changes = []
        for what in targets(policy, s.levels):  # contents first: what they answer for, channels leave out
            st = states.get(what)
            below, skip = answered(policy, what, opened)
            if st is not None and st["status"] == "open":
                if st["probe_from"] is None or now < st["probe_from"]:
                    continue  # open until reset, or still cooling off
                evidence = judge(tally(policy, what, since(st["probe_from"]), skip), s, s.confidence)  # one span
                if all(e["under"] for e in evidence):
                    changes.append(self._close(policy, what, evidence, st["probe_from"], now))
                    opened.discard(what)
                elif any(e["over"] for e in evidence):
                    changes.append(self._open(policy, what, evidence, st["probe_from"], now, "reopen", below))
            else:
                start = now - s.window if st is None else max(now - s.window, st["since"])
                for t in spans(s, now, start):
                    evidence = judge(tally(policy, what, since(t), skip), s)
                    if any(e["over"] for e in evidence):
                        changes.append(self._open(policy, what, evidence, t, now, "trip", below))
                        opened.add(what)
                        break
        return changes

    def _open(self, policy: Policy, what: str, evidence: list[dict], start: float, now: float, kind: str,
              below: list[str]) -> dict:
        s = policy.spec.safety
        e = max((e for e in evidence if e["over"]), key=lambda e: e["lower"] / e["threshold"])
        probe_from = now + s.probe_after if s.probe_after is not None else None
        aside = f", leaving out the sends of {', '.join(label(w) for w in below)} (open)" if below else ""
        detail = (f"circuit breaker: the {e['rate']} rate of {label(what)} is {e['point']:.2%} ({e['events']} of "
                  f"{e['sends']} sends since {to_rfc3339(start)}{aside}; {100 * e['confidence']:g}% lower bound "
                  f"{e['lower']:.2%}), above the threshold {e['threshold']:.2%}; open since {to_rfc3339(now)}"
                  + (f", probing {s.probe_share:.0%} of people from {to_rfc3339(probe_from)}" if probe_from
                     else ", until an operator resets it"))
        self.store.set_breaker(policy.name, what, "open", probe_from, detail, kind,
                               {"rates": evidence, "since": start, "left_out": below}, None, now)
        log.warning("policy %s: %s", policy.name, detail)
        return {"target": what, "kind": kind, "detail": detail}

    def _close(self, policy: Policy, what: str, evidence: list[dict], start: float, now: float) -> dict:
        rates = "; ".join(f"{e['rate']} {e['point']:.2%} (upper bound {e['upper']:.2%} < {e['threshold']:.2%})"
                          for e in evidence)
        detail = f"circuit breaker of {label(what)} closed: {evidence[0]['sends']} probe sends, {rates}"
        self.store.set_breaker(policy.name, what, "closed", None, detail, "close", {"rates": evidence, "since": start},
                               None, now)
        log.warning("policy %s: %s", policy.name, detail)
        return {"target": what, "kind": "close", "detail": detail}


def reset(store: Store, policy: Policy, what: str | None, reason: str, by: str | None, now: float) -> list[str]:
    """An operator closes the open breaker watching `what` (every open one of the policy when
    None), recording why; what was reset. Only sends made from now on count for it again."""
    opened = [t for t, st in store.breakers(policy.name).items() if st["status"] == "open" and what in (None, t)]
    for t in opened:
        store.set_breaker(policy.name, t, "closed", None, f"reset by an operator: {reason}", "reset",
                          {"reason": reason}, by, now)
    return opened
