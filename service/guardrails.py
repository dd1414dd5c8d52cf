"""Guardrails: which arms a person may receive now, and why each other arm was removed.

They run before the learner scores anything. The learner only ever sees the allowed arms, so no
model output can re-admit a removed one. Every removal carries a reason code (the table in
docs/guardrails.md) and a human detail.

Reason codes so far:
  no_consent     the channel needs consent the person has not given, or they refused it
  frequency_cap  sending would put more than `max` contacts on the channel (or on every channel)
                 into some window of the cap's length
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from service.policy import Cap, Policy, Timing
from service.store import PersonState


@dataclass
class Verdict:
    allowed: list[int]                                   # indices into policy.arms
    removed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # arm -> [(code, detail)]
    send_at: dict[str, float] = field(default_factory=dict)                 # timing -> epoch seconds

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reasons in self.removed.values():
            for code in {code for code, _ in reasons}:
                counts[code] = counts.get(code, 0) + 1
        return counts


def resolve_send_at(timing: Timing, now: float, tz: ZoneInfo) -> float:
    """The moment a timing slot sends, in epoch seconds.

    `delay_minutes` slots send after the delay; `at` slots at the next occurrence of that local
    wall-clock time in the person's zone (zoneinfo handles daylight-saving changes).
    """
    if timing.delay_minutes is not None:
        return now + timing.delay_minutes * 60.0
    local_now = datetime.fromtimestamp(now, tz)
    at = timing.local_time
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
    return max(windows)


def evaluate(policy: Policy, person: PersonState, now: float, tz: ZoneInfo | None = None) -> Verdict:
    tz = tz or policy.tz
    spec = policy.spec
    send_at = {t.name: resolve_send_at(t, now, tz) for t in spec.timing}

    consent_rule = spec.guardrails.consent
    channel_ok: dict[str, tuple[str, str] | None] = {}
    for ch in spec.channels:
        rule = consent_rule.get(ch, "opt_in")
        granted = person.consent.get(ch)
        if granted is False:
            channel_ok[ch] = ("no_consent", f"{ch}: the person refused this channel")
        elif granted is None and rule == "opt_in":
            channel_ok[ch] = ("no_consent", f"{ch}: needs an opt-in the person has not given")
        else:
            channel_ok[ch] = None

    by_channel: dict[str, list[float]] = {}
    every: list[float] = []
    for ch, at in person.contacts:
        by_channel.setdefault(ch, []).append(at)
        every.append(at)
    for times in by_channel.values():
        times.sort()
    every.sort()

    cap_cache: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def cap_reasons(channel: str, timing: str) -> list[tuple[str, str]]:
        key = (channel, timing)
        if key not in cap_cache:
            t = send_at[timing]
            hits = []
            for cap in spec.guardrails.caps:
                if cap.channel not in ("*", channel):
                    continue
                times = every if cap.channel == "*" else by_channel.get(channel, [])
                if exceeds_cap(times, t, cap.window, cap.max):
                    hits.append(("frequency_cap", _cap_detail(cap)))
            cap_cache[key] = hits
        return cap_cache[key]

    allowed: list[int] = []
    removed: dict[str, list[tuple[str, str]]] = {}
    for i, arm in enumerate(policy.arms):
        if arm.hold:
            allowed.append(i)
            continue
        reasons = []
        if (c := channel_ok[arm.channel]) is not None:
            reasons.append(c)
        reasons += cap_reasons(arm.channel, arm.timing.name)
        if reasons:
            removed[arm.id] = reasons
        else:
            allowed.append(i)
    return Verdict(allowed, removed, send_at)


def _cap_detail(cap: Cap) -> str:
    scope = "contacts on any channel" if cap.channel == "*" else f"{cap.channel} contacts"
    return f"at most {cap.max} {scope} per {cap.label.split(':')[1]}"


def to_rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")
