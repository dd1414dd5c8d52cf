"""The target policies an evaluation scores, each as pi (n, K): its probability of every arm at
every logged decision, zero outside the arms that decision allowed.

What `tactful evaluate --candidate` and `--baseline` accept:
  an integer or `vN`   a stored model version of the policy
  a file path          a VW model file (trained with --cb_explore_adf, e.g. from an exported vw file)
  active               the policy's active model version
  uniform              uniform random choice among each decision's allowed arms
  logged               the policy that logged the decisions (its value is the observed mean reward)
  fallback             always the policy's fallback arm when allowed, else uniform
  bts-zozotown         Bernoulli Thompson sampling with the ZOZOTOWN prior (OBD logs only; see
                       service/offline/obd.py)

Every target is scored on the same allowed arms the logged decision had: guardrails do not depend
on the policy, so a candidate could have chosen among exactly those arms.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import vowpalwabbit as vw
from tqdm import tqdm

from models.featurize import shared_line
from models.ope import BanditData
from models.vw_policy import VWPolicy
from service.offline.errors import EvaluationError
from service.offline.export import LoggedDecision
from service.offline.obd import bts_target
from service.policy import Policy
from service.policy.bandit import arm_lines
from service.store import Store


def uniform_target(data: BanditData) -> np.ndarray:
    return data.allowed / data.allowed.sum(axis=1, keepdims=True)


def logged_target(data: BanditData) -> np.ndarray:
    return data.logging_pmf / data.logging_pmf.sum(axis=1, keepdims=True)


def fallback_target(policy: Policy, data: BanditData) -> np.ndarray:
    fb = policy.arm_index[policy.spec.learner.fallback_arm]
    pi = uniform_target(data)
    has = data.allowed[:, fb]
    pi[has] = 0.0
    pi[has, fb] = 1.0
    return pi


def model_target(policy: Policy, rows: Sequence[LoggedDecision], model: VWPolicy, progress: bool = False,
                 label: str = "scoring") -> np.ndarray:
    pi = np.zeros((len(rows), len(policy.arms)))
    for i, row in enumerate(tqdm(rows, desc=label, unit="dec", disable=not progress, leave=False)):
        d = row.decision
        idx = [policy.arm_index[a] for a in d.allowed]
        pi[i, idx] = model.predict(shared_line(d.context, d.history), idx)
    return pi


def load_model(policy: Policy, store: Store, spec: str) -> tuple[str, VWPolicy, int | None]:
    """A stored version (`3`, `v3`, `active`) or a VW model file."""
    version = None
    if spec == "active":
        version = store.active_version(policy.name)
        if version is None:
            raise EvaluationError(f"policy {policy.name!r} has no active model version")
    elif re.fullmatch(r"v?\d+", spec):
        version = int(spec.lstrip("v"))
    if version is not None:
        row = store.model(policy.name, version)
        if row is None:
            raise EvaluationError(f"policy {policy.name!r} has no model version {version}")
        data, label = row["model"], f"v{version}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise EvaluationError(f"{spec!r} is neither a model version, a known baseline "
                                  f"(active, uniform, logged, fallback) nor a model file")
        data, label = path.read_bytes(), path.name
    try:
        model = VWPolicy(arm_lines(policy), model_bytes=data)
    except RuntimeError as exc:
        raise EvaluationError(f"{label}: VW cannot load this model: {exc}") from None
    if model.ws.get_prediction_type() != vw.PredictionType.ACTION_PROBS:
        model.close()
        raise EvaluationError(f"{label}: not a --cb_explore_adf model; train with `vw --cb_explore_adf -d FILE -f MODEL`")
    return label, model, version


def resolve_target(policy: Policy, store: Store, spec: str, rows: Sequence[LoggedDecision], data: BanditData,
                   progress: bool = False) -> tuple[str, np.ndarray, int | None]:
    """(label, pi (n, K), stored version or None) of a target named on the command line."""
    spec = spec.strip()
    if spec == "uniform":
        return "uniform", uniform_target(data), None
    if spec == "logged":
        return "logged", logged_target(data), None
    if spec == "fallback":
        return "fallback", fallback_target(policy, data), None
    if spec == "bts-zozotown":
        return "bts-zozotown", bts_target(policy, rows), None
    label, model, version = load_model(policy, store, spec)
    try:
        pi = model_target(policy, rows, model, progress, f"scoring {label}")
    finally:
        model.close()
    if spec == "active":
        label = f"active ({label})"
    return label, pi, version
