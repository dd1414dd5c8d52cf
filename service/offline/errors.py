"""The offline tools' errors: an evaluation (or retraining) that cannot run, and why, in the
user's terms: what is missing and what to do about it."""
from __future__ import annotations

from service.policy import Policy
from service.policy.spec import format_duration
from service.store import Store
from service.times import to_rfc3339


class EvaluationError(ValueError):
    """The evaluation cannot run: names what is wrong (a target, the log)."""


class NotEnoughData(EvaluationError):
    """The log holds too few final decisions for the command: the data is missing, not an
    option wrong. Its message says why and what to do."""


SEE_IT_LEARN = ("to see a policy learn in minutes rather than days, follow the README's "
                "\"See it learn\" (`tactful serve --clock request` driven by `tactful simulate --url`)")


def not_enough_data(store: Store, policy: Policy, now: float, since: float | None, until: float | None,
                    needed: int = 1, what: str = "evaluating") -> NotEnoughData:
    """The error for a command that found fewer than `needed` final decisions of `policy`."""
    f = store.finality(policy.name, now, since, until)
    where = f"in {store.location}" + (" in that time range" if since is not None or until is not None else "")
    window = format_duration(policy.spec.reward.window)
    if f["decisions"] == 0:
        return NotEnoughData(
            f"policy {policy.name!r} has no decisions {where}: nothing was decided with it yet. Check --db "
            f"(the store `tactful serve` wrote) and --since/--until; {SEE_IT_LEARN}")
    head = (f"policy {policy.name!r} has {f['final']} final decisions {where}; {what} needs at least {needed}"
            if needed > 1 else f"policy {policy.name!r} has no final decisions {where} yet")
    msg = (f"{head}. A decision is final once its reward window ({window}) has closed: "
           f"{f['decisions']} are logged, {f['decisions'] - f['final']} still inside their window at "
           f"{to_rfc3339(now)}")
    if f["next_final_at"] is not None:
        msg += (f"; the next becomes final at {to_rfc3339(f['next_final_at'])}. Run again then, or pass "
                f"--now with a later time to count them as final now (their outcomes may be incomplete)")
    return NotEnoughData(f"{msg}; {SEE_IT_LEARN}")


def per_request_actions(policy: Policy, what: str) -> EvaluationError:
    """The error for a catalogue tool asked about a policy whose actions arrive with each request."""
    return EvaluationError(
        f"policy {policy.name!r} ranks per-request actions (kind = \"personalizer\"): {what} works over a "
        "catalogue of arms. Evaluate its learning settings with PUT /personalizer/evaluations/{id} and apply one "
        "with PUT /personalizer/configurations/policy (docs/personalizer.md); `tactful export` writes its log")
