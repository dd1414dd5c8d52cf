"""A Personalizer loop's administration (docs/personalizer.md): its service configuration, its
learning policy (VW arguments), its model (export, import, reset), its log's extent, its
evaluations and the apprentice's agreement with the baseline.

Every change of model is a new immutable model version, activated with a reason (the registry,
registry.py), so `GET /v1/policies/{policy}/models` shows it and a rollback undoes it: a new
learning policy is a fresh model with the new arguments (as Personalizer resets its model when
its policy changes); an import is the given bytes; a reset is a fresh model with the arguments
in force.
"""
from __future__ import annotations

import uuid

from models.vw_policy import VWPolicy, check_model
from service.clock import Clock
from service.errors import BadRequest, NotFound
from service.learning.registry import VersionRegistry
from service.offline.personalizer import evaluate_settings, logged_events
from service.policy import Policy
from service.policy.bandit import ensure_active_version
from service.policy.personalizer import ServiceSettings, learnable, settings_from_json
from service.store import Store
from service.times import parse_time, to_rfc3339

SERVICE = ("service", "settings")
EVALUATION = "evaluation"


class LoopAdmin:
    """The admin calls of one personalizer policy."""

    def __init__(self, store: Store, policy: Policy, clock: Clock):
        self.store, self.policy, self.clock = store, policy, clock
        self.registry = VersionRegistry(store)

    @property
    def name(self) -> str:
        return self.policy.name

    # service configuration ---------------------------------------------------------------------

    def settings(self) -> ServiceSettings:
        return ServiceSettings.from_stored(self.store.personalizer_document(self.name, *SERVICE))

    def service_configuration(self) -> dict:
        s = self.settings()
        body = s.to_json()
        if s.edited_at is not None:
            body["lastConfigurationEditDate"] = to_rfc3339(s.edited_at)
        body["latestApprenticeModeMetrics"] = self.apprentice_metrics()
        return body

    def update_service(self, body: object) -> dict:
        now = self.clock.now()
        s = settings_from_json(body, self.settings())
        s = ServiceSettings(**(s.stored() | {"edited_at": now}))
        self.store.put_personalizer_document(self.name, *SERVICE, s.stored(), now)
        return self.service_configuration()

    def apprentice_metrics(self) -> dict | None:
        """How often the model's favourite was the baseline the apprentice served, over the events
        ranked in Apprentice mode, and the rewards of those it would have imitated."""
        events = [d for d in self.store.mode_decisions(self.name, "fallback")
                  if d.history.get("personalizer", {}).get("learning_mode") == "Apprentice"]
        if not events:
            return None
        imitated = [d for d in events if d.history["personalizer"].get("model_choice") == d.arm]
        return {"startTime": to_rfc3339(events[0].decided_at), "lastProcessedEventTime": to_rfc3339(events[-1].decided_at),
                "numberOfEvents": len(events), "numberOfImitatedEvents": len(imitated),
                "sumOfRewards": sum(d.reward or 0.0 for d in events),
                "sumOfImitatedRewards": sum(d.reward or 0.0 for d in imitated),
                "agreement": len(imitated) / len(events)}

    # learning policy and model -----------------------------------------------------------------

    def active(self) -> dict:
        version = ensure_active_version(self.store, self.policy, self.clock.known())
        return self.store.model(self.name, version) | {"version": version}

    def learning_policy(self) -> dict:
        return {"name": self.name, "arguments": "--cb_explore_adf " + (self.active()["vw_args"] or "")}

    def update_policy(self, body: object) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("arguments"), str):
            raise BadRequest("arguments: the VW arguments of the learning policy, as text", "arguments")
        args = " ".join(t for t in body["arguments"].split() if t not in ("--cb_explore_adf", "--cb_adf"))
        try:
            model = VWPolicy([], args, seed=self.policy.spec.learner.seed)
        except RuntimeError as exc:
            raise BadRequest(f"arguments: VW refuses them: {exc}", "arguments") from None
        try:
            self._publish(model.to_bytes(), args, "personalizer policy", f"learning policy set to {args!r}")
        finally:
            model.close()
        return self.learning_policy()

    def reset_policy(self) -> dict:
        return self.update_policy({"arguments": self.policy.spec.learner.vw_args})

    def reset_model(self) -> None:
        args = self.active()["vw_args"] or ""
        model = VWPolicy([], args, seed=self.policy.spec.learner.seed)
        try:
            self._publish(model.to_bytes(), args, "personalizer reset", "model reset")
        finally:
            model.close()

    def export_model(self) -> bytes:
        return self.active()["model"]

    def import_model(self, data: bytes) -> None:
        if not data:
            raise BadRequest("body: the model file's bytes are missing", "body")
        try:
            check_model(data)
        except RuntimeError as exc:
            raise BadRequest(f"body: not a VW model file VW can load: {exc}", "body") from None
        self._publish(data, self.active()["vw_args"] or "", "import", "model imported")

    def _publish(self, model: bytes, args: str, source: str, reason: str) -> int:
        now = self.clock.now()
        version = self.registry.add_version(self.name, model, args, source, now, {"reason": reason})
        self.registry.activate(self.name, version, reason, now, watch=False)
        return version

    def model_properties(self) -> dict:
        active = self.active()
        versions = self.registry.versions(self.name)
        created = min((v["created_at"] for v in versions if v["created_at"] is not None), default=None)
        current = next(v for v in versions if v["version"] == active["version"])
        return {"creationTime": to_rfc3339(created) if created is not None else None,
                "lastModifiedTime": to_rfc3339(current["created_at"]) if current["created_at"] is not None else None,
                "version": active["version"]}

    def log_properties(self) -> dict:
        extent = self.store.log_extent(self.name)
        return {"dateRange": {"from": to_rfc3339(extent["first"]) if extent["first"] is not None else None,
                              "to": to_rfc3339(extent["last"]) if extent["last"] is not None else None},
                "events": extent["count"]}

    # evaluations -------------------------------------------------------------------------------

    def create_evaluation(self, evaluation_id: str | None, body: object) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", "body")
        since = _time(body.get("startTime"), "startTime")
        until = _time(body.get("endTime"), "endTime")
        policies = body.get("policies") or []
        if not isinstance(policies, list) or not all(
                isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("arguments"), str)
                for p in policies):
            raise BadRequest("policies: a list of {name, arguments}", "policies")
        now = self.clock.now()
        events = logged_events(self.store, self.policy, since, until, now)
        results = evaluate_settings(events, [(p["name"], p["arguments"]) for p in policies],
                                    self.learning_policy()["arguments"])
        evaluation_id = evaluation_id or uuid.uuid4().hex
        doc = {"id": evaluation_id, "name": body.get("name") or evaluation_id,
               "startTime": to_rfc3339(since) if since is not None else None,
               "endTime": to_rfc3339(until) if until is not None else None,
               "creationTime": to_rfc3339(now), "status": "Succeeded", "evaluationType": "Manual",
               "events": sum(1 for e in events if e[2]), "skippedEvents": sum(1 for e in events if not e[2]),
               "policyResults": results,
               "content": {"value": results}}
        self.store.put_personalizer_document(self.name, EVALUATION, evaluation_id, doc, now)
        return doc

    def evaluation(self, evaluation_id: str) -> dict:
        doc = self.store.personalizer_document(self.name, EVALUATION, evaluation_id)
        if doc is None:
            raise NotFound(f"no evaluation with id {evaluation_id!r}", "evaluationId")
        return doc

    def evaluations(self) -> list[dict]:
        return self.store.personalizer_documents(self.name, EVALUATION)

    def delete_evaluation(self, evaluation_id: str) -> None:
        self.store.delete_personalizer_document(self.name, EVALUATION, evaluation_id)


def _time(value: object, field: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: an RFC 3339 date and time", field)
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}", field) from None


__all__ = ["LoopAdmin", "learnable"]
