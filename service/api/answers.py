"""The answers of HTTP API v1, as pydantic models: the OpenAPI document (openapi.py) describes
every answer from these, and the fuzz test (tests/test_fuzz_api.py) checks every answer the
service gives against that description. Times are RFC 3339 text."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class _Answer(BaseModel):
    # an answer's fields are all named: the document says every one (additionalProperties false)
    model_config = ConfigDict(extra="forbid")


class ConsentChange(_Answer):
    channel: str
    granted: bool
    source: str | None
    at: str


class Person(_Answer):
    """A person's state, as the guardrails see it now (also the answer to a consent or a
    preferences update)."""

    user_id: str
    consent: dict[str, bool]
    consent_history: list[ConsentChange]
    preferences: dict[str, Any]
    preferences_updated_at: str | None
    contacts: list[dict[str, Any]]
    cooldowns: list[dict[str, Any]]
    contacts_without_engagement: int
    last_engaged_at: str | None


class PersonDecisions(_Answer):
    user_id: str
    decisions: list[dict[str, Any]]


class Erased(_Answer):
    user_id: str
    erased: bool
    deleted: dict[str, int]


class PolicyListed(_Answer):
    name: str
    description: str
    arm_count: int
    active_model_version: int | None
    counts: dict[str, int]


class PolicyList(_Answer):
    policies: list[PolicyListed]


class ArmState(_Answer):
    policy: str
    target: str
    kind: Literal["arm", "content"]
    arms: list[str]
    status: Literal["active", "retired", "out_of_stock"]
    valid_from: str | None
    valid_until: str | None
    reason: str | None
    updated_at: str | None


class ModelList(_Answer):
    policy: str
    active_version: int | None
    shadow_version: int | None
    versions: list[dict[str, Any]]
    activations: list[dict[str, Any]]


class Activation(_Answer):
    policy: str
    version: int
    previous: int | None
    reason: str
    at: str | None


class KeyListed(_Answer):
    name: str
    scopes: list[str]
    created_at: str
    last_used_at: str | None


class KeyList(_Answer):
    keys: list[KeyListed]


class KeyCreated(KeyListed):
    key: str = Field(description="The key itself, shown this once.")


class KeyRevoked(_Answer):
    name: str
    revoked_at: str


class Health(_Answer):
    status: Literal["ok"]
    policies: list[str]
    clock: Literal["system", "request"]


class Ready(_Answer):
    status: Literal["ready"]
    policies: list[str]
    learner: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] = []
    scope: str | None = Field(default=None, description="A 403's: the scope the request needs.")


class BatchProblem(Problem):
    index: int = Field(description="The place of the request it answers in the batch, from 0.")


class BatchDecideResponse(BaseModel):
    policy: str
    decisions: list[DecideResponse | BatchProblem] = Field(
        description="One answer per request, in the batch's order: its decision, or its problem (with its `index`).")
