"""The learner's review of a policy's contents: every `review_every` (its `[safety]` table), the
contents report (service/offline/contents.py) over the last `review_window` of final decisions,
stored where `GET /v1/policies/{policy}/contents/report` reads it; with `auto_retire`, each
content the report marks as surely worse than the best content and than holding is retired, as
an operator would (`arm_state`, with the evidence as its reason) and recorded (`safety_events`).

It loads scikit-learn (the reward model), so only the learner process builds it
(service/cli/serve.py `learn`), never a web worker."""
from __future__ import annotations

import logging

from service.offline.contents import contents_report, evidence
from service.offline.errors import EvaluationError
from service.policy import Policy
from service.store import Store
from service.store.safety import REPORT

log = logging.getLogger("tactful.safety")



class ContentsReview:
    def __init__(self, store: Store):
        self.store = store
        self._last: dict[str, float] = {}

    def before_step(self, policy: Policy, now: float) -> None:
        """The learner's hook: review when one is due; a failure is logged, never stops learning."""
        try:
            self.review(policy, now)
        except Exception:  # noqa: BLE001
            log.exception("policy %s: the contents review failed", policy.name)

    def review(self, policy: Policy, now: float, force: bool = False) -> dict | None:
        """Write the contents report (and retire what it marks, with `auto_retire`) if one is due."""
        s = policy.spec.safety
        if s is None or s.review_every is None:
            return None
        if not force and now - self._last.get(policy.name, float("-inf")) < s.review_every:
            return None
        self._last[policy.name] = now
        try:
            report = contents_report(self.store, policy, now, since=now - s.review_window)
        except EvaluationError as exc:
            log.info("policy %s: no contents report yet: %s", policy.name, exc)
            return None
        summary = (f"contents report over {report['decisions']} decisions: best {report['best']!r}; "
                   f"candidates to retire: {', '.join(report['retire']) or 'none'}")
        self.store.add_safety_event(policy.name, REPORT, "policy", summary, None, report, now)
        if s.auto_retire:
            states = self.store.arm_states(policy.name)
            for entry in report["contents"]:
                if entry["retire"] and states.get(entry["content"], {}).get("status") != "retired":
                    why = "auto-retired: " + evidence(entry, report)
                    self.store.set_arm_state(policy.name, entry["content"], "retired", None, None, why, now)
                    self.store.add_safety_event(policy.name, "retire", f"content:{entry['content']}", why, None,
                                                entry, now)
                    log.warning("policy %s: content %s %s", policy.name, entry["content"], why)
        return report
