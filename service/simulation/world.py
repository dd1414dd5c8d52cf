"""Simulation scenarios: a synthetic population and the truth about how it responds.

A scenario is a TOML file (format in docs/simulation.md) parsed once into frozen pydantic
models; every validation error names the file, the key and the reason, like policy errors.

The truth, for one send of arm a (content c with topic k, channel ch, timing slot s) to a person
of segment g, delivered at local hour h, with contact pressure P:

    preference   r   = topics[k] + content[c] + channels[ch] + timings[s] + matching interactions
    click logit  z   = base + r + hours(h) - fatigue.engagement * P
    P(click)         = sigmoid(z)
    P(open)          = sigmoid(z + response.open_lift)           (a click implies an open)
    P(convert)       = P(click) * convert[k]
    P(unsubscribe)   = sigmoid(u.base + u.pressure * P + u.irrelevance * max(0, -r))
    P(complaint)     = same shape with its own coefficients, on the channels it names;
                       a complaint also unsubscribes the person from the channel
    P = sum over the person's earlier sends of 0.5 ** (age / fatigue.half_life)

Drift replaces some of a segment's parameters from a given time on. Nothing here imports Flask
or the store: the same truth drives the simulator, the oracle and notebooks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.specfile import KeyedError, SpecError, parse_duration, read_toml, validate
from service.times import iana_zone

NAME_RE = r"^[a-z0-9][a-z0-9_\-]*$"
OUTCOME_TYPES = ("open", "click", "convert", "unsubscribe", "complaint")


class ScenarioError(SpecError):
    """A scenario file that cannot be used: names the file, the key and the reason."""


def _duration(value: object) -> float:
    return parse_duration(value, allow_zero=True, examples="'12h', '14d'")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _hours_ok(v: dict[str, float] | None) -> dict[str, float] | None:
    for k in v or {}:
        if not (k.isdigit() and 0 <= int(k) <= 23):
            raise ValueError(f"hour {k!r} must be a whole local hour from '0' to '23'")
    return v


class Region(_Frozen):
    timezone: str
    country: str | None = None
    share: float = Field(gt=0, le=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return iana_zone(v)


class Interaction(_Frozen):
    """Adds `effect` to the click logit of every arm matching all the dimensions it names."""
    content: str | None = None
    topic: str | None = None
    channel: str | None = None
    timing: str | None = None
    effect: float

    @model_validator(mode="after")
    def _names_something(self) -> "Interaction":
        if not any((self.content, self.topic, self.channel, self.timing)):
            raise ValueError("an interaction names at least one of content, topic, channel, timing")
        return self


class Preferences(_Frozen):
    """What a segment likes; every field may be replaced by a drift."""
    base: float = -3.0
    topics: dict[str, float] = {}
    content: dict[str, float] = {}
    channels: dict[str, float] = {}
    timings: dict[str, float] = {}
    hours: dict[str, float] | None = None
    interactions: tuple[Interaction, ...] = ()
    convert: dict[str, float] = {}

    _hours = field_validator("hours")(lambda cls, v: _hours_ok(v))

    @field_validator("convert")
    @classmethod
    def _probabilities(cls, v: dict[str, float]) -> dict[str, float]:
        for k, p in v.items():
            if not 0 <= p <= 1:
                raise ValueError(f"convert.{k}: {p} is not a probability in [0, 1]")
        return v


class Segment(Preferences):
    name: str = Field(pattern=NAME_RE)
    share: float = Field(gt=0, le=1)
    regions: tuple[Region, ...] = Field(min_length=1)
    tenure_days: tuple[float, float] = (0.0, 1000.0)

    @model_validator(mode="after")
    def _shares(self) -> "Segment":
        total = sum(r.share for r in self.regions)
        if abs(total - 1) > 1e-6:
            raise KeyedError("regions", f"region shares add up to {total:g}, not 1")
        if not 0 <= self.tenure_days[0] <= self.tenure_days[1]:
            raise KeyedError("tenure_days", "must be [low, high] with 0 <= low <= high")
        return self


class Drift(_Frozen):
    """From `at` (after the start) on, `segment` has these preferences instead."""
    segment: str
    at: float
    base: float | None = None
    topics: dict[str, float] | None = None
    content: dict[str, float] | None = None
    channels: dict[str, float] | None = None
    timings: dict[str, float] | None = None
    hours: dict[str, float] | None = None
    interactions: tuple[Interaction, ...] | None = None
    convert: dict[str, float] | None = None

    _at = field_validator("at", mode="before")(lambda cls, v: _duration(v))
    _hours = field_validator("hours")(lambda cls, v: _hours_ok(v))


class Hazard(_Frozen):
    base: float = -7.0
    pressure: float = Field(default=0.0, ge=0)
    irrelevance: float = Field(default=0.0, ge=0)
    channels: tuple[str, ...] | None = None  # None: every channel


class Fatigue(_Frozen):
    half_life: float = 3 * 86400.0
    engagement: float = Field(default=0.0, ge=0)

    _hl = field_validator("half_life", mode="before")(lambda cls, v: _duration(v))


class Response(_Frozen):
    open_lift: float = Field(default=1.5, ge=0)
    hours: dict[str, float] = {}
    open_delay: float = 5400.0
    click_delay: float = 600.0
    convert_delay: float = 7200.0
    unsubscribe_delay: float = 14400.0

    _hours = field_validator("hours")(lambda cls, v: _hours_ok(v))
    _delays = field_validator("open_delay", "click_delay", "convert_delay", "unsubscribe_delay",
                              mode="before")(lambda cls, v: _duration(v))


class ScenarioSpec(_Frozen):
    name: str = Field(pattern=NAME_RE)
    description: str = ""
    policy: str = "../policies/lifecycle.toml"
    start: datetime = datetime(2026, 3, 2, tzinfo=timezone.utc)
    days: float = Field(default=28.0, gt=0)
    warmup_days: int = Field(default=0, ge=0)
    people: int = Field(default=10000, ge=1)
    decisions: int = Field(default=200000, ge=1)
    seed: int = 0
    learn_every: float = 7200.0
    ask_hours: tuple[float, float] = (8.0, 22.0)
    consent: dict[str, float] = {}
    response: Response = Response()
    fatigue: Fatigue = Fatigue()
    unsubscribe: Hazard = Hazard()
    complaint: Hazard = Hazard(base=-9.0)
    segments: tuple[Segment, ...] = Field(min_length=1)
    drift: tuple[Drift, ...] = ()

    _le = field_validator("learn_every", mode="before")(lambda cls, v: _duration(v))

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-03-02T00:00:00Z")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "ScenarioSpec":
        if not 0 <= self.ask_hours[0] < self.ask_hours[1] <= 24:
            raise KeyedError("ask_hours", "must be [from, to] local hours with 0 <= from < to <= 24")
        for ch, share in self.consent.items():
            if not 0 <= share <= 1:
                raise KeyedError(f"consent.{ch}", f"{share} is not a share in [0, 1]")
        total = sum(s.share for s in self.segments)
        if abs(total - 1) > 1e-6:
            raise KeyedError("segments", f"segment shares add up to {total:g}, not 1")
        names = [s.name for s in self.segments]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise KeyedError(f"segments[{i}].name", f"segment {n!r} is declared twice")
        for i, d in enumerate(self.drift):
            if d.segment not in names:
                raise KeyedError(f"drift[{i}].segment", f"unknown segment {d.segment!r} (segments: {', '.join(names)})")
            if d.at >= self.days * 86400:
                raise KeyedError(f"drift[{i}].at", f"the drift happens after the run ends ({self.days:g} days)")
        return self


@dataclass(frozen=True)
class Scenario:
    spec: ScenarioSpec
    path: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def policy_path(self) -> Path:
        """The scenario's policy file, relative to the scenario file."""
        p = Path(self.spec.policy)
        return p if p.is_absolute() else Path(self.path).parent / p

    def error(self, key: str, reason: str) -> ScenarioError:
        return ScenarioError(self.path, key, reason)


def parse_scenario(data: dict, path: str = "<memory>", default_name: str | None = None) -> Scenario:
    return Scenario(validate(ScenarioSpec, data, path, ScenarioError, "docs/simulation.md", default_name), path)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    return parse_scenario(read_toml(path, ScenarioError), str(path), default_name=path.stem.replace(".", "-"))


# -- the truth, bound to a policy's arms -----------------------------------------------------

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
        unsub = sigmoid(u.base + u.pressure * pressure + u.irrelevance * irr) * self.unsub_mask[arms]
        complaint = sigmoid(c.base + c.pressure * pressure + c.irrelevance * irr) * self.complaint_mask[arms]
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


# -- the population and when its people are asked about ------------------------------------

@dataclass
class Population:
    segment: np.ndarray          # segment index per person
    timezone: list[str]          # IANA zone per person
    country: list[str | None]
    tenure_days: np.ndarray
    consent: list[dict[str, bool]]


def make_population(scenario: Scenario, people: int, channels: Sequence[str], rng: np.random.Generator) -> Population:
    spec = scenario.spec
    shares = np.array([s.share for s in spec.segments])
    seg = rng.choice(len(shares), size=people, p=shares / shares.sum())
    tzs, countries, tenure, consent = [], [], np.zeros(people), []
    for i in range(people):
        s = spec.segments[seg[i]]
        r = s.regions[rng.choice(len(s.regions), p=np.array([x.share for x in s.regions]) / sum(x.share for x in s.regions))]
        tzs.append(r.timezone)
        countries.append(r.country)
        tenure[i] = round(float(rng.uniform(*s.tenure_days)))
        consent.append({ch: bool(rng.random() < spec.consent.get(ch, 1.0)) for ch in channels})
    return Population(seg, tzs, countries, tenure, consent)


def make_asks(scenario: Scenario, population: Population, decisions: int, rng: np.random.Generator,
              warmup: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`decisions` moments at which a person is asked about: (epoch seconds, person), sorted by
    time. People are picked uniformly; each ask falls on a uniform day of the run (of the warm-up
    before it, with `warmup`), at a uniform local time between the scenario's ask_hours in the
    person's own time zone."""
    spec = scenario.spec
    people = len(population.segment)
    person = rng.integers(people, size=decisions)
    if warmup:
        day = rng.integers(spec.warmup_days, size=decisions) - spec.warmup_days
    else:
        day = rng.integers(int(math.ceil(spec.days)), size=decisions)
    lo, hi = spec.ask_hours
    seconds = rng.uniform(lo * 3600, hi * 3600, size=decisions)
    start_day = spec.start.astimezone(timezone.utc).date()
    zones = {z: ZoneInfo(z) for z in set(population.timezone)}
    t = np.empty(decisions)
    for i in range(decisions):
        tz = zones[population.timezone[person[i]]]
        local = datetime.combine(start_day + timedelta(days=int(day[i])), datetime.min.time(), tzinfo=tz)
        t[i] = local.timestamp() + seconds[i]
    t = np.minimum(t, spec.start.timestamp() - 1.0) if warmup else np.maximum(t, spec.start.timestamp())
    order = np.argsort(t, kind="stable")
    return t[order], person[order]
