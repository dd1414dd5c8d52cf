"""The policy file format: every table and key of a policy TOML file, as frozen pydantic models.

A policy file is parsed once into frozen pydantic models. Every validation error names the file,
the key (dotted, with list indices) and the reason, so a typo is found without reading code.
The format is documented in docs/policies.md.
"""
from __future__ import annotations

import re
from datetime import datetime
from datetime import time as dtime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.policy.waits import DAY, slot_waits
from service.specfile import KeyedError, SpecError, parse_duration
from service.times import iana_zone

NAME_RE = r"^[a-z0-9][a-z0-9_\-]*$"
HOLD_ARM = "hold"


class PolicyError(SpecError):
    """A policy file that cannot be used: names the file, the key and the reason."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _local_time(v: str | None) -> str | None:
    if v is not None:
        try:
            dtime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a local time such as '19:00'") from None
    return v


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("give a date-time with its offset, such as 2026-05-01T00:00:00Z")
    return v


class Content(_Frozen):
    id: str = Field(pattern=NAME_RE)
    topic: str = Field(min_length=1)
    tags: tuple[str, ...] = ()
    features: dict[str, float] = {}
    # the content may be sent (its send_at) from valid_from, until (not at) valid_until
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    _tz_aware = field_validator("valid_from", "valid_until")(lambda cls, v: _aware(v))

    @model_validator(mode="after")
    def _window(self) -> "Content":
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class Timing(_Frozen):
    """A send slot. `delay_minutes` sends after a fixed delay; `at` ("HH:MM") sends at the next
    occurrence of that local time in the person's time zone."""

    name: str = Field(pattern=NAME_RE)
    delay_minutes: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    at: str | None = None

    _valid_at = field_validator("at")(lambda cls, v: _local_time(v))

    @model_validator(mode="after")
    def _one_kind(self) -> "Timing":
        if (self.delay_minutes is None) == (self.at is None):
            raise ValueError("a timing slot has exactly one of delay_minutes or at")
        return self

    @property
    def local_time(self) -> dtime | None:
        return dtime.fromisoformat(self.at) if self.at else None


class ArmRule(_Frozen):
    """Forbids every combination that matches all the dimensions it names."""

    content: str | None = None
    channel: str | None = None
    timing: str | None = None

    def matches(self, content: str, channel: str, timing: str) -> bool:
        return (
            (self.content is None or self.content == content)
            and (self.channel is None or self.channel == channel)
            and (self.timing is None or self.timing == timing)
        )


class Arms(_Frozen):
    hold: bool = True
    exclude: tuple[ArmRule, ...] = ()


class FeatureSpec(_Frozen):
    type: Literal["string", "number", "boolean"]
    required: bool = False
    min: float | None = None
    max: float | None = None
    description: str = ""


class Cap(_Frozen):
    """At most `max` contacts on `channel` ("*" = every channel) in any window of `window`."""

    channel: str = "*"
    max: int = Field(ge=0)
    window: float

    _window = field_validator("window", mode="before")(lambda cls, v: parse_duration(v))

    @property
    def label(self) -> str:
        return f"{'any' if self.channel == '*' else self.channel}:{format_duration(self.window)}"


class QuietHours(_Frozen):
    """No send in [start, end) local time (wrapping midnight when end <= start), in the person's
    time zone. A timing slot whose send_at falls inside is moved to the end of the quiet period
    ("move") or its arms are removed ("remove")."""

    start: str
    end: str
    action: Literal["move", "remove"] = "move"
    channels: tuple[str, ...] | None = None      # the channels they apply to; none named = every one

    _times = field_validator("start", "end")(lambda cls, v: _local_time(v))

    @model_validator(mode="after")
    def _not_empty(self) -> "QuietHours":
        if self.start == self.end:
            raise ValueError("start and end are equal: quiet hours would be empty")
        return self


class Cooldown(_Frozen):
    """Days without contact after an explicit negative signal."""

    unsubscribe: float | None = 30 * 86400.0    # on the channel the person unsubscribed from
    complaint: float | None = 90 * 86400.0      # on every channel

    _d = field_validator("unsubscribe", "complaint", mode="before")(
        lambda cls, v: None if v in (None, 0, "0", "off") else parse_duration(v))


class Suppression(_Frozen):
    """After `after` consecutive contacts without engagement only hold and the `allow` arms remain,
    until the person engages again. Engagement is any outcome of the `engagement` types (by
    default every type with a positive reward weight)."""

    after: int = Field(ge=1)
    allow: tuple[ArmRule, ...] = ()
    engagement: tuple[str, ...] | None = None


class Guardrails(_Frozen):
    # "opt_in": the channel needs an explicit grant; "opt_out": allowed unless refused.
    # A channel not listed needs an opt-in.
    consent: dict[str, Literal["opt_in", "opt_out"]] = {}
    caps: tuple[Cap, ...] = ()
    min_gap: float | None = None
    quiet_hours: QuietHours | None = None
    cooldown: Cooldown = Cooldown()
    suppression: Suppression | None = None
    blocked_topics: tuple[str, ...] = ()
    daily_budget: int | None = Field(default=None, ge=0)

    _gap = field_validator("min_gap", mode="before")(lambda cls, v: None if v is None else parse_duration(v))


class Privacy(_Frozen):
    # a context feature the policy does not declare: refuse the request, or drop it and report it
    undeclared: Literal["refuse", "drop"] = "refuse"
    # features that are always refused, whatever `undeclared` says (health, religion, ...)
    sensitive: tuple[str, ...] = ()


class Consistency(_Frozen):
    # decisions sharing a consistency_key within `ttl` keep the same content
    ttl: float = 3 * 86400.0

    _ttl = field_validator("ttl", mode="before")(lambda cls, v: parse_duration(v))


class Fatigue(_Frozen):
    per_contact: float = Field(default=0.0, ge=0)
    window: float = 7 * 86400.0

    _window = field_validator("window", mode="before")(lambda cls, v: parse_duration(v))


class Reward(_Frozen):
    window: float = 86400.0
    default: float = 0.0
    weights: dict[str, float]
    fatigue: Fatigue = Fatigue()
    # Shaped rewards are clipped to [min, max] and mapped to VW costs in [0, 1].
    min: float | None = None
    max: float | None = None

    _window = field_validator("window", mode="before")(lambda cls, v: parse_duration(v))

    @field_validator("weights")
    @classmethod
    def _names(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("name at least one outcome type and its weight")
        for name in v:
            if not re.match(NAME_RE, name):
                raise ValueError(f"{name!r} is not a valid outcome type name")
        return v

    @model_validator(mode="after")
    def _range(self) -> "Reward":
        lo, hi = self.bounds
        if not lo < hi:
            raise ValueError(f"reward range is empty: min {lo} must be below max {hi}")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        positive = sum(w for w in self.weights.values() if w > 0)
        worst = min([0.0, *self.weights.values()])
        lo = self.min if self.min is not None else min(worst, self.default) - self.fatigue.per_contact * 10
        hi = self.max if self.max is not None else max(positive, self.default, lo + 1.0)
        return float(lo), float(hi)


class Learner(_Frozen):
    vw_args: str = "--squarecb --gamma_scale 300 --epsilon 0.01 -q UA -q HR --ignore_linear R --ignore I --clip_p 0.5 -l 0.1 -b 22"
    holdout_share: float = Field(default=0.0, ge=0, lt=1)
    holdout_policy: Literal["uniform", "fallback"] = "uniform"
    fallback_arm: str = HOLD_ARM
    # at most one new version per this many seconds: real time, or the requests' under --clock request
    learn_every_seconds: float = Field(default=300.0, gt=0)
    seed: int = 0

    @field_validator("vw_args")
    @classmethod
    def _no_io(cls, v: str) -> str:
        banned = {"-d", "--data", "-i", "--initial_regressor", "-f", "--final_regressor",
                  "--cb_explore_adf", "--cb_adf"}
        clash = sorted(banned & set(v.split()))
        if clash:
            raise ValueError(f"{', '.join(clash)} is set by Tactful itself; leave it out of vw_args")
        return v


class Guard(_Frozen):
    """The automatic revert guard: watches a newly activated version's first `decisions` decisions
    and reverts to the version that served before if a rate passes its threshold."""

    decisions: int = Field(default=1000, ge=1)
    min_decisions: int = Field(default=100, ge=1)
    max_unsubscribe_rate: float = Field(default=0.02, ge=0, le=1)
    max_complaint_rate: float = Field(default=0.005, ge=0, le=1)


class Promotion(_Frozen):
    """What a candidate model version must show before `tactful models promote` activates it."""

    min_decisions: int = Field(default=1000, ge=0)
    min_lift_lower_bound: float = 0.0
    max_unsubscribe_rise: float = Field(default=0.002, ge=0)
    guard: Guard = Guard()


class Safety(_Frozen):
    """The circuit breaker (docs/guardrails.md): over the last `window` of sends, the unsubscribe
    and complaint rates per content, per channel and for the whole policy. A rate trips its
    breaker only on a strong signal: at least `min_sends` sends, and the rate's one-sided lower
    confidence bound (Clopper-Pearson, at `confidence`, shared by the `spans` trailing spans
    judged: the window, its latest half, quarter, ...) above its threshold. A tripped content or channel
    loses its arms in every decision (reason `circuit_breaker`); a tripped policy holds every
    decision. It stays open until an operator resets it, or, with `probe_after`, probes again
    after that cool-off with `probe_share` of people, and closes once `min_sends` probe sends
    show the rate's upper bound under the threshold (it opens again if their lower bound is over)."""

    window: float = 7 * 86400.0
    # the window and its latest half, quarter, ...: `spans` trailing spans judged each, so that a
    # content that turns bad mid-window trips on its recent sends instead of waiting for the bad
    # ones to outnumber the window's good ones (each span at 1 - (1 - confidence) / spans)
    spans: int = Field(default=4, ge=1, le=8)
    min_sends: int = Field(default=200, ge=1)
    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    max_unsubscribe_rate: float = Field(default=0.02, gt=0, le=1)
    max_complaint_rate: float = Field(default=0.005, gt=0, le=1)
    levels: tuple[Literal["content", "channel", "policy"], ...] = ("content", "channel", "policy")
    check_every: float = 60.0
    probe_after: float | None = None
    probe_share: float = Field(default=0.1, gt=0, le=1)
    # the contents report (service/offline/contents.py), written by the learner every
    # `review_every` over the last `review_window` of final decisions; with `auto_retire`, a
    # content it marks as surely worse than the best and than holding is retired
    review_every: float | None = None
    review_window: float = 28 * 86400.0
    auto_retire: bool = False

    _durations = field_validator("window", "check_every", "review_window", mode="before")(
        lambda cls, v: parse_duration(v))

    @model_validator(mode="after")
    def _retire_needs_review(self) -> "Safety":
        if self.auto_retire and self.review_every is None:
            raise ValueError("auto_retire needs review_every: how often the learner reviews the contents")
        return self

    @field_validator("probe_after", "review_every", mode="before")
    @classmethod
    def _optional_duration(cls, v):
        return None if v is None else parse_duration(v)


class PolicySpec(_Frozen):
    name: str = Field(pattern=NAME_RE)
    # "catalog": arms from the declared contents, channels and timings; "personalizer": the
    # actions arrive with each Rank request (service/decision/personalizer.py, docs/personalizer.md)
    kind: Literal["catalog", "personalizer"] = "catalog"
    description: str = ""
    timezone: str = "UTC"
    channels: tuple[str, ...] = ()
    content: tuple[Content, ...] = ()
    timing: tuple[Timing, ...] = ()
    arms: Arms = Arms()
    features: dict[str, FeatureSpec] = {}
    guardrails: Guardrails = Guardrails()
    privacy: Privacy = Privacy()
    consistency: Consistency = Consistency()
    reward: Reward
    learner: Learner = Learner()
    promotion: Promotion = Promotion()
    safety: Safety | None = None  # no [safety] table: no circuit breaker

    @model_validator(mode="before")
    @classmethod
    def _default_window(cls, data):
        """No reward window given: a day after the longest wait before a send (`slot_waits`, on a
        regular day): 1d for slots that send at once, 2d with a slot at a local time, so that every
        send has a day to be answered. One given is checked in `_cross_checks`. Slots and quiet
        hours that do not validate are left to the errors their own validation gives."""
        if not isinstance(data, dict):
            return data
        reward = data.get("reward")
        if isinstance(reward, Reward):
            given = "window" in reward.model_fields_set
        elif isinstance(reward, dict):
            given = "window" in reward
        else:
            return data
        if given:
            return data
        timing = [t for t in (_valid(Timing, t) for t in (data.get("timing") or ())) if t is not None]
        guardrails = data.get("guardrails")
        quiet = guardrails.quiet_hours if isinstance(guardrails, Guardrails) else (
            _valid(QuietHours, guardrails.get("quiet_hours")) if isinstance(guardrails, dict) else None)
        window = max([w for w, *_ in slot_waits(timing, quiet, clocks_back=False)], default=0.0) + DAY
        reward = reward.model_copy(update={"window": window}) if isinstance(reward, Reward) else {**reward, "window": window}
        return {**data, "reward": reward}

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return iana_zone(v)

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            if not re.match(NAME_RE, c):
                raise ValueError(f"{c!r} is not a valid channel name")
        if len(set(v)) != len(v):
            raise ValueError("channels are listed twice")
        return v

    @field_validator("features")
    @classmethod
    def _feature_names(cls, v: dict[str, FeatureSpec]) -> dict[str, FeatureSpec]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"{name!r} is not a valid feature name (letters, digits, _)")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "PolicySpec":
        if self.kind == "catalog":
            for key in ("channels", "content", "timing"):
                if not getattr(self, key):
                    raise KeyedError(key, "List should have at least 1 item (a catalog policy needs "
                                          "channels, content and timing; kind = \"personalizer\" needs none)")
        ids = [c.id for c in self.content]
        for i, cid in enumerate(ids):
            if cid in ids[:i]:
                raise KeyedError(f"content[{i}].id", f"content id {cid!r} is used twice; content ids must be unique")
        names = [t.name for t in self.timing]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise KeyedError(f"timing[{i}].name",
                                  f"timing name {name!r} is used twice; timing names must be unique")
        for ch in self.guardrails.consent:
            if ch not in self.channels:
                raise KeyedError(f"guardrails.consent.{ch}",
                                  f"unknown channel {ch!r} (channels: {', '.join(self.channels)})")
        for i, cap in enumerate(self.guardrails.caps):
            if cap.channel != "*" and cap.channel not in self.channels:
                raise KeyedError(f"guardrails.caps[{i}].channel",
                                  f"unknown channel {cap.channel!r} (channels: {', '.join(self.channels)})")
        g = self.guardrails
        rules = [(f"arms.exclude[{i}]", r) for i, r in enumerate(self.arms.exclude)]
        if g.suppression:
            rules += [(f"guardrails.suppression.allow[{i}]", r) for i, r in enumerate(g.suppression.allow)]
            for t in g.suppression.engagement or ():
                if t not in self.reward.weights:
                    raise KeyedError("guardrails.suppression.engagement",
                                      f"unknown outcome type {t!r} (reward.weights names: "
                                      f"{', '.join(self.reward.weights)})")
        for key, rule in rules:
            if rule.content and rule.content not in ids:
                raise KeyedError(f"{key}.content", f"unknown content {rule.content!r}")
            if rule.channel and rule.channel not in self.channels:
                raise KeyedError(f"{key}.channel", f"unknown channel {rule.channel!r}")
            if rule.timing and rule.timing not in names:
                raise KeyedError(f"{key}.timing", f"unknown timing {rule.timing!r}")
        if g.quiet_hours:
            for ch in g.quiet_hours.channels or ():
                if ch not in self.channels:
                    raise KeyedError("guardrails.quiet_hours.channels",
                                      f"unknown channel {ch!r} (channels: {', '.join(self.channels)})")
        waits = slot_waits(self.timing, g.quiet_hours, clocks_back=True)
        if self.kind == "catalog" and waits and self.reward.window <= max(waits)[0]:
            wait, name, quiet = max(waits)
            local = quiet or next(t for t in self.timing if t.name == name).at is not None
            notes = ", ".join(note for note, on in (("the night the clocks go back", local),
                                                    ("its quiet hours included", quiet)) if on)
            raise KeyedError("reward.window",
                              f"{format_duration(self.reward.window)} is not longer than the wait before timing "
                              f"{name!r} sends: up to {format_duration(wait)} after the decision"
                              f"{f' ({notes})' if notes else ''}. Its sends' outcomes would come "
                              f"after the reward is final, "
                              f"and the learner would be told they earned nothing: make the window longer than "
                              f"{format_duration(wait)}, by the time people take to answer (the example policy: 2d)")
        for name in self.privacy.sensitive:
            if name in self.features:
                raise KeyedError("privacy.sensitive",
                                  f"{name!r} is declared sensitive and also a feature; a sensitive feature is never accepted")
        return self


def _valid(model, value):
    """`value` as `model`, or None when it is not one (its own validation reports why)."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except (ValueError, TypeError):
        return None


def format_duration(seconds: float) -> str:
    """Seconds as the shortest duration a policy file would write: 7d, 2h, 90s."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
