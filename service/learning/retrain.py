"""`tactful retrain`: counterfactual learning of a new candidate from the decision log.

The final decisions are split by time: the earlier `1 - holdout` share trains, the later share is
held out. Each configuration of a small grid (exploration, interactions, learning rate) trains a
fresh VW `--cb_explore_adf` model in one pass over the training slice (cost = the shaped reward
mapped to [0, 1], the logged probability, as the online learner learns); each is scored on the
held-out slice by DR (reward model cross-fitted once on that slice). The configuration with the
highest DR estimate is written as a candidate model version (source `retrain`, not active), and
its full evaluation on the held-out slice (against the active version and uniform) is stored
beside it, ready for `tactful models promote`.

The stored model is the one trained on the training slice only, so its stored evaluation is an
honest out-of-time estimate.
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

EXPLORATION = ("--squarecb --gamma_scale 300 --epsilon 0.05", "--epsilon 0.1")
# the arms' parts x context; the same with each segment's own table of arms (the `Id` namespace,
# docs/policies.md); the parts x recent contact pressure too
INTERACTIONS = ("-q UA --ignore I", "-q UA -q UI", "-q UA -q HA --ignore I")
LEARNING_RATES = (0.1, 0.5)
MIN_DECISIONS = 50  # final decisions retraining needs: a training and a held-out slice


@dataclass
class TrainedConfig:
    vw_args: str
    dr: float
    lo: float
    hi: float


def grid(exploration: Sequence[str] = EXPLORATION, interactions: Sequence[str] = INTERACTIONS,
         learning_rates: Sequence[float] = LEARNING_RATES, bits: int = 20) -> list[str]:
    return [f"{e} {i} -l {lr:g} --clip_p 0.1 -b {bits}" for e in exploration for i in interactions
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


def retrain(store: Store, policy: Policy, now: float, since: float | None = None,
            until: float | None = None, holdout: float = 0.2, configs: Sequence[str] | None = None,
            n_boot: int = 500, seed: int = 0, progress: bool = False) -> dict:
    if policy.spec.kind == "personalizer":
        raise per_request_actions(policy, "`tactful retrain`")
    policy = policy.known()  # every arm it ever had: the log's arm sets change over time
    rows = list(final_decisions(store, policy, now, since, until))
    if len(rows) < MIN_DECISIONS:
        raise not_enough_data(store, policy, now, since, until, MIN_DECISIONS, "retraining")
    rows.sort(key=lambda r: (r.decision.decided_at, r.decision.seq))
    cut = int(len(rows) * (1 - holdout))
    train_rows, test_rows = rows[:cut], rows[cut:]
    data = bandit_data(policy, test_rows)
    ope = OffPolicyEvaluation(data, [DR()], RewardModel(), seed=seed)
    results: list[TrainedConfig] = []
    best: tuple[float, str, VWPolicy] | None = None
    for args in tqdm(configs or grid(), desc="retrain grid", unit="config", disable=not progress):
        model = train(policy, train_rows, args, seed)
        pi = model_target(policy, test_rows, model)
        e = ope.run(pi)[0]
        results.append(TrainedConfig(args, e.value, e.lo, e.hi))
        if best is None or e.value > best[0]:
            if best is not None:
                best[2].close()
            best = (e.value, args, model)
        else:
            model.close()
    _, args, model = best
    registry = VersionRegistry(store)
    note = {"trained_on": {"decisions": len(train_rows), "from": to_rfc3339(train_rows[0].decision.decided_at),
                           "to": to_rfc3339(train_rows[-1].decision.decided_at)},
            "held_out": {"decisions": len(test_rows), "from": to_rfc3339(test_rows[0].decision.decided_at),
                         "to": to_rfc3339(test_rows[-1].decision.decided_at)},
            "search": [r.__dict__ for r in results], "chosen": args, "n_learned": len(train_rows)}
    version = registry.add_version(policy.name, model.to_bytes(), args, "retrain", now, note)
    model.close()
    evaluation = evaluate(store, policy, str(version), ("active", "uniform"), now=now, rows=test_rows,
                          n_boot=n_boot, seed=seed)
    registry.store_evaluation(policy.name, version, evaluation.as_dict() | {"held_out": True}, now)
    return {"version": version, "chosen": args, "search": results, "evaluation": evaluation,
            "train": len(train_rows), "held_out": len(test_rows)}
