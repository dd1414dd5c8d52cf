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
  paused                an operator paused the whole policy: every arm but the hold is removed,
                        with the operator's reason, and no other rule is evaluated
  circuit_breaker       the unsubscribe or complaint rate of the arm's content, of its channel or
                        of the whole policy tripped the policy's circuit breaker (service/learning/
                        breaker.py); the detail gives the rate, its bound, the threshold and since
                        when. A whole policy tripped holds like a pause.
  not_eligible_content  the request named the contents it may use (`contents`), not this one
  not_eligible_channel  the request named the channels it may use (`channels`), not this one

Time is local to the person (their time zone, else the policy's): localtime.py resolves send
slots and quiet hours. Rules depend on few dimensions, so each group is computed once per
channel, per (channel, timing) slot or per content, and the arms combine them (`evaluate`).
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from service.decision.localtime import out_of_quiet, person_tz, resolve_send_at
from service.policy import Cap, Policy
from service.store import PersonState
from service.store.safety import BREAKER, POLICY_TARGET
from service.times import to_rfc3339

__all__ = ["RuleTables", "Verdict", "evaluate", "exceeds_cap", "lookback", "rank_reasons", "signal_lookback"]

Reason = tuple[str, str]  # (code, human detail)
Slot = tuple[str, str]    # (channel, timing name)


@dataclass
class Verdict:
    allowed: list[int]                                   # indices into policy.arms
    removed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # arm -> [(code, detail)]
    send_at: dict[str, float] = field(default_factory=dict)                 # allowed arm -> epoch seconds
    moved: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  # (channel, timing) ->
    # (from, to): send times moved out of quiet hours (`moved_text` renders them)
    timezone: str = "UTC"

    def moved_text(self) -> dict[str, dict]:
        return {f"{ch}:{name}": {"from": to_rfc3339(a), "to": to_rfc3339(b)}
                for (ch, name), (a, b) in self.moved.items()}


@dataclass
class RuleTables:
    """What evaluation needs of a policy's arms and caps, computed once per policy (the engine
    keeps one per policy): the hold arms' indices; per (channel, timing) slot, its arms as
    (index, arm id, content id, valid_from, valid_until, whether suppression still allows it);
    whether any content has a validity window; per channel, the caps that count its contacts
    (window, max, whether every channel counts, the removal reason); and the slots' send times
    already resolved (`resolve_send_at`'s memo); the policy's own quiet-hours rule as
    `out_of_quiet` reads it (none: empty), the set of all its channels, which a person's quiet
    hours cover, and per channel the policy's quiet rules that apply to it."""

    hold: list[int]
    by_slot: dict[Slot, list[tuple]]
    dated: bool
    caps: dict[str, list[tuple[float, int, bool, Reason]]]
    send_times: dict = field(default_factory=dict)
    quiet: tuple = ()
    every_channel: frozenset = frozenset()
    quiet_by_channel: dict[str, tuple] = field(default_factory=dict)

    @classmethod
    def of(cls, policy: Policy) -> "RuleTables":
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
        q = policy.spec.guardrails.quiet_hours
        quiet = ((q.start, q.end, q.action, frozenset(q.channels or policy.spec.channels), "the policy's"),) if q else ()
        return cls(hold, by_slot, dated, _caps(policy, policy.spec.channels), quiet=quiet,
                   every_channel=frozenset(policy.spec.channels),
                   quiet_by_channel={ch: tuple(r for r in quiet if ch in r[3]) for ch in policy.spec.channels})


def _caps(policy: Policy, channels) -> dict[str, list[tuple[float, int, bool, Reason]]]:
    """Per channel, the caps that count its contacts: (window, max, whether every channel counts,
    the removal reason)."""
    return {ch: [(cap.window, cap.max, cap.channel == "*", ("frequency_cap", _cap_detail(cap)))
                 for cap in policy.spec.guardrails.caps if cap.channel in ("*", ch)]
            for ch in channels}


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


# -- evaluation -------------------------------------------------------------------------------

Eligible = tuple[frozenset | None, frozenset | None]  # a request's contents and channels (None: all)


def evaluate(policy: Policy, person: PersonState, now: float, tz: ZoneInfo | None = None,
             rules: RuleTables | None = None, eligible: Eligible = (None, None)) -> Verdict:
    """Every arm of the policy, allowed or removed with its reasons, for this person at `now`.

    Each group of rules is computed once for what it depends on (a channel, a slot, a content)
    and the arms combine them. `rules` are the policy's tables (`RuleTables.of(policy)`), kept
    by a caller that evaluates often: without them the tables are built for this call, and the
    send times it resolves are not remembered for the next. `eligible`: the contents and the
    channels the request restricts this decision to (a hold arm is never removed).
    """
    tz = tz or person_tz(policy, person)
    rules = rules or RuleTables.of(policy)
    tripped = None
    if person.arm_state:
        pause = person.arm_state.get(POLICY_TARGET)
        if pause is not None:
            why = f"the policy is paused by an operator: {pause.get('reason') or 'no reason given'}"
            return _held(policy, ("paused", why), rules, tz)
        tripped = _breakers(policy, person, now)
        if tripped[0] is not None:
            return _held(policy, tripped[0], rules, tz)
    prefs = person.preferences or {}
    send_at, quiet_removed, moved = _send_times(policy, prefs, now, tz, rules)
    channel = _channel_reasons(policy, person, now, eligible[1])
    slots = _slot_reasons(policy, person, prefs, send_at, quiet_removed, rules)
    content = _content_reasons(policy, person, prefs, eligible[0])
    if tripped is not None:
        for ch, reason in tripped[1].items():
            if ch in channel:
                channel[ch] = channel[ch] + [reason]
        for cid, reason in tripped[2].items():
            if cid in content:
                content[cid] = content[cid] + [reason]
    allowed, removed, arm_send_at = _combine(policy, person, send_at, channel, slots, content, rules)
    return Verdict(allowed, removed, arm_send_at, moved, tz.key)


def _held(policy: Policy, reason: Reason, rules: RuleTables, tz: ZoneInfo) -> Verdict:
    """A policy paused or tripped as a whole: only its hold arms are allowed; every other arm
    says why, and no other rule is evaluated."""
    removed = {arm.id: [reason] for arm in policy.arms if not arm.hold}
    return Verdict(sorted(rules.hold), removed, {}, {}, tz.key)


def _breakers(policy: Policy, person: PersonState, now: float
              ) -> tuple[Reason | None, dict[str, Reason], dict[str, Reason]]:
    """The open circuit breakers as removal reasons: the whole policy's, per channel, per content.
    A breaker past its `probe_from` lets a fixed share of people through (half-open): those whose
    key hashes below the policy's `probe_share` for this opening, the same people every time."""
    whole, channels, contents = None, {}, {}
    share = policy.spec.safety.probe_share if policy.spec.safety is not None else 0.0
    for target, st in person.arm_state.items():
        if not target.startswith(BREAKER) or st["status"] != "open":
            continue
        what = target[len(BREAKER):]
        if st["valid_until"] is not None and now >= st["valid_until"] and probing(person.key, what, st["valid_from"],
                                                                                  share):
            continue
        reason = ("circuit_breaker", st["reason"] or f"the circuit breaker of {what} is open")
        kind, _, name = what.partition(":")
        if kind == "policy":
            whole = reason
        elif kind == "channel":
            channels[name] = reason
        elif kind == "content":
            contents[name] = reason
    return whole, channels, contents


def probing(person_key: str, what: str, opened_at: float | None, share: float) -> bool:
    """Whether this person is in the probe share of a half-open breaker's current opening."""
    digest = hashlib.blake2b(f"{person_key}|{what}|{opened_at}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64 < share


def _send_times(policy: Policy, prefs: dict, now: float, tz: ZoneInfo, rules: RuleTables
                ) -> tuple[dict[Slot, float], dict[Slot, Reason], dict[Slot, tuple[float, float]]]:
    """Each slot's send time per channel, moved out of quiet hours where the policy says so (per
    channel: quiet hours may not apply to every channel); the slots removed for quiet hours; the
    moves made."""
    spec = policy.spec
    memo = rules.send_times
    raw = [(t.name, resolve_send_at(t, now, tz, memo)) for t in spec.timing]
    applying = rules.quiet_by_channel  # channel -> the quiet rules that apply to it (the policy's)
    if prefs.get("quiet_hours"):
        q = prefs["quiet_hours"]
        g = spec.guardrails
        own = (q["start"], q["end"], g.quiet_hours.action if g.quiet_hours else "move", rules.every_channel,
               "the person's")
        applying = {ch: applied + (own,) for ch, applied in applying.items()}
    send_at: dict[Slot, float] = {}
    quiet_removed: dict[Slot, Reason] = {}
    moved: dict[Slot, tuple[float, float]] = {}
    # channels under the same quiet rules share their slots' times, computed once
    by_rules: dict[tuple, list[tuple[float, Reason | None]]] = {}
    for ch in spec.channels:
        applied = applying[ch]
        times = by_rules.get(applied)
        if times is None:
            times = by_rules[applied] = [out_of_quiet(t0, tz, applied) if applied else (t0, None) for _, t0 in raw]
        for (name, t0), (t, removal) in zip(raw, times):
            if removal is not None:
                quiet_removed[(ch, name)] = removal
            elif t != t0:
                moved[(ch, name)] = (t0, t)
            send_at[(ch, name)] = t
    return send_at, quiet_removed, moved


def rank_reasons(policy: Policy, person: PersonState, now: float,
                 actions: list[tuple[str, str | None, str | None]]) -> dict[str, list[Reason]]:
    """Rank's guardrails (service/decision/personalizer.py, docs/personalizer.md): for each
    per-request action (id, channel, topic), the rules of `evaluate` that depend on what it
    declares, for a send now. A channel brings the channel's rules (consent, blocked channel,
    cooldowns, caps, the personal cap, the minimum gap), a topic the topic's (blocked by the
    person or the policy); a paused policy removes every action. Send slots, quiet hours, validity
    windows, suppression, the daily budget, the circuit breaker and arm switches need declared
    arms and do not apply."""
    pause = person.arm_state.get(POLICY_TARGET) if person.arm_state else None
    if pause is not None:
        why = f"the policy is paused by an operator: {pause.get('reason') or 'no reason given'}"
        return {aid: [("paused", why)] for aid, _, _ in actions}
    channels = sorted({ch for _, ch, _ in actions if ch})
    by_channel = _channel_reasons(policy, person, now, channels=channels)
    rules = RuleTables([], {}, False, _caps(policy, channels))
    slots = _slot_reasons(policy, person, person.preferences or {}, {(ch, "now"): now for ch in channels}, {}, rules)
    own_topics = set((person.preferences or {}).get("blocked_topics") or ())
    blocked = set(policy.spec.guardrails.blocked_topics) | own_topics
    out: dict[str, list[Reason]] = {}
    for aid, ch, topic in actions:
        reasons = list(by_channel[ch] + slots[(ch, "now")]) if ch else []
        if topic is not None and topic in blocked:
            who = "the person" if topic in own_topics else "the policy"
            reasons.append(("blocked_topic", f"topic {topic!r} is blocked by {who}"))
        out[aid] = reasons
    return out


def _channel_reasons(policy: Policy, person: PersonState, now: float, eligible: frozenset | None = None,
                     channels=None) -> dict[str, list[Reason]]:
    """Per channel: consent, the person's blocked channels, cooldowns, the daily budget, the
    request's eligible channels."""
    g = policy.spec.guardrails
    blocked_channels = set((person.preferences or {}).get("blocked_channels") or ())
    unsub_until: dict[str, float] = {}
    complaint_until = None
    for kind, channel, at in person.signals:
        if kind == "unsubscribe" and channel and g.cooldown.unsubscribe:
            unsub_until[channel] = max(unsub_until.get(channel, 0.0), at + g.cooldown.unsubscribe)
        elif kind == "complaint" and g.cooldown.complaint:
            complaint_until = max(complaint_until or 0.0, at + g.cooldown.complaint)
    budget_spent = g.daily_budget is not None and person.budget_used >= g.daily_budget
    out: dict[str, list[Reason]] = {}
    for ch in policy.spec.channels if channels is None else channels:
        reasons = []
        granted = person.consent.get(ch)
        if granted is False:
            reasons.append(("no_consent", f"{ch}: the person refused this channel"))
        elif granted is None and g.consent.get(ch, "opt_in") == "opt_in":
            reasons.append(("no_consent", f"{ch}: needs an opt-in the person has not given"))
        if ch in blocked_channels:
            reasons.append(("channel_blocked", f"{ch}: blocked in the person's preferences"))
        if now < unsub_until.get(ch, 0.0):
            reasons.append(("cooldown_unsubscribe", f"{ch}: unsubscribed, cooldown until {to_rfc3339(unsub_until[ch])}"))
        if complaint_until is not None and now < complaint_until:
            reasons.append(("cooldown_complaint", f"complained, no contact until {to_rfc3339(complaint_until)}"))
        if budget_spent:
            reasons.append(("daily_budget", f"the policy's {g.daily_budget} sends for today are spent"))
        if eligible is not None and ch not in eligible:
            reasons.append(("not_eligible_channel", f"{ch}: not among the channels the request allows"))
        out[ch] = reasons
    return out


def _slot_reasons(policy: Policy, person: PersonState, prefs: dict, send_at: dict[Slot, float],
                  quiet_removed: dict[Slot, Reason], rules: RuleTables) -> dict[Slot, list[Reason]]:
    """Per (channel, timing) slot, at its send time: quiet hours, caps, the personal cap, the
    minimum gap."""
    g = policy.spec.guardrails
    by_channel: dict[str, list[float]] = {}
    every: list[float] = []
    for ch, at in person.contacts:
        by_channel.setdefault(ch, []).append(at)
        every.append(at)
    for times in by_channel.values():
        times.sort()
    every.sort()
    personal = prefs.get("max_contacts_per_week")
    # per channel, once for its slots: the caps its contacts can reach (`exceeds_cap` is False
    # for the others whatever the slot's time), each with the contacts it counts
    live: dict[str, list] = {}
    for ch in {slot[0] for slot in send_at}:
        live[ch] = [(every if everywhere else by_channel.get(ch, ()), window, limit, reason)
                    for window, limit, everywhere, reason in rules.caps[ch]
                    if limit <= 0 or len(every if everywhere else by_channel.get(ch, ())) >= limit]
    out: dict[Slot, list[Reason]] = {}
    for (ch, name), t in send_at.items():
        reasons = []
        if (ch, name) in quiet_removed:
            reasons.append(quiet_removed[(ch, name)])
        for times, window, limit, reason in live[ch]:
            if exceeds_cap(times, t, window, limit):
                reasons.append(reason)
        if personal is not None and exceeds_cap(every, t, 7 * 86400.0, int(personal)):
            reasons.append(("personal_cap", f"at most {personal} contacts per week, the person's own limit"))
        if g.min_gap and every:
            i = bisect_right(every, t - g.min_gap)   # the first contact after t - gap
            if i < len(every) and every[i] < t + g.min_gap:
                reasons.append(("min_gap", f"another contact at {to_rfc3339(every[i])}, closer than the policy's "
                                           f"minimum gap of {g.min_gap / 3600:g}h"))
        out[(ch, name)] = reasons
    return out


def _content_reasons(policy: Policy, person: PersonState, prefs: dict, eligible: frozenset | None = None
                     ) -> dict[str, list[Reason]]:
    """Per content: blocked topics (the policy's or the person's), its runtime state, the
    request's eligible contents."""
    own_topics = set(prefs.get("blocked_topics") or ())
    blocked_topics = set(policy.spec.guardrails.blocked_topics) | own_topics
    out: dict[str, list[Reason]] = {}
    for c in policy.spec.content:
        reasons = []
        if c.topic in blocked_topics:
            who = "the person" if c.topic in own_topics else "the policy"
            reasons.append(("blocked_topic", f"topic {c.topic!r} is blocked by {who}"))
        st = person.arm_state.get(c.id)
        if st and st["status"] in ("retired", "out_of_stock"):
            reasons.append((st["status"], f"content {c.id!r} is {st['status'].replace('_', ' ')}"))
        if eligible is not None and c.id not in eligible:
            reasons.append(("not_eligible_content", f"content {c.id!r} is not among the contents the request allows"))
        out[c.id] = reasons
    return out


def _combine(policy: Policy, person: PersonState, send_at: dict[Slot, float], channel: dict[str, list[Reason]],
             slots: dict[Slot, list[Reason]], content: dict[str, list[Reason]], rules: RuleTables
             ) -> tuple[list[int], dict[str, list[Reason]], dict[str, float]]:
    """Each arm's reasons: its channel's, its slot's and its content's, then its own (validity
    windows, its runtime state, suppression). A slot's reasons are one list shared by its arms,
    never changed after this point (an arm with reasons of its own gets a new list)."""
    g = policy.spec.guardrails
    suppressed = g.suppression is not None and person.unengaged >= g.suppression.after
    per_arm = bool(person.arm_state) or suppressed or rules.dated
    allowed: list[int] = []
    removed: dict[str, list[Reason]] = {}
    arm_send_at: dict[str, float] = {}
    for slot, arms in rules.by_slot.items():
        base = channel[slot[0]] + slots[slot]
        t = send_at[slot]
        for i, aid, cid, vf, vu, low_pressure in arms:
            reasons = base
            if content[cid]:
                reasons = reasons + content[cid]
            if per_arm:
                own = _own_reasons(person, t, aid, cid, vf, vu, suppressed and not low_pressure)
                if own:
                    reasons = reasons + own
            if reasons:
                removed[aid] = reasons
            else:
                allowed.append(i)
                arm_send_at[aid] = t
    allowed.extend(rules.hold)  # never removed
    allowed.sort()
    return allowed, removed, arm_send_at


def _own_reasons(person: PersonState, t: float, aid: str, cid: str, vf: float | None, vu: float | None,
                 suppressed: bool) -> list[Reason]:
    """An arm's reasons of its own: its content's validity window, the runtime state of the arm
    and of its content, suppression (when it is not a low-pressure arm)."""
    own = []
    if vf is not None and t < vf:
        own.append(("not_yet_valid", f"content {cid!r} is valid from {to_rfc3339(vf)}"))
    if vu is not None and t >= vu:
        own.append(("expired", f"content {cid!r} was valid until {to_rfc3339(vu)}"))
    arm_state = person.arm_state
    if arm_state:
        for target in (cid, aid):
            if (w := _in_window(arm_state.get(target), t)) is not None:
                own.append(w)
        st = arm_state.get(aid)
        if st and st["status"] in ("retired", "out_of_stock"):
            own.append((st["status"], f"arm {aid!r} is {st['status'].replace('_', ' ')}"))
    if suppressed:
        own.append(("suppressed", f"{person.unengaged} contacts in a row without engagement: "
                                  f"only low-pressure arms until the person engages"))
    return own


def _in_window(state: dict | None, t: float) -> tuple[str, str] | None:
    if not state:
        return None
    if state.get("valid_from") is not None and t < state["valid_from"]:
        return ("not_yet_valid", f"valid from {to_rfc3339(state['valid_from'])}")
    if state.get("valid_until") is not None and t >= state["valid_until"]:
        return ("expired", f"valid until {to_rfc3339(state['valid_until'])}")
    return None


def _cap_detail(cap: Cap) -> str:
    scope = "contacts on any channel" if cap.channel == "*" else f"{cap.channel} contacts"
    return f"at most {cap.max} {scope} per {cap.label.split(':')[1]}"
