"""What the operator's console (service/api/console/) shows of a policy's decision log: figures per
time bucket, per arm, removals by reason, the shadow candidate's agreement. Every query is bounded:
by a time window on `decided_at` (indexed) and, where rows are read one by one, by a LIMIT, so a
page stays fast on a log of any size.

The SQL is the same on both backends but for one expression, the bucket of a time
(`BUCKET`: SQLite's integer cast truncates, PostgreSQL's rounds, so it floors explicitly)."""
from __future__ import annotations

import hashlib
import hmac

from service.store.decisions import REWARD
from service.store.records import unpack_removed

# the number of the bucket a decision falls in: (decided_at - start) // width, for decided_at >= start
BUCKET = "CAST((decided_at - ?) / ? AS INTEGER)"
REMOVALS_READ = 2000  # the newest decisions whose removed arms the console counts
SHADOW_READ = 10000  # the newest shadow scores whose agreement it counts


def _num(x) -> float:
    """A sum as a float: PostgreSQL sums integers as numeric (Decimal), none as NULL."""
    return float(x) if x is not None else 0.0


class ConsoleFigures:
    """Queries for the console; mixed into `Store`."""

    bucket_sql: str = BUCKET

    def console_secret(self) -> bytes:
        """The key that signs the console's session cookies: derived from the store's secret, so
        every gunicorn worker and every replica on the same store agrees, and it never leaves it."""
        return hmac.new(self._secret, b"tactful console session", hashlib.sha256).digest()

    def latest_decision_at(self, policy: str) -> float | None:
        """When the policy's newest decision was made (None before its first): one index lookup."""
        rows = self.query("SELECT decided_at FROM decisions WHERE policy=? ORDER BY seq DESC LIMIT 1", (policy,))
        return rows[0][0] if rows else None

    def decision_buckets(self, policy: str, start: float, width: float, count: int) -> list[dict]:
        """The policy's decisions made in [start, start + width * count), by bucket of `width`
        seconds: how many, sends (any arm but hold), holds, explorations, holdouts; and the shaped
        reward of the final (learned) ones, apart for the holdout group and the rest (sum, count).
        One dict per bucket, every bucket present, oldest first."""
        end = start + width * count
        rows = self.query(
            f"SELECT {self.bucket_sql} AS b, count(*),"
            " sum(CASE WHEN arm <> 'hold' THEN 1 ELSE 0 END),"
            " sum(CASE WHEN mode = 'explore' THEN 1 ELSE 0 END),"
            " sum(CASE WHEN mode = 'holdout' THEN 1 ELSE 0 END),"
            " sum(CASE WHEN mode <> 'holdout' AND reward IS NOT NULL THEN reward END),"
            " sum(CASE WHEN mode <> 'holdout' AND reward IS NOT NULL THEN 1 ELSE 0 END),"
            " sum(CASE WHEN mode = 'holdout' AND reward IS NOT NULL THEN reward END),"
            " sum(CASE WHEN mode = 'holdout' AND reward IS NOT NULL THEN 1 ELSE 0 END)"
            f" FROM (SELECT decided_at, arm, mode, {REWARD} AS reward FROM decisions"
            " WHERE policy=? AND decided_at>=? AND decided_at<?) d GROUP BY b",
            (start, width, policy, start, end))
        out = [{"start": start + i * width, "decisions": 0, "sends": 0, "holds": 0, "explores": 0, "holdouts": 0,
                "reward_sum": 0.0, "rewarded": 0, "holdout_reward_sum": 0.0, "holdout_rewarded": 0}
               for i in range(count)]
        for r in rows:
            b = int(r[0])
            if not 0 <= b < count:
                continue
            n, sends = int(r[1]), int(_num(r[2]))
            out[b].update(decisions=n, sends=sends, holds=n - sends, explores=int(_num(r[3])),
                          holdouts=int(_num(r[4])), reward_sum=_num(r[5]), rewarded=int(_num(r[6])),
                          holdout_reward_sum=_num(r[7]), holdout_rewarded=int(_num(r[8])))
        return out

    def arm_figures(self, policy: str, since: float, until: float) -> dict[str, dict]:
        """Per arm chosen in [since, until): how often, and the sum, the sum of squares and the
        count of the shaped rewards of its final decisions (for a mean and its interval)."""
        rows = self.query(
            "SELECT arm, count(*), sum(reward), sum(reward * reward), count(reward)"
            f" FROM (SELECT arm, {REWARD} AS reward FROM decisions WHERE policy=? AND decided_at>=? AND decided_at<?) d"
            " GROUP BY arm", (policy, since, until))
        return {r[0]: {"chosen": int(r[1]), "reward_sum": _num(r[2]), "reward_squares": _num(r[3]),
                       "rewarded": int(r[4])} for r in rows}

    def removal_reasons(self, policy: str, since: float, until: float, limit: int = REMOVALS_READ) -> dict:
        """The arms removed from the policy's newest `limit` decisions made in [since, until), by
        reason code: how many (decision, arm) removals carried it; and how many decisions were read."""
        rows = self.query("SELECT removed FROM decisions WHERE policy=? AND decided_at>=? AND decided_at<?"
                          " ORDER BY decided_at DESC LIMIT ?", (policy, since, until, limit))
        reasons: dict[str, int] = {}
        for r in rows:
            for rs in (unpack_removed(r[0]) if r[0] else {}).values():
                for code in {reason[0] for reason in rs}:
                    reasons[code] = reasons.get(code, 0) + 1
        return {"decisions_read": len(rows), "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1]))}

    def shadow_agreement(self, policy: str, version: int, since: float, limit: int = SHADOW_READ) -> dict:
        """Of the newest `limit` live decisions since `since` that shadow version `version` scored:
        how many, and on how many it drew the arm that was served."""
        row = self.query(
            "SELECT count(*), sum(CASE WHEN s.arm = d.arm THEN 1 ELSE 0 END) FROM"
            " (SELECT event_id, arm FROM shadow_decisions WHERE policy=? AND version=? AND at>=?"
            " ORDER BY at DESC LIMIT ?) s JOIN decisions d ON d.event_id = s.event_id",
            (policy, version, since, limit))[0]
        return {"scored": int(row[0]), "agreed": int(_num(row[1]))}
