"""People as the guardrails see them: consent per channel (with the history and source of every
change), preferences, recent contacts, cooldowns and suppression; a person's recent decisions
("why did I get this?"); and erasure. Stored under a key, never under the user id."""
from __future__ import annotations

import json
from typing import Mapping

from service.clock import Clock, request_time
from service.decision.explain import render
from service.policy import Policy
from service.store import Store
from service.times import to_rfc3339


class People:
    def __init__(self, store: Store, policies: Mapping[str, Policy], clock: Clock, lookback: float):
        self.store = store
        self.policies = policies
        self.clock = clock
        self.lookback = lookback  # how far back contacts are shown: the longest any policy looks

    def set_consent(self, user_id: str, channels: dict[str, bool], source: str | None,
                    timestamp: float | None) -> dict:
        now = request_time(self.clock, timestamp)
        key = self.store.person_key(user_id)
        self.store.set_consent(key, channels, source, now)
        return self.person(user_id)

    def person(self, user_id: str) -> dict:
        """A person's state: consent (with the history and source of every change), preferences,
        recent contacts, active cooldowns and suppression, as the guardrails see them now."""
        key = self.store.person_key(user_id)
        now = self.clock.now()
        history = self.store.consent_history(key)
        current: dict[str, bool] = {}
        for h in history:
            current[h["channel"]] = bool(h["granted"])
        row = self.store.person_row(key) or {}
        since = now - self.lookback
        cooldowns = []
        for s in self.store.signals(key):
            for p in self.policies.values():
                c = p.spec.guardrails.cooldown
                length = c.unsubscribe if s["kind"] == "unsubscribe" else c.complaint
                if length and s["at"] + length > now:
                    cooldowns.append({"policy": p.name, "kind": s["kind"], "channel": s["channel"] or "*",
                                      "since": to_rfc3339(s["at"]),
                                      "until": to_rfc3339(s["at"] + length)})
        return {
            "user_id": user_id,
            "consent": current,
            "consent_history": [{"channel": h["channel"], "granted": bool(h["granted"]), "source": h["source"],
                                 "at": to_rfc3339(h["at"])} for h in history],
            "preferences": json.loads(row["preferences"]) if row.get("preferences") else {},
            "preferences_updated_at": to_rfc3339(row.get("preferences_at")),
            "contacts": [{"channel": c["channel"], "at": to_rfc3339(c["at"]), "policy": c["policy"],
                          "event_id": c["event_id"]} for c in self.store.contacts(key, since)],
            "cooldowns": cooldowns,
            "contacts_without_engagement": row.get("unengaged", 0),
            "last_engaged_at": to_rfc3339(row.get("last_engaged_at")),
        }

    def set_preferences(self, user_id: str, preferences: dict, timestamp: float | None) -> dict:
        now = request_time(self.clock, timestamp)
        key = self.store.person_key(user_id)
        self.store.set_preferences(key, preferences, now)
        return self.person(user_id)

    def person_decisions(self, user_id: str, limit: int = 20) -> dict:
        """Recent decisions for a person: what was chosen, what was removed and why."""
        key = self.store.person_key(user_id)
        out = []
        for d in self.store.person_decisions(key, limit):
            policy = self.policies.get(d.policy)
            body = render(policy, d) if policy else {"event_id": d.event_id, "policy": d.policy, "arm": d.arm}
            body["removed_arms"] = {a: [{"reason": r[0], "detail": r[1]} for r in rs] for a, rs in d.removed.items()}
            out.append(body)
        return {"user_id": user_id, "decisions": out}

    def erase(self, user_id: str) -> dict:
        key = self.store.person_key(user_id)
        counts = self.store.erase_person(key)
        return {"user_id": user_id, "erased": True, "deleted": counts}
