"""Evidence to retire underperformers: each content's value, estimated off-policy, against the best
content and against holding.

For each content, the target policy "send this content": at every logged decision that allowed
it, uniform among its allowed arms (its channels and timings). Its value is the doubly robust
estimate (models/ope) of the shaped reward on those decisions, with its interval; each content is
compared with the best one and with holding by the paired DR difference on the same decisions, so
the noise common to both cancels. A content whose difference with the best AND with holding is surely
negative (the interval's upper end below zero) is a candidate to retire; one that merely had bad
luck -- few decisions allowed it, a wide interval -- is not.

`tactful report contents`, `GET /v1/policies/{policy}/contents/report`, and, for a policy whose
`[safety]` says `auto_retire`, the learner (service/learning/breaker.py) use it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.ope import DR, BanditData, OffPolicyEvaluation, RewardModel, estimate_differences
from service.offline.errors import EvaluationError
from service.offline.evaluate import bandit_data
from service.offline.export import final_decisions
from service.policy import HOLD_ARM, Policy
from service.store import Store
from service.times import to_rfc3339

MIN_DECISIONS = 200  # fewer final decisions: no report (every interval would be too wide to act on)


def content_target(policy: Policy, data: BanditData, content: str) -> np.ndarray:
    """pi (n, K): uniform among the content's allowed arms (decisions that allow one of them)."""
    mine = np.array([a.content is not None and a.content.id == content for a in policy.arms])
    pi = (data.allowed & mine).astype(float)
    counts = pi.sum(axis=1, keepdims=True)
    return np.divide(pi, counts, out=np.zeros_like(pi), where=counts > 0)


def subset(data: BanditData, rows: np.ndarray) -> BanditData:
    """The logged decisions `rows` (a boolean mask) only."""
    idx = np.flatnonzero(rows)
    return replace(data, reward=data.reward[idx], action=data.action[idx], pscore=data.pscore[idx],
                   allowed=data.allowed[idx], user_tokens=[data.user_tokens[i] for i in idx] if data.user_tokens else None,
                   logging_pmf=data.logging_pmf[idx] if data.logging_pmf is not None else None)


def _interval(v: tuple[float, float, float]) -> dict:
    return {"value": v[0], "lo": v[1], "hi": v[2]}


def contents_report(store: Store, policy: Policy, now: float, since: float | None = None,
                    until: float | None = None, alpha: float = 0.05, seed: int = 0) -> dict:
    """Each content's estimated value, against the best content and holding, and the candidates
    to retire, from the policy's final decisions decided in [since, until).

    A content is judged on the decisions that allowed it: its value is what sending it would
    have brought there (not diluted by the decisions where a guardrail or its validity removed
    it), compared, on the same decisions, with holding and with the best content wherever both
    were allowed. Too few such decisions (under `MIN_DECISIONS` / 10): no verdict."""
    rows = list(final_decisions(store, policy, now, since, until))
    if len(rows) < MIN_DECISIONS:
        raise EvaluationError(f"policy {policy.name!r} has {len(rows)} final decisions in that time range; "
                              f"a contents report needs at least {MIN_DECISIONS}")
    data = bandit_data(policy, rows)
    q = OffPolicyEvaluation(data, [DR()], RewardModel(), alpha=alpha, seed=seed).q_cross()
    hold = policy.arm_index.get(HOLD_ARM)
    pis = {c.id: content_target(policy, data, c.id) for c in policy.spec.content}
    allowed = {cid: pi.sum(axis=1) > 0 for cid, pi in pis.items()}
    judged = {cid: mask for cid, mask in allowed.items() if mask.sum() >= MIN_DECISIONS // 10}
    entries = {}
    for cid, mask in judged.items():
        sub = subset(data, mask)
        v = DR().estimate(sub, pis[cid][mask], q[mask])
        entries[cid] = {"content": cid, "decisions": int(mask.sum()), "allowed_share": float(mask.mean()),
                        **_interval((v, *DR().interval(sub, pis[cid][mask], q[mask], alpha)))}
    if not entries:
        raise EvaluationError(f"no content of policy {policy.name!r} was allowed in {MIN_DECISIONS // 10} "
                              f"final decisions of that time range")
    best = max(entries, key=lambda cid: entries[cid]["value"])
    for cid, e in entries.items():
        e["best"] = cid == best
        if hold is not None:
            both = judged[cid] & data.allowed[:, hold]
            e["vs_hold"] = _interval(estimate_differences(subset(data, both), pis[cid][both],
                                                          hold_target(data, hold)[both], q[both], alpha))
        if cid != best:
            both = judged[cid] & judged[best]
            e["vs_best"] = _interval(estimate_differences(subset(data, both), pis[cid][both], pis[best][both],
                                                          q[both], alpha)) if both.any() else None
        e["retire"] = bool(cid != best and e["vs_best"] is not None and e["vs_best"]["hi"] < 0
                           and (hold is None or e["vs_hold"]["hi"] < 0))
    return {"policy": policy.name, "decisions": data.n, "since": to_rfc3339(since), "until": to_rfc3339(until),
            "confidence": 1 - alpha, "estimator": "DR", "best": best,
            "contents": sorted(entries.values(), key=lambda e: -e["value"]),
            "not_judged": sorted(set(pis) - set(judged)),
            "retire": sorted(cid for cid, e in entries.items() if e["retire"])}


def hold_target(data: BanditData, hold: int) -> np.ndarray:
    pi = np.zeros(data.allowed.shape)
    pi[:, hold] = 1.0
    return pi


def evidence(entry: dict, report: dict) -> str:
    """One line saying why a content is a candidate to retire."""
    b, h = entry["vs_best"], entry.get("vs_hold")
    text = (f"estimated shaped reward {entry['value']:+.3f} [{entry['lo']:+.3f}, {entry['hi']:+.3f}] over "
            f"{report['decisions']} decisions; against the best content {report['best']!r} "
            f"{b['value']:+.3f} [{b['lo']:+.3f}, {b['hi']:+.3f}]")
    if h is not None:
        text += f", against holding {h['value']:+.3f} [{h['lo']:+.3f}, {h['hi']:+.3f}]"
    return text + f" ({report['confidence']:.0%} intervals, DR)"
