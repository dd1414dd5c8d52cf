"""The simulator's own guardrail check, independent of service/decision/guardrails.py.

The simulator keeps its own record of every simulated person (true consent, unsubscribes and
complaints, every send) and re-checks each send the decision code made against it. A send that
breaks a rule is a violation; a correct service has none. Nothing here imports the guardrail code:
the rules are re-derived from the policy file, so a bug in one is caught by the other.

Rules are small objects with one method, `blocks(person, channel, send_at, now) -> reason | None`.
`rules_for(policy)` builds the ones the policy declares: consent, caps, minimum gap, quiet hours
and cooldowns. Guardrail keys this module does not check (suppression, which needs engagement
the simulator does not track per send, blocked topics, the daily budget) are reported as
unchecked rather than silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Sequence
from zoneinfo import ZoneInfo


@dataclass
class PersonRecord:
    """What the simulator knows to be true about one person."""
    timezone: ZoneInfo
    consent: dict[str, bool]                                        # the person's true consent now
    sends: list[tuple[str, float]] = field(default_factory=list)    # (channel, send_at), decision order
    left: dict[str, tuple[str, float]] = field(default_factory=dict)  # channel -> (unsubscribe|complaint, at)


class Rule(Protocol):
    name: str

    def blocks(self, person: PersonRecord, channel: str, send_at: float, now: float) -> str | None: ...


@dataclass(frozen=True)
class ConsentRule:
    """opt_in channels need a grant the person has not withdrawn; opt_out channels need no refusal."""
    modes: dict[str, str]  # channel -> "opt_in" | "opt_out"
    name: str = "consent"

    def blocks(self, person, channel, send_at, now):
        granted = person.consent.get(channel)
        if granted is False:
            return f"{channel}: the person refused or unsubscribed"
        if granted is None and self.modes.get(channel, "opt_in") == "opt_in":
            return f"{channel}: no opt-in"
        return None


@dataclass(frozen=True)
class CapRule:
    """At most `limit` sends on `channel` ("*": any) in any window of `window` seconds, by send time."""
    channel: str
    limit: int
    window: float
    name: str = "frequency_cap"

    def blocks(self, person, channel, send_at, now):
        if self.channel not in ("*", channel):
            return None
        near = [at for ch, at in person.sends
                if (self.channel == "*" or ch == channel) and abs(at - send_at) < self.window]
        if len(near) < self.limit:
            return None  # even all of them and this one fit
        near = sorted(near) + [send_at]
        # every window [x, x + window) that holds send_at and starts at a send or at send_at
        for x in near:
            if send_at - self.window < x <= send_at:
                count = sum(1 for at in near if x <= at < x + self.window)
                if count > self.limit:
                    return f"{count} {self.channel} sends in a {self.window / 86400:g}-day window (max {self.limit})"
        return None


@dataclass(frozen=True)
class QuietHoursRule:
    """No send at a local time in [start, end) (wrapping midnight), in the person's zone, on the
    channels named (all when none are)."""
    start_hour: float
    end_hour: float
    channels: tuple[str, ...] = ()
    timezone: ZoneInfo | None = None  # judge in this zone instead of the person's own
    name: str = "quiet_hours"

    def blocks(self, person, channel, send_at, now):
        if self.channels and channel not in self.channels:
            return None
        local = datetime.fromtimestamp(send_at, self.timezone or person.timezone)
        h = local.hour + local.minute / 60 + local.second / 3600
        quiet = (self.start_hour <= h < self.end_hour if self.start_hour < self.end_hour
                 else h >= self.start_hour or h < self.end_hour)
        return f"send at {local:%H:%M} local, inside quiet hours" if quiet else None


@dataclass(frozen=True)
class MinGapRule:
    """At least `gap` seconds between any two sends of a person."""
    gap: float
    name: str = "min_gap"

    def blocks(self, person, channel, send_at, now):
        if any(abs(at - send_at) < self.gap for _, at in person.sends):
            return f"another send within {self.gap / 3600:g} h"
        return None


@dataclass(frozen=True)
class CooldownRule:
    """No send for `seconds` after the person unsubscribed or complained: on every channel, or
    (same_channel) only on the channel they left."""
    seconds: float
    after: tuple[str, ...] = ("unsubscribe", "complaint")
    same_channel: bool = False
    name: str = "cooldown"

    def blocks(self, person, channel, send_at, now):
        for ch, (kind, at) in person.left.items():
            if self.same_channel and ch != channel:
                continue
            if kind in self.after and at <= now < at + self.seconds:
                return f"{kind} on {ch} less than {self.seconds / 86400:g} days ago"
        return None


def _hours(hhmm: str) -> float:
    h, m = hhmm.split(":")[:2]
    return int(h) + int(m) / 60


KNOWN_GUARDRAIL_KEYS = {"consent", "caps", "min_gap", "quiet_hours", "cooldown"}


def rules_for(policy) -> tuple[list[Rule], list[str]]:
    """The rules a policy declares, and the names of guardrail keys that are not checked here.

    Quiet hours are checked when the policy says "remove" and when it says "move" alike: either
    way no send may fall inside them. They are judged in the person's own (true) time zone, which
    the simulator registers with the service as a campaign tool would (the person's preferences);
    a service that resolved them in another zone (say, the policy's) is caught. Other personal
    preferences (channels, topics, personal caps) are not simulated."""
    g = policy.spec.guardrails
    modes = {ch: g.consent.get(ch, "opt_in") for ch in policy.spec.channels}
    rules: list[Rule] = [ConsentRule(modes)]
    rules += [CapRule(c.channel, c.max, c.window) for c in g.caps]
    if g.min_gap:
        rules.append(MinGapRule(g.min_gap))
    if g.quiet_hours:
        q = g.quiet_hours
        rules.append(QuietHoursRule(_hours(q.start), _hours(q.end), tuple(q.channels or ())))
    if g.cooldown.unsubscribe:
        rules.append(CooldownRule(g.cooldown.unsubscribe, ("unsubscribe",), same_channel=True,
                                  name="cooldown_unsubscribe"))
    if g.cooldown.complaint:
        rules.append(CooldownRule(g.cooldown.complaint, ("complaint",), name="cooldown_complaint"))
    unchecked = sorted(k for k in type(g).model_fields
                       if k not in KNOWN_GUARDRAIL_KEYS and getattr(g, k) not in (None, (), [], {}, False))
    return rules, unchecked


class Checker:
    def __init__(self, rules: Sequence[Rule]):
        self.rules = list(rules)

    def reasons(self, person: PersonRecord, channel: str, send_at: float, now: float) -> list[tuple[str, str]]:
        out = []
        for rule in self.rules:
            why = rule.blocks(person, channel, send_at, now)
            if why:
                out.append((rule.name, why))
        return out

    def allows(self, person: PersonRecord, channel: str, send_at: float, now: float) -> bool:
        return not any(rule.blocks(person, channel, send_at, now) for rule in self.rules)
