"""`tactful retrain`: counterfactual learning of a new candidate from the decision log.

The final decisions are sorted by time and cut into three slices: the earliest trains, the next
(`select`, 20%) chooses, the latest (`holdout`, 20%) evaluates. Each configuration of a small
grid (exploration, interactions) trains a fresh VW `--cb_explore_adf` model in one pass over the
training slice (cost = the shaped reward mapped to [0, 1], the logged probability, as the online
learner learns) and is scored on the selection slice by DR (reward model cross-fitted once on
that slice). The configuration with the highest DR estimate is trained again on the training and
selection slices together, written as a candidate model version (source `retrain`, not active),
and evaluated on the held-out slice only (against the active version and uniform; against the
logging policy and uniform when the policy has no active version yet, as after `import-obd`);
that evaluation is stored beside it, ready for `tactful models promote`.

Why three slices: the highest of several noisy estimates is biased upward (the winner's curse),
so an evaluation computed on the slice that chose the winner overstates its lift and makes
promotion too easy. The held-out slice took no part in the choice nor in the training, so its
estimate of the stored model is honest; scripts/winners_curse.py measures both (docs/models.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tqdm import tqdm

from models.ope import DR, OffPolicyEvaluation, RewardModel
from models.featurize import shared_line
from models.reward import to_cost
from models.vw_policy import VWPolicy
from service.policy.bandit import arm_lines, reward_spec
from service.offline.errors import not_enough_data, per_request_actions
from service.offline.evaluate import bandit_data, evaluate
from service.offline.target_policies import model_target
from service.offline.export import final_decisions
from service.learning.registry import VersionRegistry
from service.policy import Policy
from service.store import UNDELIVERED, Store
from service.times import to_rfc3339

EXPLORATION = ("--squarecb --gamma_scale 300 --epsilon 0.01", "--epsilon 0.1")
# the arms' parts x context, recent contact pressure x the hold arm (the example's: docs/policies.md);
# the same with each segment's own table of arms (the `Id` namespace); the parts x contact pressure.
# Every candidate can learn to hold a tired person: one that could not would not be promoted in
# the example's place on a log whose slices happen to show little fatigue
INTERACTIONS = ("-q UA -q HR --ignore_linear R --ignore I", "-q UA -q UI -q HR --ignore_linear R",
                "-q UA -q HA --ignore I")
# the step and clipping docs/policies.md found reliable (`--clip_p 0.5 -l 0.1 -b 22`: no wrong
# favourite in 24 runs, against 18 of 64 with `--clip_p 0.1` and VW's default step)
LEARNING_RATES = (0.1,)
CLIP_P = 0.5
BITS = 22
MIN_DECISIONS = 50  # final decisions retraining needs: a training, a selection and a held-out slice


@dataclass
class TrainedConfig:
    vw_args: str
    dr: float
    lo: float
    hi: float


@dataclass
class Slices:
    """The final decisions cut by time: train | select | held out."""
    train: list
    select: list
    held_out: list

    @classmethod
    def cut(cls, rows: list, select: float, holdout: float) -> "Slices":
        if not (0 < select and 0 < holdout and select + holdout < 1):
            raise ValueError(f"select ({select}) and holdout ({holdout}) must be positive shares summing below 1")
        a = int(len(rows) * (1 - select - holdout))
        b = int(len(rows) * (1 - holdout))
        return cls(rows[:a], rows[a:b], rows[b:])


def grid(exploration: Sequence[str] = EXPLORATION, interactions: Sequence[str] = INTERACTIONS,
         learning_rates: Sequence[float] = LEARNING_RATES, bits: int = BITS, clip_p: float = CLIP_P) -> list[str]:
    return [f"{e} {i} -l {lr:g} --clip_p {clip_p:g} -b {bits}" for e in exploration for i in interactions
            for lr in learning_rates]


def train(policy: Policy, rows, vw_args: str, seed: int = 0) -> VWPolicy:
    model = VWPolicy(arm_lines(policy), vw_args, seed=seed)
    spec = reward_spec(policy)
    for row in rows:
        d = row.decision
        if d.delivery in UNDELIVERED:  # as the online learner: a message that reached no one is not learned
            continue
        model.learn(shared_line(d.context, d.history), [policy.arm_index[a] for a in d.allowed], row.chosen,
                    to_cost(spec, row.reward), d.probability)
    return model


def search(policy: Policy, train_rows, select_rows, configs: Sequence[str], seed: int = 0,
           progress: bool = False) -> list[TrainedConfig]:
    """Each configuration trained on `train_rows` and scored by DR on `select_rows`."""
    ope = OffPolicyEvaluation(bandit_data(policy, select_rows), [DR()], RewardModel(), seed=seed)
    results = []
    for args in tqdm(configs, desc="retrain grid", unit="config", disable=not progress):
        model = train(policy, train_rows, args, seed)
        try:
            e = ope.run(model_target(policy, select_rows, model))[0]
        finally:
            model.close()
        results.append(TrainedConfig(args, e.value, e.lo, e.hi))
    return results


def _span(rows) -> dict:
    return {"decisions": len(rows), "from": to_rfc3339(rows[0].decision.decided_at),
            "to": to_rfc3339(rows[-1].decision.decided_at)}


def reference_baselines(store: Store, policy: Policy) -> tuple[str, str]:
    """What a candidate is compared with: the active version, or, for a policy that has none (logs
    imported with `tactful import-obd`), the policy that logged the decisions; and uniform."""
    return ("active" if store.active_version(policy.name) is not None else "logged", "uniform")


def retrain(store: Store, policy: Policy, now: float, since: float | None = None,
            until: float | None = None, holdout: float = 0.2, configs: Sequence[str] | None = None,
            n_boot: int = 500, seed: int = 0, progress: bool = False, select: float = 0.2) -> dict:
    if policy.spec.kind == "personalizer":
        raise per_request_actions(policy, "`tactful retrain`")
    policy = policy.known()  # every arm it ever had: the log's arm sets change over time
    rows = list(final_decisions(store, policy, now, since, until))
    if len(rows) < MIN_DECISIONS:
        raise not_enough_data(store, policy, now, since, until, MIN_DECISIONS, "retraining")
    rows.sort(key=lambda r: (r.decision.decided_at, r.decision.seq))
    s = Slices.cut(rows, select, holdout)
    results = search(policy, s.train, s.select, configs or grid(), seed, progress)
    chosen = max(results, key=lambda r: r.dr).vw_args
    model = train(policy, s.train + s.select, chosen, seed)  # the winner, on everything before the held-out slice
    baselines = reference_baselines(store, policy)
    note = {"trained_on": _span(s.train + s.select), "selected_on": _span(s.select), "held_out": _span(s.held_out),
            "search": [r.__dict__ for r in results], "chosen": chosen, "n_learned": len(s.train) + len(s.select)}
    registry = VersionRegistry(store)
    try:
        version, new = registry.add_retrained(policy.name, model.to_bytes(), chosen, now, note)
    finally:
        model.close()
    evaluation = evaluate(store, policy, str(version), baselines, now=now, rows=s.held_out, n_boot=n_boot, seed=seed)
    # stored also for a version an earlier retrain wrote: the held-out slice or the active version
    # may have changed since, and promote reads the latest
    registry.store_evaluation(policy.name, version, evaluation.as_dict() | {"held_out": True}, now)
    return {"version": version, "new": new, "chosen": chosen, "search": results, "evaluation": evaluation,
            "train": len(s.train), "select": len(s.select), "held_out": len(s.held_out)}
