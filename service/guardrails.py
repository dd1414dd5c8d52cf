"""Guardrails: which arms a person may receive now, and why each other arm was removed.

They run before the learner scores anything. The learner only ever sees the allowed arms, so no
model output can re-admit a removed one. Every removal carries a reason code and a human detail;
docs/guardrails.md has the table of rules, their configuration keys and the tests that prove them.

Reason codes:
  no_consent            the channel needs consent the person has not given, or they refused it
  channel_blocked       the person blocked the channel in their preferences
  cooldown_unsubscribe  the person unsubscribed from the channel less than the cooldown ago
  cooldown_complaint    the person complained (any channel) less than the cooldown ago
  quiet_hours           the send time falls in quiet hours and the policy removes such slots
  frequency_cap         one more contact would put more than `max` on the channel (or on every
                        channel) into some window of the cap's length, counted across policies
  personal_cap          the same, for the person's own maximum of contacts per week
  min_gap               another contact is closer in time than the policy's minimum gap
  blocked_topic         the content's topic is blocked by the person or the policy
  not_yet_valid         the content or arm is not valid yet at its send time
  expired               the content or arm is no longer valid at its send time
  retired, out_of_stock the arm or its content was switched off at runtime
  suppressed            K contacts in a row without engagement: only low-pressure arms remain
  daily_budget          the policy's sends for today are spent

Time is local to the person (their time zone, else the policy's), through zoneinfo, so send
slots and quiet hours stay right across daylight-saving changes. A moment is quiet when the
local wall-clock time it shows lies in [start, end).
"""
from __future__ import annotations

import math
from functools import lru_cache
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from zoneinfo import ZoneInfo

from service.policy import Cap, Policy, Timing
from service.store import PersonState


@dataclass
class Verdict:
    allowed: list[int]                                   # indices into policy.arms
    removed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # arm -> [(code, detail)]
    send_at: dict[str, float] = field(default_factory=dict)                 # allowed arm -> epoch seconds
    moved: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # (channel, timing) ->
    # (from, to): send times moved out of quiet hours (`moved_text` renders them)
    timezone: str = "UTC"

    def moved_text(self) -> dict[str, dict]:
        return {f"{ch}:{name}": {"from": _fmt(a), "to": _fmt(b)} for (ch, name), (a, b) in self.moved.items()}


def resolve_send_at(timing: Timing, now: float, tz: ZoneInfo) -> float:
    """The moment a timing slot sends, in epoch seconds.

    `delay_minutes` slots send after the delay; `at` slots at the next occurrence of that local
    wall-clock time in the person's zone (zoneinfo handles daylight-saving changes).
    """
    if timing.delay_minutes is not None:
        return now + timing.delay_minutes * 60.0
    # the answer stays the same from the moment it was computed until the slot's time passes
    key = (timing.local_time, tz)
    hit = _next_at.get(key)
    if hit is not None and hit[0] <= now < hit[1]:
        return hit[1]
    at_ = _next_local(timing.local_time, now, tz)
    if len(_next_at) > 4096:
        _next_at.clear()
    _next_at[key] = (now, at_)
    return at_


_next_at: dict[tuple, tuple[float, float]] = {}


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


def exceeds_cap(times: list[float], t: float, window: float, limit: int) -> bool:
    """Would one more contact at `t` put more than `limit` contacts into some window
    [s, s + window) that contains t?  `times` is sorted.

    Sliding a window right until its left edge meets a contact (or t) never loses a contact, so
    the fullest window containing t starts at t or at a contact in (t - window, t].
    """
    if limit <= 0:
        return True
    if len(times) < limit:  # even a window holding every contact and t holds at most `limit`
        return False
    starts = [t] + [c for c in times if t - window < c <= t]
    for s in starts:
        lo = bisect_left(times, s)
        hi = bisect_left(times, s + window)
        if hi - lo + 1 > limit:
            return True
    return False


def lookback(policy: Policy) -> float:
    """How far back a person's contacts matter to this policy's guardrails."""
    windows = [cap.window for cap in policy.spec.guardrails.caps] + [policy.spec.reward.fatigue.window, 7 * 86400.0]
    if policy.spec.guardrails.min_gap:
        windows.append(policy.spec.guardrails.min_gap)
    return max(windows)


def signal_lookback(policy: Policy) -> float:
    """How far back explicit signals (unsubscribe, complaint) matter: the longest cooldown."""
    c = policy.spec.guardrails.cooldown
    return max([c.unsubscribe or 0.0, c.complaint or 0.0, 1.0])


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


# -- quiet hours ------------------------------------------------------------------------------

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


# -- evaluation -------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _out_of_quiet(t0: float, tz: ZoneInfo, rules: tuple) -> tuple[float, tuple[str, str] | None]:
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
            return t0, ("quiet_hours", f"sends at {_fmt(t)}, inside {whose} quiet hours {a}-{b} ({tz.key})")
        t = quiet_end(t, tz, a, b)
    raise AssertionError("unreachable")  # pragma: no cover


def _fmt(ts: float) -> str:
    return to_rfc3339(ts) or ""


def _in_window(state: dict | None, t: float) -> tuple[str, str] | None:
    if not state:
        return None
    if state.get("valid_from") is not None and t < state["valid_from"]:
        return ("not_yet_valid", f"valid from {_fmt(state['valid_from'])}")
    if state.get("valid_until") is not None and t >= state["valid_until"]:
        return ("expired", f"valid until {_fmt(state['valid_until'])}")
    return None


def evaluate(policy: Policy, person: PersonState, now: float, tz: ZoneInfo | None = None) -> Verdict:
    """Every arm of the policy, allowed or removed with its reasons, for this person at `now`.

    Rules depend on few dimensions, so each is computed once per channel, per (channel, timing)
    or per content and the arms combine them.
    """
    tz = tz or person_tz(policy, person)
    spec = policy.spec
    g = spec.guardrails
    prefs = person.preferences or {}

    # send times, moved out of quiet hours where the policy says so (per channel: quiet hours may
    # not apply to every channel)
    raw_send_at = {t.name: resolve_send_at(t, now, tz) for t in spec.timing}
    quiet_rules = []
    if g.quiet_hours:
        quiet_rules.append((g.quiet_hours.start, g.quiet_hours.end, g.quiet_hours.action,
                            frozenset(g.quiet_hours.channels or spec.channels), "the policy's"))
    if prefs.get("quiet_hours"):
        q = prefs["quiet_hours"]
        quiet_rules.append((q["start"], q["end"], g.quiet_hours.action if g.quiet_hours else "move",
                            frozenset(spec.channels), "the person's"))
    send_at: dict[tuple[str, str], float] = {}
    quiet_removed: dict[tuple[str, str], tuple[str, str]] = {}
    moved: dict[tuple[str, str], tuple[float, float]] = {}
    # channels under the same quiet rules share their slots' times, computed once
    by_rules: dict[tuple[int, ...], dict[str, tuple[float, tuple[str, str] | None]]] = {}
    for ch in spec.channels:
        rules = tuple(i for i, r in enumerate(quiet_rules) if ch in r[3])
        if rules not in by_rules:
            applied = tuple(quiet_rules[i] for i in rules)
            by_rules[rules] = {name: _out_of_quiet(t0, tz, applied) for name, t0 in raw_send_at.items()}
        for name, (t, removal) in by_rules[rules].items():
            if removal is not None:
                quiet_removed[(ch, name)] = removal
            elif t != raw_send_at[name]:
                moved[(ch, name)] = (raw_send_at[name], t)
            send_at[(ch, name)] = t

    # channel-level rules
    consent_rule = g.consent
    blocked_channels = set(prefs.get("blocked_channels") or ())
    unsub_until: dict[str, float] = {}
    complaint_until = None
    for kind, channel, at in person.signals:
        if kind == "unsubscribe" and channel and g.cooldown.unsubscribe:
            unsub_until[channel] = max(unsub_until.get(channel, 0.0), at + g.cooldown.unsubscribe)
        elif kind == "complaint" and g.cooldown.complaint:
            complaint_until = max(complaint_until or 0.0, at + g.cooldown.complaint)
    budget_spent = g.daily_budget is not None and person.budget_used >= g.daily_budget
    channel_reasons: dict[str, list[tuple[str, str]]] = {}
    for ch in spec.channels:
        reasons = []
        granted = person.consent.get(ch)
        if granted is False:
            reasons.append(("no_consent", f"{ch}: the person refused this channel"))
        elif granted is None and consent_rule.get(ch, "opt_in") == "opt_in":
            reasons.append(("no_consent", f"{ch}: needs an opt-in the person has not given"))
        if ch in blocked_channels:
            reasons.append(("channel_blocked", f"{ch}: blocked in the person's preferences"))
        if now < unsub_until.get(ch, 0.0):
            reasons.append(("cooldown_unsubscribe", f"{ch}: unsubscribed, cooldown until {_fmt(unsub_until[ch])}"))
        if complaint_until is not None and now < complaint_until:
            reasons.append(("cooldown_complaint", f"complained, no contact until {_fmt(complaint_until)}"))
        if budget_spent:
            reasons.append(("daily_budget", f"the policy's {g.daily_budget} sends for today are spent"))
        channel_reasons[ch] = reasons

    # (channel, timing)-level rules: caps, the personal cap, the minimum gap, quiet hours
    by_channel: dict[str, list[float]] = {}
    every: list[float] = []
    for ch, at in person.contacts:
        by_channel.setdefault(ch, []).append(at)
        every.append(at)
    for times in by_channel.values():
        times.sort()
    every.sort()
    personal = prefs.get("max_contacts_per_week")
    slot_reasons: dict[tuple[str, str], list[tuple[str, str]]] = {}
    caps = _caps_table(policy)
    for (ch, name), t in send_at.items():
        reasons = []
        if (ch, name) in quiet_removed:
            reasons.append(quiet_removed[(ch, name)])
        for window, limit, everywhere, reason in caps[ch]:
            times = every if everywhere else by_channel.get(ch, ())
            if exceeds_cap(times, t, window, limit):
                reasons.append(reason)
        if personal is not None and exceeds_cap(every, t, 7 * 86400.0, int(personal)):
            reasons.append(("personal_cap", f"at most {personal} contacts per week, the person's own limit"))
        if g.min_gap:
            i = bisect_right(every, t - g.min_gap)   # the first contact after t - gap
            if i < len(every) and every[i] < t + g.min_gap:
                reasons.append(("min_gap", f"another contact at {_fmt(every[i])}, closer than the policy's "
                                           f"minimum gap of {g.min_gap / 3600:g}h"))
        slot_reasons[(ch, name)] = reasons

    # content-level rules: topics, validity, runtime state
    blocked_topics = set(g.blocked_topics) | set(prefs.get("blocked_topics") or ())
    content_reasons: dict[str, list[tuple[str, str]]] = {}
    for c in spec.content:
        reasons = []
        if c.topic in blocked_topics:
            who = "the person" if c.topic in set(prefs.get("blocked_topics") or ()) else "the policy"
            reasons.append(("blocked_topic", f"topic {c.topic!r} is blocked by {who}"))
        st = person.arm_state.get(c.id)
        if st and st["status"] in ("retired", "out_of_stock"):
            reasons.append((st["status"], f"content {c.id!r} is {st['status'].replace('_', ' ')}"))
        content_reasons[c.id] = reasons

    suppressed = g.suppression is not None and person.unengaged >= g.suppression.after

    allowed: list[int] = []
    removed: dict[str, list[tuple[str, str]]] = {}
    arm_send_at: dict[str, float] = {}
    arm_state = person.arm_state
    hold, by_slot, dated = _arm_table(policy)
    per_arm = bool(arm_state) or suppressed or dated
    # a slot's reasons (its channel's, then its own) once per slot; arms share these lists, which
    # are never changed after this point (an arm with reasons of its own gets a new list)
    for slot, arms in by_slot.items():
        base = channel_reasons[slot[0]] + slot_reasons[slot]
        t = send_at[slot]
        for i, aid, cid, vf, vu, low_pressure in arms:
            reasons = base
            if content_reasons[cid]:
                reasons = reasons + content_reasons[cid]
            if per_arm:
                own = []
                if vf is not None and t < vf:
                    own.append(("not_yet_valid", f"content {cid!r} is valid from {_fmt(vf)}"))
                if vu is not None and t >= vu:
                    own.append(("expired", f"content {cid!r} was valid until {_fmt(vu)}"))
                if arm_state:
                    for target in (cid, aid):
                        if (w := _in_window(arm_state.get(target), t)) is not None:
                            own.append(w)
                    st = arm_state.get(aid)
                    if st and st["status"] in ("retired", "out_of_stock"):
                        own.append((st["status"], f"arm {aid!r} is {st['status'].replace('_', ' ')}"))
                if suppressed and not low_pressure:
                    own.append(("suppressed", f"{person.unengaged} contacts in a row without engagement: "
                                              f"only low-pressure arms until the person engages"))
                if own:
                    reasons = reasons + own
            if reasons:
                removed[aid] = reasons
            else:
                allowed.append(i)
                arm_send_at[aid] = t
    allowed.extend(hold)  # never removed
    allowed.sort()
    return Verdict(allowed, removed, arm_send_at, moved, tz.key)


def _arm_table(policy: Policy) -> tuple[list[int], dict[tuple[str, str], list[tuple]], bool]:
    """What evaluation needs of the arms, computed once per policy: the hold arms' indices; per
    (channel, timing) slot, its arms as (index, arm id, content id, valid_from, valid_until,
    whether suppression still allows it); whether any content has a validity window."""
    table = getattr(policy, "_guardrail_arms", None)
    if table is None:
        sup = policy.spec.guardrails.suppression
        hold, by_slot, dated = [], {}, False
        for i, arm in enumerate(policy.arms):
            if arm.hold:
                hold.append(i)
                continue
            c = arm.content
            vf = c.valid_from.timestamp() if c.valid_from else None
            vu = c.valid_until.timestamp() if c.valid_until else None
            dated = dated or vf is not None or vu is not None
            by_slot.setdefault((arm.channel, arm.timing.name), []).append(
                (i, arm.id, c.id, vf, vu,
                 bool(sup) and any(r.matches(c.id, arm.channel, arm.timing.name) for r in sup.allow)))
        table = policy._guardrail_arms = (hold, by_slot, dated)
    return table


def _caps_table(policy: Policy) -> dict[str, list[tuple[float, int, bool, tuple[str, str]]]]:
    """Per channel, the caps that count its contacts: (window, max, whether every channel counts,
    the removal reason), computed once per policy."""
    table = getattr(policy, "_guardrail_caps", None)
    if table is None:
        table = {ch: [(cap.window, cap.max, cap.channel == "*", ("frequency_cap", _cap_detail(cap)))
                      for cap in policy.spec.guardrails.caps if cap.channel in ("*", ch)]
                 for ch in policy.spec.channels}
        policy._guardrail_caps = table
    return table


def _cap_detail(cap: Cap) -> str:
    scope = "contacts on any channel" if cap.channel == "*" else f"{cap.channel} contacts"
    return f"at most {cap.max} {scope} per {cap.label.split(':')[1]}"


@lru_cache(maxsize=4096)  # the same contact and slot times are rendered again and again
def to_rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")
