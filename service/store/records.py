"""What the store keeps, as values: a person's state as the guardrails read it, a decision as
logged, an outcome as reported; and the compact JSON of the store's JSON columns. Every backend
reads and writes these."""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson


def dumps(value) -> str:
    """Compact JSON text for the store's JSON columns (orjson: several times faster than the
    standard library, which matters on the decision path; the text is plain JSON either way)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


loads = orjson.loads


# Delivery report statuses (POST /v1/events/{id}/delivery). The last three say the message never
# reached the person: what its decision reserved is released and it is not learned as a contact.
DELIVERY_STATUSES = ("sent", "not_sent", "bounced", "failed")
UNDELIVERED = frozenset({"not_sent", "bounced", "failed"})


def delivered(channel: str | None, delivery: str | None) -> bool:
    """Whether a decision on `channel` with this latest delivery report is a contact (below)."""
    return channel is not None and delivery not in UNDELIVERED


@dataclass
class PersonState:
    """What the guardrails need to know about one person (and the policy's runtime arm state)."""

    key: str
    consent: dict[str, bool]                      # latest grant or refusal per channel
    contacts: list[tuple[str, float]]             # (channel, at) within the look-back window, oldest first
    marker: tuple = ()                            # changes whenever a write could change the verdict
    preferences: dict = field(default_factory=dict)
    unengaged: int = 0                            # contacts since the last engagement
    signals: list[tuple[str, str | None, float]] = field(default_factory=list)  # (kind, channel, at)
    arm_state: dict[str, dict] = field(default_factory=dict)  # target (arm or content id) -> state
    budget_used: int = 0                          # the policy's sends today (its time zone)


@dataclass
class Decision:
    event_id: str
    policy: str
    person_key: str | None
    decided_at: float
    closes_at: float
    model_version: int | None
    mode: str
    arm: str
    probability: float
    send_at: float | None
    channel: str | None
    allowed: list[str]
    probabilities: list[float]
    context: dict
    history: dict
    removed: dict[str, list[str]]
    consistency_key: str | None = None
    seq: int | None = None
    reward: float | None = None
    learned_version: int | None = None
    extra: dict = field(default_factory=dict)
    delivery: str | None = None  # the latest delivery report's status; None: none reported (a send)

    @property
    def delivered(self) -> bool:
        """Whether it reached, as far as anyone said, the person: a send not reported as
        not_sent, bounced or failed. Only a delivered decision is a contact."""
        return delivered(self.channel, self.delivery)

    @classmethod
    def from_row(cls, row: dict) -> "Decision":
        """A decision from its row; a row read without `probabilities` or `removed` (the learner's
        reads, see DecisionLog.decisions_after) gives them empty."""
        return cls(
            seq=row["seq"], event_id=row["event_id"], policy=row["policy"], person_key=row["person_key"],
            decided_at=row["decided_at"], closes_at=row["closes_at"], model_version=row["model_version"],
            mode=row["mode"], arm=row["arm"], probability=row["probability"], send_at=row["send_at"],
            channel=row["channel"], allowed=loads(row["allowed"]),
            probabilities=loads(row["probabilities"]) if "probabilities" in row else [],
            context=loads(row["context"]), history=loads(row["history"]),
            removed=unpack_removed(row["removed"]) if "removed" in row else {},
            consistency_key=row["consistency_key"], reward=row["reward"],
            learned_version=row["learned_version"], delivery=row.get("delivery"),
        )


def pack_removed(removed: dict) -> str:
    """The removed arms and their reasons, as stored: each distinct (code, detail) once and the
    arms grouped by their list of reasons. Most arms share their reasons with many others, so
    this is about a third of the plain {arm: reasons} JSON, and the decision log's size is most
    of the cost of writing a decision."""
    reasons: dict[tuple, int] = {}
    groups: dict[tuple, list[str]] = {}
    seen: dict[int, tuple] = {}  # id(list) -> its reasons' indices: arms often share one list
    for arm, rs in removed.items():
        idx = seen.get(id(rs))
        if idx is None:
            idx = seen[id(rs)] = tuple(reasons.setdefault((r[0], r[1]), len(reasons)) for r in rs)
        groups.setdefault(idx, []).append(arm)
    return dumps({"v": 2, "reasons": [list(r) for r in reasons],
                  "groups": [[list(idx), arms] for idx, arms in groups.items()]})


def unpack_removed(text: str) -> dict[str, list[list[str]]]:
    data = loads(text)
    if not (isinstance(data, dict) and data.get("v") == 2):
        return data  # the plain form of earlier rows
    reasons = data["reasons"]
    return {arm: [reasons[i] for i in idx] for idx, arms in data["groups"] for arm in arms}


@dataclass
class Outcome:
    event_id: str
    type: str
    value: float
    at: float
    outcome_id: str | None = None
    received_at: float | None = None
    counted: bool = True

    @classmethod
    def from_row(cls, r) -> "Outcome":
        return cls(event_id=r["event_id"], type=r["type"], value=r["value"], at=r["at"], outcome_id=r["outcome_id"],
                   received_at=r["received_at"], counted=bool(r["counted"]))


class StoreError(Exception):
    """The store cannot be used as asked (a schema newer than the code, an unknown address)."""


class StoreUnavailable(StoreError):
    """The store cannot answer now (the database down or restarting, a lock not granted in
    time): try again shortly. The HTTP API answers 503."""


@dataclass(frozen=True)
class RequestClaim:
    """A decide's idempotency key, claimed in the transaction that logs its decision, with the
    answer given (a retry gets that answer). A claim older than `since` may be taken over."""

    request_id: str
    request_hash: str
    response: str
    since: float


class DuplicateRequest(Exception):
    """Another decision claimed the same request id first (within the idempotency window)."""


class DeliveryConflict(Exception):
    """A delivery report that contradicts the one already recorded (sent, then not_sent)."""


class OutcomeConflict(Exception):
    """The same outcome_id was reported with a different type or value."""


class NoSuchVersion(LookupError):
    """The policy has no model version of that number."""

    def __init__(self, policy: str, version: int):
        super().__init__(f"policy {policy!r} has no model version {version}")


class AlreadyActive(Exception):
    """The version asked to be activated is the active one already."""

    def __init__(self, policy: str, version: int):
        super().__init__(f"version {version} of {policy!r} is already active")
