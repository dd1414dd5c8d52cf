"""Local time for the guardrails: when a send slot sends in the person's time zone, whether a
moment is in quiet hours, when quiet hours end, moving a send out of them, and the policy's
budget day. Through zoneinfo, so send slots and quiet hours stay right across daylight-saving
changes. A moment is quiet when the local wall-clock time it shows lies in [start, end)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from zoneinfo import ZoneInfo

from service.policy import Policy, Timing
from service.store import PersonState
from service.times import to_rfc3339


def resolve_send_at(timing: Timing, now: float, tz: ZoneInfo, memo: dict | None = None) -> float:
    """The moment a timing slot sends, in epoch seconds.

    `delay_minutes` slots send after the delay; `at` slots at the next occurrence of that local
    wall-clock time in the person's zone (zoneinfo handles daylight-saving changes). The answer
    stays the same from the moment it was computed until the slot's time passes, so a caller that
    resolves slots again and again passes a `memo` (a dict it owns) to keep the answers.
    """
    if timing.delay_minutes is not None:
        return now + timing.delay_minutes * 60.0
    key = (timing.local_time, tz)
    hit = memo.get(key) if memo is not None else None
    if hit is not None and hit[0] <= now < hit[1]:
        return hit[1]
    at_ = _next_local(timing.local_time, now, tz)
    if memo is not None:
        if len(memo) > 4096:
            memo.clear()
        memo[key] = (now, at_)
    return at_


def _next_local(at: dtime, now: float, tz: ZoneInfo) -> float:
    """The first moment after `now` whose local wall-clock time in `tz` is `at`."""
    local_now = datetime.fromtimestamp(now, tz)
    for days in range(0, 3):
        day = (local_now + timedelta(days=days)).date()
        candidate = datetime.combine(day, at, tzinfo=tz)
        # a wall time skipped by a daylight-saving jump maps forward, never back
        candidate = datetime.fromtimestamp(candidate.timestamp(), tz)
        if candidate.timestamp() > now:
            return candidate.timestamp()
    raise AssertionError("a local time recurs within two days")  # pragma: no cover


def person_tz(policy: Policy, person: PersonState) -> ZoneInfo:
    name = person.preferences.get("timezone")
    if name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError):  # validated when stored; an old row must not break decisions
            pass
    return policy.tz


def budget_day(policy: Policy, now: float) -> str:
    """The policy's budget day: the calendar date of `now` in the policy's time zone."""
    return datetime.fromtimestamp(now, policy.tz).date().isoformat()


@lru_cache(maxsize=1024)
def _minutes(hhmm: str) -> float:
    t = time_of(hhmm)
    return t.hour * 60 + t.minute + t.second / 60


def time_of(hhmm: str) -> dtime:
    return dtime.fromisoformat(hhmm)


def is_quiet(ts: float, tz: ZoneInfo, start: str, end: str) -> bool:
    """Does the local wall-clock time at `ts` lie in [start, end) (wrapping midnight)?"""
    local = datetime.fromtimestamp(ts, tz)
    m = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    a, b = _minutes(start), _minutes(end)
    return a <= m < b if a < b else (m >= a or m < b)


def quiet_end(ts: float, tz: ZoneInfo, start: str, end: str) -> float:
    """The first moment at or after `ts` that is not quiet (`ts` itself when it is not)."""
    if not is_quiet(ts, tz, start, end):
        return ts
    local = datetime.fromtimestamp(ts, tz)
    end_t = time_of(end)
    for days in range(0, 3):
        wall = datetime.combine(local.date() + timedelta(days=days), end_t)
        first = datetime(wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second, tzinfo=tz, fold=0)
        candidate = first.timestamp()
        if candidate <= ts:
            continue
        shown = datetime.fromtimestamp(candidate, tz)
        if (shown.hour, shown.minute, shown.second) != (end_t.hour, end_t.minute, end_t.second):
            # the end time does not exist that day (clocks jumped over it): quiet ends at the
            # jump, the first instant whose wall time is past `end`; find it to the second
            lo = datetime(wall.year, wall.month, wall.day, wall.hour, wall.minute, wall.second,
                          tzinfo=tz, fold=1).timestamp()
            lo, hi = math.floor(max(min(lo, candidate) - 1, ts)), math.ceil(candidate)
            while hi - lo > 1:  # whole seconds: lo is quiet, hi is not
                mid = (lo + hi) // 2
                if is_quiet(mid, tz, start, end):
                    lo = mid
                else:
                    hi = mid
            candidate = float(hi)
        if not is_quiet(candidate, tz, start, end):
            return candidate
    raise AssertionError("quiet hours end within two days")  # pragma: no cover


@lru_cache(maxsize=4096)
def out_of_quiet(t0: float, tz: ZoneInfo, rules: tuple) -> tuple[float, tuple[str, str] | None]:
    """(send time, None) moved out of every quiet period in `rules`, or (t0, the reason) when
    the slot is removed: the policy says remove, or the periods together leave no time at all.

    Cached: slots at a local time of day send at the same moment for every decision until that
    moment passes, so most calls repeat an earlier one."""
    t = t0
    for attempt in range(9):  # moving out of one period may land in another; both are honoured
        hit = next(((a, b, act, whose) for a, b, act, _, whose in rules if is_quiet(t, tz, a, b)), None)
        if hit is None:
            return t, None
        a, b, act, whose = hit
        if act == "remove" or attempt == 8:
            # the other rules judge a removed slot at its own time
            return t0, ("quiet_hours", f"sends at {to_rfc3339(t)}, inside {whose} quiet hours {a}-{b} ({tz.key})")
        t = quiet_end(t, tz, a, b)
    raise AssertionError("unreachable")  # pragma: no cover
