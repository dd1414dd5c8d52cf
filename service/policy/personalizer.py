"""A Personalizer loop's settings and rewards (docs/personalizer.md): the service configuration of
Azure Personalizer's REST API as Tactful keeps it, its durations, and a Rank event's final reward.

A policy of `kind = "personalizer"` has no declared arms: its actions arrive with each Rank
request. The settings that shape a reward (the wait, the default, the aggregation) are copied
into each event when it is ranked, so its reward is computed from the event alone: a change of
configuration applies to the events ranked after it, never to those already waiting.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np

from service.errors import BadRequest
from service.store import Decision, Outcome

LEARNING_MODES = ("Online", "Apprentice", "LoggingOnly")
AGGREGATIONS = ("earliest", "average", "sum")
REWARD = "reward"        # the outcome type a Reward call records
ACTIVATE = "activate"    # the outcome type an Activate call records
DEFAULT_VW_ARGS = "--epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q UA"

_ISO = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                  r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")
_SPAN = re.compile(r"^(?:(?P<d>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")


def parse_timespan(text: object, field: str) -> float:
    """Seconds from an ISO 8601 duration (`PT10M`, `P1DT2H`) or a .NET time span (`00:10:00`,
    `1.02:00:00`), the two forms Personalizer's clients send."""
    if isinstance(text, str):
        m = _ISO.match(text.strip()) if text.strip() not in ("P", "PT") else None
        if m is None:
            m = _SPAN.match(text.strip())
        if m is not None:
            parts = {k: float(v) for k, v in m.groupdict().items() if v}
            return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    raise BadRequest(f"{field}: {text!r} is not a duration (ISO 8601 such as PT10M, or 00:10:00)", field)


def format_timespan(seconds: float) -> str:
    """Seconds as an ISO 8601 duration: PT10M, PT1H30M, PT5S, P1D."""
    if seconds and seconds % 86400 == 0:
        return f"P{int(seconds // 86400)}D"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = "PT" + (f"{int(h)}H" if h else "") + (f"{int(m)}M" if m else "")
    return out + (f"{s:g}S" if s or out == "PT" else "")


@dataclass(frozen=True)
class ServiceSettings:
    """GET/PUT /personalizer/configurations/service, in seconds and plain values."""

    reward_wait: float = 600.0
    default_reward: float = 0.0
    reward_aggregation: str = "earliest"
    exploration: float = 0.2
    model_export_every: float = 300.0
    log_retention_days: int = 90
    model_retrain_days: int = 0
    learning_mode: str = "Online"
    edited_at: float | None = None

    def to_json(self) -> dict:
        return {"rewardWaitTime": format_timespan(self.reward_wait), "defaultReward": self.default_reward,
                "rewardAggregation": self.reward_aggregation, "explorationPercentage": self.exploration,
                "modelExportFrequency": format_timespan(self.model_export_every),
                "logRetentionDays": self.log_retention_days, "modelRetrainDays": self.model_retrain_days,
                "learningMode": self.learning_mode, "isAutoOptimizationEnabled": False}

    def stored(self) -> dict:
        return asdict(self)

    @classmethod
    def from_stored(cls, data: dict | None) -> "ServiceSettings":
        return cls(**data) if data else cls()


def settings_from_json(body: object, current: ServiceSettings) -> ServiceSettings:
    """A PUT body over the current settings; BadRequest naming the field that is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", "body")
    changes: dict = {}
    if "rewardWaitTime" in body:
        wait = parse_timespan(body["rewardWaitTime"], "rewardWaitTime")
        if not 5 <= wait <= 2 * 86400:
            raise BadRequest("rewardWaitTime: must be between 5 seconds and 2 days", "rewardWaitTime")
        changes["reward_wait"] = wait
    if "defaultReward" in body:
        changes["default_reward"] = _number(body["defaultReward"], "defaultReward", -1.0, 1.0)
    if "explorationPercentage" in body:
        changes["exploration"] = _number(body["explorationPercentage"], "explorationPercentage", 0.0, 1.0)
    if "rewardAggregation" in body:
        agg = body["rewardAggregation"]
        if not isinstance(agg, str) or agg.lower() not in AGGREGATIONS:
            raise BadRequest(f"rewardAggregation: {agg!r} is not one of {', '.join(AGGREGATIONS)}",
                             "rewardAggregation")
        changes["reward_aggregation"] = agg.lower()
    if "modelExportFrequency" in body:
        changes["model_export_every"] = parse_timespan(body["modelExportFrequency"], "modelExportFrequency")
    for key, attr in (("logRetentionDays", "log_retention_days"), ("modelRetrainDays", "model_retrain_days")):
        if key in body:
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise BadRequest(f"{key}: {value!r} is not a whole number of days (-1: forever)", key)
            changes[attr] = value
    if body.get("learningMode") is not None:
        mode = body["learningMode"]
        if mode not in LEARNING_MODES:
            raise BadRequest(f"learningMode: {mode!r} is not one of {', '.join(LEARNING_MODES)}", "learningMode")
        changes["learning_mode"] = mode
    return replace(current, **changes)


def _number(value: object, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"{field}: {value!r} is not a number in [{lo:g}, {hi:g}]", field)
    return float(value)


def event_reward(d: Decision, outcomes: list[Outcome]) -> float:
    """A Rank event's final reward: its rewards received within the wait (aggregated as the
    event's settings say), else its default reward."""
    settings = d.history.get("personalizer", {})
    values = [o.value for o in sorted(outcomes, key=lambda o: o.at)
              if o.type == REWARD and o.counted and o.at <= d.closes_at]
    if not values:
        return float(settings.get("default_reward", 0.0))
    aggregation = settings.get("aggregation", "earliest")
    if aggregation == "sum":
        return float(min(1.0, max(-1.0, sum(values))))
    if aggregation == "average":
        return float(sum(values) / len(values))
    return float(values[0])


def learnable(d: Decision, outcomes: list[Outcome]) -> bool:
    """Whether a Rank event is learned: it showed an action (guardrails left one), it is not in
    LoggingOnly mode, and, when its activation was deferred, it was activated within its wait."""
    settings = d.history.get("personalizer", {})
    if settings.get("learning_mode") == "LoggingOnly" or d.arm not in d.allowed:
        return False
    if settings.get("deferred"):
        return any(o.type == ACTIVATE and o.at <= d.closes_at for o in outcomes)
    return True


def served_pmf(model_pmf: np.ndarray, exploration: float) -> np.ndarray:
    """Personalizer's exploration over a model's scores: its favourite with probability
    1 - exploration, and exploration spread evenly over every action."""
    top = np.zeros(len(model_pmf))
    top[int(np.argmax(model_pmf))] = 1.0
    return (1 - exploration) * top + exploration / len(model_pmf)


def reward_cost(reward: float) -> float:
    """Personalizer's rewards in [-1, 1] as VW costs in [0, 1] (1 the worst)."""
    return (1.0 - min(1.0, max(-1.0, reward))) / 2.0
