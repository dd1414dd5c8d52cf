"""Request and response schemas of HTTP API v1.

The same pydantic models, patterns and lists validate requests and make the OpenAPI 3.1 document
(`GET /openapi.json`, service/api/openapi.py), so the documentation cannot drift from what the
service accepts; tests/test_fuzz_api.py holds the two together.
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Mapping

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt,
                      PlainSerializer, StringConstraints, ValidationError, WithJsonSchema, field_validator)

from service.api.auth import NAME_PATTERN, SCOPES
from service.decision.batch import MAX_BATCH
from service.errors import BadRequest, TooLarge
from service.policy import Policy
from service.times import iana_zone, to_rfc3339


# RFC 3339 as every request's timestamp must be written: date, time with seconds, an optional
# fraction, and the offset; the year as written between 1970 and 8999. Near the ends of the
# calendar a timestamp overflows it (send times, reward windows, RFC 3339 rendering) and, as the
# request clock only moves forward, would fail every later request. The same pattern validates
# and is published in the OpenAPI document, so the two cannot disagree.
RFC3339 = (r"^(19[7-9][0-9]|[2-8][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
           r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"  # a local time of day
# No request text may hold U+0000: PostgreSQL cannot store it, and both backends refuse it alike.
# The validators check every name and string of a body (`parse`) and every path parameter
# (service/api/app.py); the document gives every free text this pattern (service/api/openapi.py).
NO_NUL = r"^[^\x00]*$"
# text that is more than blanks (the characters every regex dialect agrees are blanks), without NUL
NOT_BLANK = r"^[^\x00]*[^\t\n\v\f\r \x00][^\x00]*$"
# the reason a request gets when a string does not match one of these patterns
PATTERN_REASONS = {
    RFC3339: "must be RFC 3339 with its time-zone offset, such as 2026-05-28T09:00:00Z, "
             "with a year between 1970 and 8999",
    NOT_BLANK: "must not be empty or blank, nor hold the NUL character (U+0000)",
    HHMM: "must be a local time HH:MM, such as 21:00",
    NAME_PATTERN: "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit",
}


def _moment(v: str) -> datetime:
    try:
        return datetime.fromisoformat(v)
    except ValueError as exc:  # the pattern lets through a day the month does not have
        raise ValueError(f"is not a date: {exc}") from None


# in the document: a string of this pattern and format; once validated: an aware datetime
Timestamp = Annotated[str, StringConstraints(strict=True, pattern=RFC3339), AfterValidator(_moment),
                      PlainSerializer(lambda v: to_rfc3339(v.timestamp()) if isinstance(v, datetime) else v,
                                      return_type=str),
                      WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339})]


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


class BatchDecideRequest(_Request):
    """Many decides of one policy (`POST /v1/policies/<policy>/decide/batch`). Each request is
    validated on its own: an invalid one gets its problem in its place, the others are decided."""

    requests: list[DecideRequest] = Field(
        min_length=1, max_length=MAX_BATCH,
        description=f"Up to {MAX_BATCH} decide requests, each the body of a single decide (with its own "
                    "`request_id` for idempotency); answered in this order.")


def batch_requests(payload: Any) -> list:
    """The `requests` of a batch decide's body, each left to validate on its own (`parse`); a
    BadRequest for an envelope that is not `{"requests": [...]}`, a TooLarge (413) over the
    limit."""
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", "body")
    for name in payload:
        if name != "requests":
            field = _field((name,))
            reason = NUL_REASON if "\x00" in name else "is not a field of this request"
            raise BadRequest(f"{field}: {reason}", field, [{"field": field, "reason": reason}])
    items = payload.get("requests")
    if not isinstance(items, list):
        reason = "is required" if items is None and "requests" not in payload else "must be an array of decide requests"
        raise BadRequest(f"requests: {reason}", "requests", [{"field": "requests", "reason": reason}])
    if not items:
        raise BadRequest("requests: must hold at least one request", "requests")
    if len(items) > MAX_BATCH:
        reason = f"holds {len(items)} requests, more than the limit of {MAX_BATCH} in one batch"
        raise TooLarge(f"requests: {reason}", "requests", [{"field": "requests", "reason": reason,
                                                            "limit": MAX_BATCH}])
    return items


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


def _iana(v: str | None) -> str | None:
    return None if v is None else iana_zone(v)


class QuietHoursIn(_Request):
    start: str = Field(pattern=HHMM, description="Local time HH:MM quiet hours begin.")
    end: str = Field(pattern=HHMM, description="Local time HH:MM they end (may wrap midnight).")

    @field_validator("end")
    @classmethod
    def _differs(cls, v: str, info) -> str:
        if info.data.get("start") == v:
            raise ValueError("must differ from start: quiet hours would be empty")
        return v


def _integral(v: Any) -> Any:
    # JSON does not tell 7 from 7.0, and JSON Schema's "integer" accepts both
    return int(v) if isinstance(v, float) and v.is_integer() else v




class PreferencesRequest(_Request):
    """The person's own preferences; a PUT replaces them all."""

    preferred_channels: list[Name] = Field(default_factory=list, max_length=16,
                                           description="Channels the person prefers (a soft signal for the learner).")
    blocked_channels: list[Name] = Field(default_factory=list, max_length=16,
                                         description="Channels never to use for this person.")
    blocked_topics: list[Name] = Field(default_factory=list, max_length=64, description="Topics never to send.")
    # the constraints before the BeforeValidator: after it, pydantic writes them into the JSON
    # Schema as `ge` and `le`, which no JSON Schema reader knows (the document would allow any number)
    max_contacts_per_week: Annotated[StrictInt, Field(ge=0, le=1000), BeforeValidator(_integral)] | None = Field(
        default=None, description="The person's own limit, on every channel (a whole number; 7.0 is 7).")
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

    reason: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK,
                        description="Why: shown in every decision while the policy is paused, and kept.")


class BreakerResetRequest(_Request):
    """Close a tripped circuit breaker (`admin`): one (`target`) or every open one of the policy."""

    reason: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK, description="Why: kept with the reset.")
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


class ActivateRequest(_Request):
    """Serve another model version; the body is optional."""

    reason: str = Field(default="activated over HTTP", max_length=256, pattern=NOT_BLANK,
                        description="Why, recorded with the activation.")


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "body"


def parse(model: type[_Request], payload: Any) -> _Request:
    """Validate a JSON body; every problem becomes a BadRequest naming its field."""
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object", "body")
    if (where := nul_field(payload)) is not None:
        raise BadRequest(f"{where}: {NUL_REASON}", where, [{"field": where, "reason": NUL_REASON}])
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            reason = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                reason = "is not a field of this request"
            elif e["type"] == "string_pattern_mismatch":
                reason = PATTERN_REASONS.get(e["ctx"]["pattern"], reason)
            errors.append({"field": _field(e["loc"]), "reason": reason})
        raise BadRequest(f"{errors[0]['field']}: {errors[0]['reason']}", errors[0]["field"], errors) from None


NUL_REASON = "must not hold the NUL character (U+0000)"


def nul_field(payload: Any) -> str | None:
    """The first field (`a.b[2]`) of a JSON value whose name or text holds U+0000, if any. A
    loop, not a recursion: a body may nest deeper than Python's stack."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where or "body"
        elif isinstance(value, dict):
            for k, v in reversed(value.items()):
                here = f"{where}.{k}" if where else str(k)
                if "\x00" in str(k):
                    return here
                stack.append((here, v))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None


# Path and query parameters that are whole numbers: the range each allows, as the document gives it.
VERSION = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}  # a model version (a 64-bit key)
LIMIT = {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}  # a person's recent decisions


def whole_number(raw: str, field: str, schema: dict) -> int:
    """A path or query parameter as the integer `schema` allows: ASCII digits (with an optional
    minus) within its range; a BadRequest naming `field` otherwise."""
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise BadRequest(f"{field} must be a whole number, not {raw!r}", field)
    value = int(raw)
    if not schema["minimum"] <= value <= schema["maximum"]:
        raise BadRequest(f"{field} must be between {schema['minimum']} and {schema['maximum']}, not {raw}", field)
    return value


# What a request may name depends on the policies served: these lists validate requests
# (service/api/routes.py) and are published in the document (service/api/openapi.py).

def channel_names(policies: Mapping[str, Policy]) -> list[str]:
    """Every channel of every policy: what consent and preferences may name."""
    return sorted({ch for p in policies.values() for ch in p.spec.channels})


def outcome_types(policies: Mapping[str, Policy]) -> list[str]:
    """Every outcome type of every policy (an outcome's own policy is the one of its decision)."""
    return sorted({t for p in policies.values() for t in p.outcome_types})


def arm_targets(policies: Mapping[str, Policy]) -> list[str]:
    """What an arm patch may name: an arm or a content of a policy, never the hold arm."""
    out = set()
    for p in policies.values():
        out.update(a.id for a in p.arms if not a.hold)
        out.update(p.content_index)
    return sorted(out)


def unknown_channel(name: str, policies: Mapping[str, Policy]) -> str | None:
    """Why `name` may not be named as a channel (None: it may)."""
    known = channel_names(policies)
    return None if name in known else f"{name!r} is not a channel of any policy (known: {', '.join(known)})"
