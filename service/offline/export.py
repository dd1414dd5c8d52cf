"""The decision log as data: every final decision of a policy, with what off-policy evaluation and
offline learning need, and its export as Vowpal Wabbit cb_adf text, CSV or Parquet.

A decision is *final* when its reward window has closed (or it was learned): its shaped reward
can no longer change. Each exported row carries the context and history features, the allowed
arms with the logged probability of every one, the chosen arm and its probability, the outcomes
counted inside the window and the shaped reward.

    from service.offline.export import final_decisions, export
    rows = final_decisions(store, policy, now=time.time())
    export(rows, policy, "vw", "log.vw")

The `vw` format is what VW's own file parser learns from as it is (`vw --cb_explore_adf -d
log.vw`): one multi-line example per decision (a `shared` line, then one line per allowed arm,
the chosen one labelled `0:cost:probability`), examples separated by an empty line. Costs are
the shaped rewards mapped to [0, 1] exactly as the online learner maps them.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field

from pathlib import Path
from typing import Iterable, Iterator

from models.featurize import action_line, label_action, shared_line
from models.reward import to_cost
from service.policy.bandit import arm_lines, decision_reward, reward_spec
from service.policy.personalizer import ACTIVATE, reward_cost
from service.policy import Policy
from service.times import to_rfc3339
from service.store import UNDELIVERED, Decision, Store

FORMATS = ("vw", "csv", "parquet")

# the one install hint for the parquet extra: the README's and docs/ope.md's say the same
PARQUET_INSTALL = "pip install -c constraints.txt -e '.[parquet]'"


@dataclass
class LoggedDecision:
    """One final decision and its reward, as evaluation and export use it."""

    decision: Decision
    reward: float
    outcomes: list[dict] = field(default_factory=list)

    @property
    def chosen(self) -> int:
        """The chosen arm's position in the allowed arms."""
        return self.decision.allowed.index(self.decision.arm)


def final_decisions(store: Store, policy: Policy, now: float, since: float | None = None,
                    until: float | None = None, chunk: int = 5000) -> Iterator[LoggedDecision]:
    """Every final decision of `policy` decided in [since, until), oldest first.

    Skipped: decisions still inside their reward window, decisions where every arm was removed
    (nothing was chosen among alternatives: no policy could have acted otherwise), and decisions
    naming arms the policy no longer has.
    """
    policy = policy.known()  # every arm it ever had: the log's arm sets change over time
    per_request = policy.spec.kind == "personalizer"
    cursor = 0
    while True:
        decisions = store.final_decisions(policy.name, cursor, now, since, until, chunk)
        if not decisions:
            return
        cursor = decisions[-1].seq
        outcomes = store.outcomes_for([d.event_id for d in decisions])
        for d in decisions:
            if not d.allowed or d.arm not in d.allowed:
                continue
            if per_request:  # a Rank event: its actions are logged with it
                if not d.history.get("personalizer", {}).get("actions"):
                    continue
            elif d.arm not in policy.arm_index or any(a not in policy.arm_index for a in d.allowed):
                continue
            outs = outcomes[d.event_id]
            reward = d.reward if d.learned_version is not None and d.reward is not None \
                else decision_reward(policy, d, outs)
            counted = [{"type": o.type, "value": o.value, "at": o.at} for o in outs
                       if o.counted and o.at <= d.closes_at]
            yield LoggedDecision(d, reward, counted)


def vw_example(policy: Policy, row: LoggedDecision, lines: list[str] | None = None) -> str:
    """One decision as a cb_adf multi-line example (without the separating empty line); a Rank
    event's from the actions and features logged with it, as the online learner learns it."""
    d = row.decision
    if policy.spec.kind == "personalizer":
        logged = [action_line(a["id"], a["features"]) for a in d.history["personalizer"]["actions"]]
        cost = reward_cost(row.reward)
        return "\n".join([shared_line(d.context, {})] + [label_action(line, cost, d.probability)
                                                          if pos == row.chosen else line
                                                          for pos, line in enumerate(logged)])
    lines = lines or arm_lines(policy)
    cost = to_cost(reward_spec(policy), row.reward)
    out = [shared_line(d.context, d.history)]
    for pos, arm in enumerate(d.allowed):
        line = lines[policy.arm_index[arm]]
        out.append(label_action(line, cost, d.probability) if pos == row.chosen else line)
    return "\n".join(out)


def _record(policy: Policy, row: LoggedDecision) -> dict:
    d = row.decision
    return {
        "event_id": d.event_id, "seq": d.seq, "decided_at": to_rfc3339(d.decided_at), "model_version": d.model_version,
        "mode": d.mode, "arm": d.arm, "chosen_index": row.chosen, "probability": d.probability,
        "reward": row.reward, "cost": to_cost(reward_spec(policy), row.reward),
        "allowed": d.allowed, "probabilities": d.probabilities,
        "context": d.context, "history": d.history, "outcomes": row.outcomes, "delivery": d.delivery,
    }


def _learned_event(policy: Policy, row: LoggedDecision) -> bool:
    """Whether the online learner learns this decision, as far as a Rank event's settings say:
    not in LoggingOnly mode, and activated if its activation was deferred (every catalogue
    decision is)."""
    settings = row.decision.history.get("personalizer") if policy.spec.kind == "personalizer" else None
    if settings is None:
        return True
    if settings.get("learning_mode") == "LoggingOnly":
        return False
    return not settings.get("deferred") or any(o["type"] == ACTIVATE for o in row.outcomes)


CSV_COLUMNS = ["event_id", "seq", "decided_at", "model_version", "mode", "arm", "chosen_index", "probability",
               "reward", "cost", "allowed", "probabilities", "context", "history", "outcomes", "delivery"]
JSON_COLUMNS = ("allowed", "probabilities", "context", "history", "outcomes")


def export(rows: Iterable[LoggedDecision], policy: Policy, fmt: str, out: str | Path) -> int:
    """Write `rows` to `out` in `fmt` (vw, csv, parquet), its directory created if missing; return
    how many were written.

    vw: training examples, as the online learner learns them: sends reported undelivered are left
    out (not counted).
    csv: one row per decision; list and object columns hold JSON text; `delivery` is the latest
    delivery report's status (empty: none reported).
    parquet: the same columns; `allowed` and `probabilities` are typed lists, the others JSON text.
    """
    policy = policy.known()  # every arm it ever had: the log's arm sets change over time
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (use one of: {', '.join(FORMATS)})")
    n = 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "vw":
        lines = arm_lines(policy)
        with out.open("w", encoding="utf-8") as fh:
            for row in rows:
                if row.decision.delivery in UNDELIVERED:  # learned from as the online learner does: not at all
                    continue
                if not _learned_event(policy, row):  # a Rank event the learner passes over
                    continue
                fh.write(vw_example(policy, row, lines) + "\n\n")
                n += 1
    elif fmt == "csv":
        with out.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                rec = _record(policy, row)
                writer.writerow({k: json.dumps(v) if k in JSON_COLUMNS else v for k, v in rec.items()})
                n += 1
    else:
        try:  # an optional extra, 55 MB: imported only for a parquet export
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise RuntimeError(f"parquet export needs pyarrow, an optional extra: {PARQUET_INSTALL} "
                               "(in the repository, with the venv that installed Tactful), or --format csv") from None
        recs = []
        for row in rows:
            rec = _record(policy, row)
            for k in ("context", "history", "outcomes"):
                rec[k] = json.dumps(rec[k])
            recs.append(rec)
        schema = pa.schema([("event_id", pa.string()), ("seq", pa.int64()), ("decided_at", pa.string()),
                            ("model_version", pa.int64()), ("mode", pa.string()), ("arm", pa.string()),
                            ("chosen_index", pa.int64()), ("probability", pa.float64()),
                            ("reward", pa.float64()), ("cost", pa.float64()),
                            ("allowed", pa.list_(pa.string())), ("probabilities", pa.list_(pa.float64())),
                            ("context", pa.string()), ("history", pa.string()), ("outcomes", pa.string()),
                            ("delivery", pa.string())])
        pq.write_table(pa.Table.from_pylist(recs, schema=schema), str(out))
        n = len(recs)
    return n
