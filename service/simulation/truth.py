"""The truth about how a scenario's population responds to a policy's arms.

For one send of arm a (content c with topic k, channel ch, timing slot s) to a person of
segment g, delivered at local hour h, with contact pressure P:

    preference   r   = topics[k] + content[c] + channels[ch] + timings[s] + matching interactions
    click logit  z   = base + r + hours(h) - fatigue.engagement * P
    P(click)         = sigmoid(z)
    P(open)          = sigmoid(z + response.open_lift)           (a click implies an open)
    P(convert)       = P(click) * convert[k]
    P(unsubscribe)   = sigmoid(u.base + u.pressure * P + u.irrelevance * max(0, -r) + incidents.unsubscribe[c])
    P(complaint)     = same shape with its own coefficients, on the channels it names;
                       a complaint also unsubscribes the person from the channel
    P = sum over the person's earlier sends of 0.5 ** (age / fatigue.half_life)

Drift replaces some of a segment's parameters from a given time on; an incident shifts one
content's hazards (for every segment) from a given time on. `sample_outcomes` draws
what one person does after one send (and when) from these probabilities and the ask's uniform
draws. Nothing here imports Flask or the store: the same truth drives the simulator, the oracle
and notebooks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from service.simulation.scenario import Hazard, Preferences, Response, Scenario

OUTCOME_TYPES = ("open", "click", "convert", "unsubscribe", "complaint")


@dataclass(frozen=True)
class ArmInfo:
    """What the truth needs to know of an arm (plain values, no policy objects)."""
    id: str
    content: str | None = None
    topic: str | None = None
    channel: str | None = None
    timing: str | None = None

    @property
    def hold(self) -> bool:
        return self.content is None


@dataclass(frozen=True)
class TimingInfo:
    name: str
    delay_minutes: float | None = None
    at: str | None = None  # "HH:MM" local


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hour_table(points: Mapping[str, float]) -> np.ndarray:
    """24 hourly values, linear between the given hours, wrapping around midnight."""
    if not points:
        return np.zeros(24)
    hs = [(int(h), v) for h, v in points.items()]
    table = np.zeros(24)
    for h in range(24):
        before = min(hs, key=lambda p: (h - p[0]) % 24)
        after = min(hs, key=lambda p: (p[0] - h) % 24)
        b_dist, a_dist = (h - before[0]) % 24, (after[0] - h) % 24
        table[h] = before[1] if b_dist == 0 else (before[1] * a_dist + after[1] * b_dist) / (b_dist + a_dist)
    return table


@dataclass
class SegmentTruth:
    """One segment's preferences over the non-hold arms, precomputed as arrays."""
    logit: np.ndarray        # base + preference, per arm (hold: unused)
    irrelevance: np.ndarray  # max(0, -preference)
    convert: np.ndarray      # P(convert | click)
    hours: np.ndarray        # 24 local-hour effects


class Truth:
    """The true response of the scenario's population to a policy's arms."""

    def __init__(self, scenario: Scenario, arms: Sequence[ArmInfo], timings: Sequence[TimingInfo],
                 weights: Mapping[str, float], default: float, fatigue_per_contact: float):
        self.scenario = scenario
        spec = scenario.spec
        self.spec = spec
        self.arms = list(arms)
        self.timings = list(timings)
        self.timing_index = {t.name: i for i, t in enumerate(self.timings)}
        self.weights = {t: float(weights.get(t, 0.0)) for t in OUTCOME_TYPES}
        self.default = float(default)
        self.fatigue_per_contact = float(fatigue_per_contact)
        self.segment_index = {s.name: i for i, s in enumerate(spec.segments)}
        self._validate_names()
        self.is_hold = np.array([a.hold for a in self.arms])
        self.arm_timing = np.array([self.timing_index[a.timing] if not a.hold else 0 for a in self.arms])

        def hazard_mask(h: Hazard) -> np.ndarray:
            return np.array([(not a.hold) and (h.channels is None or a.channel in h.channels) for a in self.arms],
                            dtype=float)
        self.unsub_mask = hazard_mask(spec.unsubscribe)
        self.complaint_mask = hazard_mask(spec.complaint)
        # epochs: (start offset in seconds, [SegmentTruth per segment])
        base = [self._segment_truth(s) for s in spec.segments]
        self.epochs: list[tuple[float, list[SegmentTruth]]] = [(0.0, base)]
        current = {s.name: s for s in spec.segments}
        for d in sorted(spec.drift, key=lambda d: d.at):
            changes = {k: v for k, v in d.model_dump(exclude={"segment", "at"}).items() if v is not None}
            seg = current[d.segment]
            changed = Preferences.model_validate(
                seg.model_dump(include=set(Preferences.model_fields)) | changes)
            current[d.segment] = seg.model_copy(update=dict(changed))
            prev = list(self.epochs[-1][1])
            prev[self.segment_index[d.segment]] = self._segment_truth(current[d.segment])
            self.epochs.append((d.at, prev))
        self.start = spec.start.timestamp()
        # incidents: (start offset in seconds, unsubscribe logit shift per arm, complaint logit shift per arm)
        self.incidents = [(inc.at, np.array([inc.unsubscribe if a.content == inc.content else 0.0 for a in self.arms]),
                           np.array([inc.complaint if a.content == inc.content else 0.0 for a in self.arms]))
                          for inc in spec.incidents]
        self._no_shift = np.zeros(len(self.arms))

    # names in the scenario must be names of the policy ------------------------------------

    def _validate_names(self) -> None:
        contents = {a.content for a in self.arms if not a.hold}
        topics = {a.topic for a in self.arms if not a.hold}
        channels = {a.channel for a in self.arms if not a.hold}
        timings = set(self.timing_index)
        sc = self.scenario

        def check(key: str, names, known: set, what: str):
            for name in names or ():
                if name != "*" and name not in known:
                    raise sc.error(f"{key}.{name}" if not key.endswith("]") else key,
                                   f"unknown {what} {name!r} (the policy has: {', '.join(sorted(known))})")

        for ch in self.scenario.spec.consent:
            check("consent", [ch], channels, "channel")
        for hz in ("unsubscribe", "complaint"):
            check(f"{hz}.channels", getattr(sc.spec, hz).channels, channels, "channel")
        for i, inc in enumerate(sc.spec.incidents):
            if inc.content not in contents:
                raise sc.error(f"incidents[{i}].content", f"unknown content {inc.content!r} "
                                                          f"(the policy has: {', '.join(sorted(contents))})")
        prefs = [(f"segments[{i}]", s) for i, s in enumerate(sc.spec.segments)]
        prefs += [(f"drift[{i}]", d) for i, d in enumerate(sc.spec.drift)]
        for key, p in prefs:
            check(f"{key}.topics", p.topics, topics, "topic")
            check(f"{key}.content", p.content, contents, "content")
            check(f"{key}.channels", p.channels, channels, "channel")
            check(f"{key}.timings", p.timings, timings, "timing")
            check(f"{key}.convert", p.convert, topics, "topic")
            for j, it in enumerate(p.interactions or ()):
                k = f"{key}.interactions[{j}]"
                check(f"{k}.content", [it.content] if it.content else [], contents, "content")
                check(f"{k}.topic", [it.topic] if it.topic else [], topics, "topic")
                check(f"{k}.channel", [it.channel] if it.channel else [], channels, "channel")
                check(f"{k}.timing", [it.timing] if it.timing else [], timings, "timing")

    def _segment_truth(self, p: Preferences) -> SegmentTruth:
        n = len(self.arms)
        pref = np.zeros(n)
        conv = np.zeros(n)
        default_conv = p.convert.get("*", 0.1)
        for i, a in enumerate(self.arms):
            if a.hold:
                continue
            r = (p.topics.get(a.topic, 0.0) + p.content.get(a.content, 0.0) + p.channels.get(a.channel, 0.0)
                 + p.timings.get(a.timing, 0.0))
            for it in p.interactions:
                if ((it.content is None or it.content == a.content) and (it.topic is None or it.topic == a.topic)
                        and (it.channel is None or it.channel == a.channel)
                        and (it.timing is None or it.timing == a.timing)):
                    r += it.effect
            pref[i] = r
            conv[i] = p.convert.get(a.topic, default_conv)
        hours = _hour_table(p.hours if p.hours is not None else self.spec.response.hours)
        return SegmentTruth(p.base + pref, np.maximum(0.0, -pref), conv, hours)

    def segment_truth(self, segment: int, t: float) -> SegmentTruth:
        offset = t - self.start
        current = self.epochs[0][1]
        for at, segs in self.epochs:
            if offset >= at:
                current = segs
        return current[segment]

    def hazard_shifts(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The incidents' logit shifts of the unsubscribe and complaint hazards per arm, at `t`."""
        offset = t - self.start
        unsub, complaint = self._no_shift, self._no_shift
        for at, u, c in self.incidents:
            if offset >= at:
                unsub, complaint = unsub + u, complaint + c
        return unsub, complaint

    # probabilities and the expected shaped reward -----------------------------------------

    def probabilities(self, segment: int, t: float, arms: np.ndarray, local_hour: np.ndarray,
                      pressure: np.ndarray) -> dict[str, np.ndarray]:
        """P(open, click, convert, unsubscribe, complaint) of sending each of `arms` (no hold),
        each delivered at `local_hour[i]` with contact pressure `pressure[i]`, decided at `t`."""
        st = self.segment_truth(segment, t)
        spec = self.spec
        z = st.logit[arms] + st.hours[local_hour] - spec.fatigue.engagement * pressure
        click = sigmoid(z)
        opened = sigmoid(z + spec.response.open_lift)
        convert = click * st.convert[arms]
        u, c = spec.unsubscribe, spec.complaint
        irr = st.irrelevance[arms]
        u_shift, c_shift = self.hazard_shifts(t)
        unsub = sigmoid(u.base + u.pressure * pressure + u.irrelevance * irr + u_shift[arms]) * self.unsub_mask[arms]
        complaint = (sigmoid(c.base + c.pressure * pressure + c.irrelevance * irr + c_shift[arms])
                     * self.complaint_mask[arms])
        return {"open": opened, "click": click, "convert": convert, "unsubscribe": unsub, "complaint": complaint}

    def expected_reward(self, probs: Mapping[str, np.ndarray], fatigue_contacts: int) -> np.ndarray:
        """The expected shaped reward of sends with these outcome probabilities (clipping ignored).
        A complaint also unsubscribes, so P(unsubscribe outcome) = 1 - (1-u)(1-c)."""
        w = self.weights
        leave = 1.0 - (1.0 - probs["unsubscribe"]) * (1.0 - probs["complaint"])
        nothing = (1.0 - probs["open"]) * (1.0 - leave)
        return (w["open"] * probs["open"] + w["click"] * probs["click"] + w["convert"] * probs["convert"]
                + w["unsubscribe"] * leave + w["complaint"] * probs["complaint"] + self.default * nothing
                - self.fatigue_per_contact * fatigue_contacts)


def pressure(sends: list[tuple[str, float]], at: float, half_life: float) -> float:
    """Contact pressure at `at`: every earlier send, decaying with the half-life."""
    return sum(0.5 ** ((at - s) / half_life) for _, s in sends if s < at)


def sample_outcomes(p: dict[str, float], u: np.ndarray, send_at: float, resp: Response) -> list[tuple[str, float]]:
    """Sample what one person does after one send, with this ask's uniform draws `u`.
    Returns [(outcome type, time)], in the order they happen."""
    got = []
    if u[0] < p["open"]:
        opened = send_at - resp.open_delay * math.log(1 - u[5])
        got.append(("open", opened))
        if u[1] < p["click"] / p["open"]:
            clicked = opened - resp.click_delay * math.log(1 - u[6])
            got.append(("click", clicked))
            if p["click"] > 0 and u[2] < p["convert"] / p["click"]:
                got.append(("convert", clicked - resp.convert_delay * math.log(1 - u[7])))
    complaint = u[4] < p["complaint"]
    if complaint or u[3] < p["unsubscribe"]:
        at = send_at - resp.unsubscribe_delay * math.log(1 - u[8])
        if complaint:
            got.append(("complaint", at))
        got.append(("unsubscribe", at))  # a complaint unsubscribes too
    return sorted(got, key=lambda x: x[1])
