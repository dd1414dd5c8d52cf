"""A policy's live content catalog: contents added, changed or retired at runtime over HTTP
(`PUT` / `DELETE /v1/policies/{policy}/contents/{content_id}`), without editing the policy file.

The policy file is the initial catalog. Every change is kept in the store, in order, with who, when
and why (`catalog_changes`); the catalog a process serves is its policy file (or the text a reload
published) with every change applied in order (`with_catalog`). So the catalog survives restarts,
and every worker, the learner and every replica follow a change as they follow a reload
(service/policy/reload.py): within about a second of their next request or learning step.

A deleted content leaves every decision (its arms are no longer arms of the policy) but its
history stays: it is kept as a *retired* content (`Policy.retired`), so the learner and the
offline tools (`Policy.known()`) still map the decisions logged with its arms.
"""
from __future__ import annotations

from pydantic import ValidationError

from service.policy import Content, Policy, PolicyError
from service.specfile import error_key


def parse_content(content_id: str, fields: dict, where: str = "content") -> Content:
    """A content from the fields of a catalog change; PolicyError naming the field."""
    try:
        return Content.model_validate({"id": content_id, **fields})
    except ValidationError as exc:
        err = exc.errors()[0]
        reason = err["msg"].removeprefix("Value error, ")
        key = error_key(err["loc"]) or ("valid_until" if "valid_until" in reason else "content")
        raise PolicyError(where, key, reason) from None


def with_catalog(base: Policy, changes: list[dict]) -> Policy:
    """`base` (the policy as its file declares it) with its catalog changes applied in order;
    PolicyError when what is left is not a policy (its fallback arm's content deleted, say)."""
    if not changes:
        return base
    contents = {c.id: c for c in base.spec.content}
    retired: dict[str, Content] = {c.id: c for c in base.retired}
    for change in changes:
        cid = change["content_id"]
        if change["action"] == "put":
            contents[cid] = parse_content(cid, change["content"], f"catalog change {change.get('id')}")
            retired.pop(cid, None)
        elif cid in contents:
            retired[cid] = contents.pop(cid)
    if not contents:
        raise PolicyError(base.path, "content", "the catalog would be empty: a policy needs at least one content")
    spec = base.spec.model_copy(update={"content": tuple(contents.values())})
    return Policy(spec, base.path, tuple(retired.values()))


def catalog_view(policy: Policy, changes: list[dict], render) -> dict:
    """The contents a policy offers and the ones it retired, each with where it comes from (the
    file, or its latest change: when, by whom, why). `render(at)` formats a time."""
    latest = {c["content_id"]: c for c in changes}

    def entry(c: Content) -> dict:
        change = latest.get(c.id)
        origin = {"source": "file"} if change is None else {
            "source": "catalog", "changed_at": render(change["at"]), "changed_by": change["source"],
            "reason": change["reason"]}
        return c.model_dump(mode="json", exclude_none=True) | origin

    return {"policy": policy.name, "contents": [entry(c) for c in policy.spec.content],
            "retired": [entry(c) for c in policy.retired]}
