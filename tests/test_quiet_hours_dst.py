"""Quiet hours and send slots across daylight-saving changes (Europe/Paris, America/New_York).

2026 changes: Paris 29 March 02:00 CET -> 03:00 CEST and 25 October 03:00 CEST -> 02:00 CET;
New York 8 March 02:00 EST -> 03:00 EDT and 1 November 02:00 EDT -> 01:00 EST.
"""
from __future__ import annotations

import tomllib
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.clock import ManualClock
from service.decision.engine import DecideInput
from service.decision.localtime import is_quiet, quiet_end, resolve_send_at
from service.policy import Timing, parse_policy
from service.runtime import build_engine
from service.store import open_store

ROOT = Path(__file__).resolve().parents[1]
PARIS, NEW_YORK = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")


def utc(*args) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def local(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M %Z")


@pytest.mark.parametrize("tz, now, expected_utc, expected_local", [
    # 05:00 local, quiet 21:00-08:00: the send moves to 08:00 local, whatever the offset that day
    (PARIS, utc(2026, 3, 28, 4, 0), utc(2026, 3, 28, 7, 0), "2026-03-28 08:00 CET"),
    (PARIS, utc(2026, 3, 29, 3, 0), utc(2026, 3, 29, 6, 0), "2026-03-29 08:00 CEST"),   # the short night
    (PARIS, utc(2026, 10, 25, 4, 0), utc(2026, 10, 25, 7, 0), "2026-10-25 08:00 CET"),  # the long night
    (PARIS, utc(2026, 10, 24, 3, 0), utc(2026, 10, 24, 6, 0), "2026-10-24 08:00 CEST"),
    (NEW_YORK, utc(2026, 3, 8, 9, 0), utc(2026, 3, 8, 12, 0), "2026-03-08 08:00 EDT"),
    (NEW_YORK, utc(2026, 3, 7, 10, 0), utc(2026, 3, 7, 13, 0), "2026-03-07 08:00 EST"),
    (NEW_YORK, utc(2026, 11, 1, 10, 0), utc(2026, 11, 1, 13, 0), "2026-11-01 08:00 EST"),
    (NEW_YORK, utc(2026, 10, 31, 9, 0), utc(2026, 10, 31, 12, 0), "2026-10-31 08:00 EDT"),
    # 22:30 local the evening before a change: quiet until 08:00 the next (changed) morning
    (PARIS, utc(2026, 3, 28, 21, 30), utc(2026, 3, 29, 6, 0), "2026-03-29 08:00 CEST"),
    (NEW_YORK, utc(2026, 11, 1, 2, 30), utc(2026, 11, 1, 13, 0), "2026-11-01 08:00 EST"),
])
def test_quiet_hours_end_at_local_eight_across_changes(tz, now, expected_utc, expected_local):
    assert is_quiet(now, tz, "21:00", "08:00")
    end = quiet_end(now, tz, "21:00", "08:00")
    assert end == expected_utc and local(end, tz) == expected_local
    assert not is_quiet(end, tz, "21:00", "08:00") and is_quiet(end - 1, tz, "21:00", "08:00")


def test_quiet_hours_ending_inside_the_skipped_hour_end_at_the_jump():
    # quiet 22:00-02:30 on the night Paris skips 02:00-03:00: 02:30 never happens, so quiet
    # hours end at the jump itself, 03:00 CEST (01:00 UTC), not half an hour later
    now = utc(2026, 3, 29, 0, 0)  # 01:00 CET
    end = quiet_end(now, PARIS, "22:00", "02:30")
    assert end == utc(2026, 3, 29, 1, 0) and local(end, PARIS) == "2026-03-29 03:00 CEST"
    assert is_quiet(end - 1, PARIS, "22:00", "02:30")


def test_the_repeated_hour_is_judged_by_its_wall_clock_time():
    # New York repeats 01:00-02:00 on 1 November; quiet 01:30-05:00 covers 01:45 EDT and 01:45 EST
    first, second = utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6, 45)
    assert local(first, NEW_YORK) == "2026-11-01 01:45 EDT" and local(second, NEW_YORK) == "2026-11-01 01:45 EST"
    assert is_quiet(first, NEW_YORK, "01:30", "05:00") and is_quiet(second, NEW_YORK, "01:30", "05:00")
    assert quiet_end(first, NEW_YORK, "01:30", "05:00") == utc(2026, 11, 1, 10, 0)  # 05:00 EST


@pytest.mark.parametrize("tz, day, expected", [
    (PARIS, (2026, 3, 28, 12), utc(2026, 3, 28, 18, 0)),    # 19:00 CET
    (PARIS, (2026, 3, 29, 12), utc(2026, 3, 29, 17, 0)),    # 19:00 CEST
    (PARIS, (2026, 10, 25, 12), utc(2026, 10, 25, 18, 0)),  # 19:00 CET again
    (NEW_YORK, (2026, 3, 8, 12), utc(2026, 3, 8, 23, 0)),   # 19:00 EDT
    (NEW_YORK, (2026, 11, 1, 12), utc(2026, 11, 2, 0, 0)),  # 19:00 EST
])
def test_an_evening_slot_is_seven_pm_local_on_both_sides_of_a_change(tz, day, expected):
    assert resolve_send_at(Timing(name="evening", at="19:00"), utc(*day), tz) == expected


def _engine(tmp_path, action: str):
    data = tomllib.loads((ROOT / "examples/policies/lifecycle.toml").read_text())
    data["guardrails"]["quiet_hours"]["action"] = action
    data["learner"]["holdout_share"] = 0.0
    policies = {"lifecycle": parse_policy(data)}
    store = open_store(str(tmp_path / "q.db"))
    clock = ManualClock(utc(2026, 3, 29, 3, 0))  # 05:00 in Paris, the morning clocks went forward
    engine = build_engine(store, policies, clock, refresh_seconds=0)
    engine.ensure_models()
    return engine


def test_decisions_move_now_slots_to_the_end_of_quiet_hours_in_the_persons_zone(tmp_path):
    engine = _engine(tmp_path, "move")
    engine.people.set_consent("nyc", {"push": True, "email": True}, "app", None)
    engine.people.set_preferences("nyc", {"timezone": "America/New_York"}, None)
    engine.people.set_consent("paris", {"push": True, "email": True}, "app", None)
    for user, tz, end in (("paris", PARIS, utc(2026, 3, 29, 6, 0)), ("nyc", NEW_YORK, utc(2026, 3, 29, 12, 0))):
        r = engine.decide("lifecycle", DecideInput(user, {"segment": "s"}))
        moved = r["explanation"]["moved_out_of_quiet_hours"]
        assert moved["push:now"]["to"] == datetime.fromtimestamp(end, timezone.utc).isoformat().replace("+00:00", "Z")
        assert "in_app:now" not in moved  # the example's quiet hours leave in-app messages alone
        e = engine.event(r["event_id"])
        assert e["explanation"]["history"]["recency"] == "never"
        if not r["action"]["hold"] and r["action"]["channel"] != "in_app":
            sent = datetime.fromisoformat(r["action"]["send_at"].replace("Z", "+00:00")).timestamp()
            assert not is_quiet(sent, tz, "21:00", "08:00")


def test_decisions_remove_quiet_slots_when_the_policy_says_remove(tmp_path):
    engine = _engine(tmp_path, "remove")
    engine.people.set_consent("paris", {"push": True}, "app", None)
    r = engine.decide("lifecycle", DecideInput("paris", {"segment": "s"}))
    e = engine.event(r["event_id"])
    quiet = {a for a, rs in e["removed_arms"].items() if any(x["reason"] == "quiet_hours" for x in rs)}
    # email, push and sms at 05:00 are quiet; their evening (19:00) and next-morning (09:00)
    # slots are not, and the example's quiet hours leave in-app messages alone
    assert quiet == {a for a in engine.policies["lifecycle"].arm_index
                     if a.endswith((":push:now", ":email:now", ":sms:now"))}
    assert all(a["arm"] not in quiet for a in e["allowed"])
