"""Scenario files: the synthetic population a simulation runs against, and the truth about how
it responds, as declared in TOML (format in docs/simulation.md).

A scenario file is parsed once into frozen pydantic models; every validation error names the
file, the key and the reason, like policy errors. Names in it that must be the policy's (topics,
contents, channels, timings) are checked when the truth is bound to a policy (truth.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.specfile import KeyedError, SpecError, parse_duration, read_toml, validate
from service.times import iana_zone

NAME_RE = r"^[a-z0-9][a-z0-9_\-]*$"


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


class Incident(_Frozen):
    """From `at` (after the start) on, sends of `content` offend: `unsubscribe` and `complaint`
    are added to the logits of that content's unsubscribe and complaint hazards (truth.py)."""
    content: str
    at: float
    unsubscribe: float = 0.0
    complaint: float = 0.0

    _at = field_validator("at", mode="before")(lambda cls, v: _duration(v))

    @model_validator(mode="after")
    def _changes_something(self) -> "Incident":
        if self.unsubscribe == 0 and self.complaint == 0:
            raise ValueError("an incident shifts the unsubscribe or the complaint hazard (a logit shift, e.g. 3.0)")
        return self


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
    incidents: tuple[Incident, ...] = ()

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
        for i, inc in enumerate(self.incidents):
            if inc.at >= self.days * 86400:
                raise KeyedError(f"incidents[{i}].at", f"the incident happens after the run ends ({self.days:g} days)")
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
