"""Request and response schemas of HTTP API v1.

The same pydantic models validate requests and generate the OpenAPI 3.1 document
(`GET /openapi.json`), so the documentation cannot drift from what the service accepts.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      ValidationError, field_validator)

from service.api.auth import NAME_PATTERN, SCOPES
from service.errors import BadRequest
from service.times import iana_zone


_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def _in_range(v: datetime) -> datetime:
    # Timestamps become the request clock (which only moves forward) and stored times. Near the
    # ends of the calendar they overflow it (send times, reward windows, RFC 3339 rendering),
    # which would fail every later request, so they are refused here.
    if not _EARLIEST <= v < _LATEST:
        raise ValueError("must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z")
    return v


Timestamp = Annotated[AwareDatetime, AfterValidator(_in_range)]


Name = Annotated[str, Field(min_length=1, max_length=64)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id(v: str) -> str:
    """A decide's request id (`request_id` or the `Idempotency-Key` header)."""
    if not REQUEST_ID.fullmatch(v):
        raise ValueError("must be 1 to 128 letters, digits and ._:- (a UUID will do)")
    return v


RequestId = Annotated[str, AfterValidator(request_id), Field(json_schema_extra={"pattern": f"^{REQUEST_ID.pattern}$"})]


class DecideRequest(_Request):
    user_id: str = Field(min_length=1, max_length=256, description="The caller's opaque id of the person.")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="Context features, as the policy declares them.")
    consistency_key: str | None = Field(default=None, min_length=1, max_length=256,
                                        description="Decisions sharing this key keep the same content.")
    timestamp: Timestamp | None = Field(default=None,
                                        description="RFC 3339; only with `tactful serve --clock request`.")
    request_id: RequestId | None = Field(
        default=None, description="Idempotency key (or the `Idempotency-Key` header): a repeat within 24 hours "
                                  "answers the same decision and reserves nothing more; the same id with another "
                                  "body is a 409. Up to 128 letters, digits and `._:-`.")
    contents: list[Name] | None = Field(default=None, min_length=1, max_length=256,
                                        description="The eligible set: only these contents of the policy; the "
                                                    "others are removed as `not_eligible_content`.")
    channels: list[Name] | None = Field(default=None, min_length=1, max_length=16,
                                        description="Only these channels; the others are removed as "
                                                    "`not_eligible_channel`.")


class DeliveryRequest(_Request):
    """What became of a decision's message (an idempotent report: a repeat is acknowledged)."""

    status: Literal["sent", "not_sent", "bounced", "failed"] = Field(
        description="`sent`; or it never reached the person: `not_sent` (the tool did not send it), `bounced`, "
                    "`failed` -- these release the decision's contact, budget and suppression count, and the "
                    "decision is not learned as a contact. A `sent` may later become `bounced` or `failed`.")
    reason: str | None = Field(default=None, min_length=1, max_length=256, description="Why, for the audit trail.")
    timestamp: Timestamp | None = Field(default=None, description="RFC 3339; only with --clock request.")


class OutcomeRequest(_Request):
    type: str = Field(min_length=1, max_length=64, description="An outcome type of the policy (click, ...).")
    value: StrictFloat = Field(default=1.0, description="Size of the outcome (1 by default; order value, ...).")
    outcome_id: str | None = Field(default=None, min_length=1, max_length=256,
                                   description="Idempotency key: a repeat is acknowledged and counted once.")
    timestamp: Timestamp | None = Field(default=None, description="RFC 3339; only with --clock request.")

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class ConsentRequest(_Request):
    channels: dict[str, StrictBool] = Field(min_length=1, description="Channel -> granted (true) or refused (false).")
    source: str | None = Field(default=None, max_length=256, description="Where the consent was collected.")
    timestamp: Timestamp | None = None


def _hhmm(v: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
        raise ValueError("must be a local time HH:MM, such as 21:00")
    return v


def _iana(v: str | None) -> str | None:
    return None if v is None else iana_zone(v)


class QuietHoursIn(_Request):
    start: Annotated[str, AfterValidator(_hhmm)] = Field(description="Local time HH:MM quiet hours begin.")
    end: Annotated[str, AfterValidator(_hhmm)] = Field(description="Local time HH:MM they end (may wrap midnight).")

    @field_validator("end")
    @classmethod
    def _differs(cls, v: str, info) -> str:
        if info.data.get("start") == v:
            raise ValueError("must differ from start: quiet hours would be empty")
        return v


class PreferencesRequest(_Request):
    """The person's own preferences; a PUT replaces them all."""

    preferred_channels: list[Name] = Field(default_factory=list, max_length=16,
                                           description="Channels the person prefers (a soft signal for the learner).")
    blocked_channels: list[Name] = Field(default_factory=list, max_length=16,
                                         description="Channels never to use for this person.")
    blocked_topics: list[Name] = Field(default_factory=list, max_length=64, description="Topics never to send.")
    max_contacts_per_week: StrictInt | None = Field(default=None, ge=0, le=1000,
                                                   description="The person's own limit, on every channel.")
    quiet_hours: QuietHoursIn | None = Field(default=None, description="No sends in these local hours.")
    timezone: Annotated[str | None, AfterValidator(_iana)] = Field(default=None, description="IANA time zone.")
    timestamp: Timestamp | None = None


class ArmPatchRequest(_Request):
    """Switch an arm, or every arm of a content, at runtime; fields left out keep their value."""

    status: Literal["active", "retired", "out_of_stock"] | None = None
    valid_from: Timestamp | None = Field(default=None, description="Not sent before (RFC 3339); null clears.")
    valid_until: Timestamp | None = Field(default=None, description="Not sent from (RFC 3339); null clears.")
    reason: str | None = Field(default=None, max_length=256)


class PauseRequest(_Request):
    """Pause or resume a whole policy (`admin`): why, recorded with the change."""

    reason: str = Field(min_length=1, max_length=500, pattern=r"\S",
                        description="Why: shown in every decision while the policy is paused, and kept.")


class BreakerResetRequest(_Request):
    """Close a tripped circuit breaker (`admin`): one (`target`) or every open one of the policy."""

    reason: str = Field(min_length=1, max_length=500, pattern=r"\S", description="Why: kept with the reset.")
    target: str | None = Field(default=None, max_length=200, description="What the breaker watches: "
                               "`content:<id>`, `channel:<name>` or `policy`; every open one when left out.")


class ReasonRequest(_Request):
    """A change that only says why (a reload, a content retired); the body is optional."""

    reason: str | None = Field(default=None, min_length=1, max_length=256, description="Why, for the record.")


def _finite_features(v: dict[str, float]) -> dict[str, float]:
    for name, value in v.items():
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be a finite number")
    return v


class ContentRequest(_Request):
    """A content of the policy's live catalog, added or changed (a PUT replaces it whole)."""

    topic: Name = Field(description="Its topic (blocked topics, the model's `topic` feature).")
    tags: list[Name] = Field(default_factory=list, max_length=32, description="Tags, features of its arms.")
    features: Annotated[dict[Name, StrictFloat], AfterValidator(_finite_features)] = Field(
        default_factory=dict, max_length=32, description="Numeric features of its arms (discount, length, ...).")
    valid_from: Timestamp | None = Field(default=None, description="Not sent before (RFC 3339).")
    valid_until: Timestamp | None = Field(default=None, description="Not sent from (RFC 3339).")
    reason: str | None = Field(default=None, min_length=1, max_length=256, description="Why, for the record.")


class KeyRequest(_Request):
    """A new API key (`admin`): the answer shows the key once."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique among the keys not revoked.")
    scopes: list[Literal[tuple(SCOPES)]] = Field(min_length=1, max_length=len(SCOPES),
                                                 description="What the key may do: " + "; ".join(
                                                     f"`{k}`: {v}" for k, v in SCOPES.items()) + ".")


class Action(BaseModel):
    arm: str
    content: str | None
    channel: str | None
    timing: str | None
    send_at: str | None
    hold: bool


class Removed(BaseModel):
    count: int
    reasons: dict[str, int]


class DecideResponse(BaseModel):
    event_id: str
    policy: str
    model_version: int | None
    mode: Literal["explore", "exploit", "holdout", "fallback", "consistent"]
    action: Action
    probability: float
    removed: Removed
    explanation: dict[str, Any]


class OutcomeResponse(BaseModel):
    event_id: str
    outcome_id: str | None
    type: str
    value: float
    accepted: bool
    duplicate: bool
    counted: bool | None
    note: str | None


class DeliveryResponse(BaseModel):
    event_id: str
    status: str
    reason: str | None
    accepted: bool
    duplicate: bool
    released: bool
    note: str | None


class EventResponse(DecideResponse):
    status: Literal["pending", "final", "learned"]
    delivery: dict[str, Any] | None = Field(description="A send's delivery: the latest status reported (null: "
                                                        "none yet) and every report; null for a hold.")
    reward: float | None
    reward_window_closes_at: str
    learned_in_version: int | None
    outcomes: list[dict[str, Any]]
    allowed: list[dict[str, Any]]


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] = []
    scope: str | None = Field(default=None, description="A 403's: the scope the request needs.")


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "body"


def parse(model: type[_Request], payload: Any) -> _Request:
    """Validate a JSON body; every problem becomes a BadRequest naming its field."""
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", "body")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            reason = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                reason = "is not a field of this request"
            errors.append({"field": _field(e["loc"]), "reason": reason})
        raise BadRequest(f"{errors[0]['field']}: {errors[0]['reason']}", errors[0]["field"], errors) from None
