"""A request's context, checked against the policy's declared features: the first step of a
decision; and its eligible sets (the contents and channels this decision may use). Every error
names the field (`context.NAME`, `contents[i]`, `channels[i]`) and the reason."""
from __future__ import annotations

import math
from typing import Mapping

from service.errors import BadRequest
from service.policy import FeatureSpec, Policy


def validate_context(policy: Policy, context: Mapping[str, object], dropped: list | None = None) -> dict:
    """The context's features, checked against the policy's declaration.

    A sensitive feature is always refused. An undeclared one is refused, or, when the policy's
    privacy says "drop", left out and its name appended to `dropped` so the answer reports it.
    """
    features = policy.spec.features
    privacy = policy.spec.privacy
    errors = []
    clean: dict[str, object] = {}
    for name, value in context.items():
        spec = features.get(name)
        if name in privacy.sensitive:
            errors.append({"field": f"context.{name}",
                           "reason": f"is declared sensitive by policy {policy.name!r} and is never accepted"})
            continue
        if spec is None:
            if privacy.undeclared == "drop" and dropped is not None:
                dropped.append(name)
                continue
            errors.append({"field": f"context.{name}",
                           "reason": f"not a feature of policy {policy.name!r} "
                                     f"(it accepts: {', '.join(sorted(features)) or 'none'})"})
            continue
        reason = _feature_error(spec, value)
        if reason:
            errors.append({"field": f"context.{name}", "reason": reason})
        elif value is not None:
            clean[name] = value
    for name, spec in features.items():
        if spec.required and context.get(name) is None:
            errors.append({"field": f"context.{name}", "reason": "is required by the policy"})
    if errors:
        raise BadRequest(f"{errors[0]['field']}: {errors[0]['reason']}", errors[0]["field"], errors)
    return clean


def eligible_sets(policy: Policy, contents: list[str] | None, channels: list[str] | None
                  ) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """The request's eligible contents and channels (None: no restriction), each one a content
    or a channel of the policy."""
    errors = []
    for name, given, known in (("contents", contents, policy.content_index), ("channels", channels,
                                                                                policy.spec.channels)):
        for i, value in enumerate(given or ()):
            if value not in known:
                errors.append({"field": f"{name}[{i}]",
                               "reason": f"{value!r} is not a {name[:-1]} of policy {policy.name!r} "
                                         f"(it has: {', '.join(sorted(known))})"})
    if errors:
        raise BadRequest(f"{errors[0]['field']}: {errors[0]['reason']}", errors[0]["field"], errors)
    return (frozenset(contents) if contents is not None else None,
            frozenset(channels) if channels is not None else None)


def _feature_error(spec: FeatureSpec, value: object) -> str | None:
    if value is None:
        return None
    if spec.type == "string":
        if not isinstance(value, str):
            return f"must be a string, not {type(value).__name__}"
        if len(value) > 200:
            return "must be at most 200 characters"
        return None
    if spec.type == "boolean":
        return None if isinstance(value, bool) else f"must be true or false, not {type(value).__name__}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, not {type(value).__name__}"
    if not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        return "must fit in a signed 64-bit integer"
    if spec.min is not None and value < spec.min:
        return f"must be at least {spec.min:g}"
    if spec.max is not None and value > spec.max:
        return f"must be at most {spec.max:g}"
    return None
