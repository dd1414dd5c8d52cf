"""Time is an input: every component takes "now" from one clock object.

`SystemClock` is the wall clock. `RequestClock` is for simulation and replay: requests may carry a
timestamp, and "now" is the latest timestamp the service has seen, shared by every worker and the
learner through the store.
"""
from __future__ import annotations

import time
from typing import Protocol

from service.errors import BadRequest


class _ClockTable(Protocol):
    """Where a RequestClock keeps the latest time seen: the store (`clock_now`, `clock_advance`)."""

    def clock_now(self) -> float | None: ...

    def clock_advance(self, ts: float) -> float: ...

    def fill_unknown_times(self, at: float) -> None: ...


class Clock(Protocol):
    accepts_timestamps: bool

    def now(self) -> float: ...

    def observe(self, timestamp: float | None) -> float:
        """Take a request's timestamp into account and return now."""

    def known(self) -> float | None:
        """Now, or None while the clock has no time yet (a request clock before its first
        timestamp): what a record of when something happened takes, so that it never says 1970."""


class SystemClock:
    accepts_timestamps = False

    def now(self) -> float:
        return time.time()

    def observe(self, timestamp: float | None) -> float:
        return time.time()

    def known(self) -> float | None:
        return time.time()


class RequestClock:
    accepts_timestamps = True

    def __init__(self, store: _ClockTable, start: float = 0.0):
        self.store = store
        self.start = start
        self._filled = False

    def now(self) -> float:
        now = self.store.clock_now()
        return self.start if now is None else now

    def known(self) -> float | None:
        return self.store.clock_now()

    def observe(self, timestamp: float | None) -> float:
        if timestamp is None:
            return self.now()
        now = self.store.clock_advance(timestamp)
        if not self._filled:
            # what was recorded before the clock had a time (the first model version, made when
            # the service started) takes the first time it has, once per process
            self.store.fill_unknown_times(now)
            self._filled = True
        return now


class ManualClock:
    """A clock a test or an in-process simulation moves by hand."""

    accepts_timestamps = True

    def __init__(self, start: float = 0.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def observe(self, timestamp: float | None) -> float:
        if timestamp is not None and timestamp > self.t:
            self.t = timestamp
        return self.t

    def known(self) -> float | None:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


def make_clock(kind: str, store: _ClockTable) -> Clock:
    if kind == "system":
        return SystemClock()
    if kind == "request":
        return RequestClock(store)
    raise ValueError(f"unknown clock {kind!r}: use 'system' or 'request'")


def request_time(clock: Clock, timestamp: float | None) -> float:
    """Now, for a request that may carry its own `timestamp`: accepted only by a clock that takes
    timestamps (`--clock request`), refused by name otherwise."""
    if timestamp is not None and not clock.accepts_timestamps:
        raise BadRequest("timestamps are accepted only when the service runs with --clock request; "
                         "leave it out and the service uses its own clock", "timestamp")
    return clock.observe(timestamp)
