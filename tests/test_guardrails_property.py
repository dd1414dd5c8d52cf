"""Property tests: over random policies, person states, histories and clocks, the real decision
path (real SQLite store, real VW model, real guardrails) removes exactly the arms a reference
says are disallowed, each with exactly its reasons, and never chooses a disallowed arm.

The reference below is written independently of service/decision/guardrails.py, as plainly as possible:
quiet hours by scanning minute by minute in local wall-clock time, caps by counting the points
of every window that starts at a contact, gaps by comparing every pair.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.clock import ManualClock
from service.decision.engine import DecideInput, DeliveryInput
from service.decision.localtime import resolve_send_at
from service.errors import Conflict
from service.policy.reload import PolicyReloads
from service.policy import parse_policy
from service.runtime import build_engine
from service.store import Store, open_store

CHANNELS = ["email", "push", "sms", "in_app"]
TOPICS = ["onboarding", "promotion", "loyalty"]
ZONES = ["Europe/Paris", "America/New_York", "UTC", "Asia/Kolkata", "Australia/Lord_Howe"]
HOUR, DAY = 3600.0, 86400.0
# moments near the 2026 daylight-saving changes of Paris and New York, and ordinary ones
DST_MOMENTS = [datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc), datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc),
               datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc), datetime(2026, 11, 1, 6, 0, tzinfo=timezone.utc),
               datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc), datetime(2026, 1, 10, 23, 0, tzinfo=timezone.utc)]

hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))


@st.composite
def policies(draw):
    channels = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=4, unique=True))
    n_content = draw(st.integers(1, 3))
    content = []
    for i in range(n_content):
        c = {"id": f"c{i}", "topic": draw(st.sampled_from(TOPICS))}
        if draw(st.booleans()):
            base = draw(st.sampled_from(DST_MOMENTS)).timestamp() + draw(st.integers(-3, 3)) * DAY
            if draw(st.booleans()):
                c["valid_from"] = datetime.fromtimestamp(base, timezone.utc)
            else:
                c["valid_until"] = datetime.fromtimestamp(base, timezone.utc)
        content.append(c)
    timing = [{"name": "now", "delay_minutes": 0}]
    if draw(st.booleans()):
        timing.append({"name": "later", "delay_minutes": draw(st.sampled_from([30, 90, 600]))})
    for j, at in enumerate(draw(st.lists(hhmm, max_size=2, unique=True))):
        timing.append({"name": f"at{j}", "at": at})
    caps = [{"channel": draw(st.sampled_from(["*", *channels])), "max": draw(st.integers(0, 3)),
             "window": draw(st.sampled_from(["1h", "1d", "7d"]))} for _ in range(draw(st.integers(0, 3)))]
    g: dict = {"consent": {ch: draw(st.sampled_from(["opt_in", "opt_out"])) for ch in channels
                           if draw(st.booleans())},
               "caps": caps,
               "cooldown": {"unsubscribe": draw(st.sampled_from(["1d", "30d", "off"])),
                            "complaint": draw(st.sampled_from(["2d", "90d", "off"]))}}
    if draw(st.booleans()):
        g["min_gap"] = draw(st.sampled_from(["1h", "4h"]))
    if draw(st.booleans()):
        start, end = draw(hhmm), draw(hhmm)
        assume(start != end)
        g["quiet_hours"] = {"start": start, "end": end, "action": draw(st.sampled_from(["move", "remove"]))}
        if draw(st.booleans()):
            g["quiet_hours"]["channels"] = draw(st.lists(st.sampled_from(channels), min_size=1, unique=True))
    if draw(st.booleans()):
        g["suppression"] = {"after": draw(st.integers(1, 3)),
                            "allow": [{"channel": draw(st.sampled_from(channels))}] if draw(st.booleans()) else []}
    if draw(st.booleans()):
        g["blocked_topics"] = draw(st.lists(st.sampled_from(TOPICS), max_size=1))
    if draw(st.booleans()):
        g["daily_budget"] = draw(st.integers(0, 2))
    hold = draw(st.booleans())
    data = {"name": "p", "timezone": draw(st.sampled_from(ZONES)), "channels": channels, "content": content,
            "timing": timing, "arms": {"hold": hold}, "features": {"segment": {"type": "string"}},
            "guardrails": g,
            "reward": {"weights": {"click": 1.0, "unsubscribe": -5.0, "complaint": -10.0}},
            "learner": {"fallback_arm": "hold" if hold else f"c0:{channels[0]}:now"}}
    return data


@st.composite
def people(draw, data):
    channels, contents = data["channels"], [c["id"] for c in data["content"]]
    now = draw(st.sampled_from(DST_MOMENTS)).timestamp() + draw(st.integers(-48, 48)) * 1800.0 + draw(st.integers(0, 59))
    prefs: dict = {}
    if draw(st.booleans()):
        prefs["timezone"] = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        prefs["blocked_channels"] = draw(st.lists(st.sampled_from(channels), max_size=1))
    if draw(st.booleans()):
        prefs["blocked_topics"] = draw(st.lists(st.sampled_from(TOPICS), max_size=1))
    if draw(st.booleans()):
        prefs["max_contacts_per_week"] = draw(st.integers(0, 3))
    if draw(st.booleans()):
        start, end = draw(hhmm), draw(hhmm)
        assume(start != end)
        prefs["quiet_hours"] = {"start": start, "end": end}
    consent = {ch: draw(st.sampled_from([True, False, None])) for ch in channels}
    # contacts in the past ten days, and some already scheduled in the next two
    contacts = [(draw(st.sampled_from(channels)), now + draw(st.integers(-10 * 24, 2 * 24)) * HOUR
                 + draw(st.integers(0, 3599))) for _ in range(draw(st.integers(0, 6)))]
    signals = [(draw(st.sampled_from(["unsubscribe", "complaint"])), draw(st.sampled_from(channels)),
                now - draw(st.integers(0, 40 * 24)) * HOUR) for _ in range(draw(st.integers(0, 2)))]
    targets = contents + [f"{c}:{ch}:{t['name']}" for c in contents for ch in channels for t in data["timing"]]
    arm_state = {}
    for target in draw(st.lists(st.sampled_from(targets), max_size=2, unique=True)):
        status = draw(st.sampled_from(["active", "retired", "out_of_stock"]))
        window = draw(st.sampled_from([None, "from", "until"]))
        edge = now + draw(st.integers(-24, 36)) * HOUR
        arm_state[target] = {"status": status, "valid_from": edge if window == "from" else None,
                             "valid_until": edge if window == "until" else None}
    # the request's eligible sets (None: no restriction)
    only_contents = draw(st.none() | st.lists(st.sampled_from(contents), min_size=1, unique=True))
    only_channels = draw(st.none() | st.lists(st.sampled_from(channels), min_size=1, unique=True))
    return {"now": now, "prefs": prefs, "consent": consent, "contacts": contacts, "signals": signals,
            "unengaged": draw(st.integers(0, 4)), "arm_state": arm_state, "budget_used": draw(st.integers(0, 2)),
            "contents": only_contents, "channels": only_channels}


# -- the reference ------------------------------------------------------------------------------

def _wall_quiet(t: float, tz: ZoneInfo, start: str, end: str) -> bool:
    local = datetime.fromtimestamp(t, tz)
    now_s = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    a = int(start[:2]) * 3600 + int(start[3:]) * 60
    b = int(end[:2]) * 3600 + int(end[3:]) * 60
    return a <= now_s < b if a < b else (now_s >= a or now_s < b)


def _cap_broken(points: list[float], t: float, window: float, limit: int) -> bool:
    allp = points + [t]
    for s in allp:
        if s <= t < s + window and sum(1 for p in allp if s <= p < s + window) > limit:
            return True
    return False


def reference(data: dict, person: dict, policy) -> tuple[dict[str, set[str]], dict[str, float]]:
    """arm -> reason codes (empty: allowed), and each arm's send time."""
    g = data["guardrails"]
    prefs, now = person["prefs"], person["now"]
    tz = ZoneInfo(prefs.get("timezone") or data["timezone"])
    quiet = []
    if "quiet_hours" in g:
        q = g["quiet_hours"]
        quiet.append((q["start"], q["end"], set(q.get("channels") or data["channels"])))
    if "quiet_hours" in prefs:
        quiet.append((prefs["quiet_hours"]["start"], prefs["quiet_hours"]["end"], set(data["channels"])))
    action = g.get("quiet_hours", {}).get("action", "move")
    cd = {k: {"1d": DAY, "30d": 30 * DAY, "2d": 2 * DAY, "90d": 90 * DAY, "off": None}[v]
          for k, v in g["cooldown"].items()}
    gap = {"1h": HOUR, "4h": 4 * HOUR}.get(g.get("min_gap"))
    windows = {"1h": HOUR, "1d": DAY, "7d": 7 * DAY}
    blocked_topics = set(g.get("blocked_topics", [])) | set(prefs.get("blocked_topics", []))
    out: dict[str, set[str]] = {}
    times: dict[str, float] = {}
    for arm in policy.arms:
        if arm.hold:
            out[arm.id] = set()
            continue
        ch, c = arm.channel, arm.content
        reasons = set()
        t = resolve_send_at(arm.timing, now, tz)
        rules = [(a, b) for a, b, chans in quiet if ch in chans]
        if action == "remove":
            if any(_wall_quiet(t, tz, a, b) for a, b in rules):
                reasons.add("quiet_hours")
        else:
            if any(_wall_quiet(t, tz, a, b) for a, b in rules):
                t0 = t
                t = math.ceil(t / 60) * 60.0
                while any(_wall_quiet(t, tz, a, b) for a, b in rules) and t < t0 + 2 * DAY:
                    t += 60.0
                if t >= t0 + 2 * DAY:  # the quiet periods together cover the whole day
                    reasons.add("quiet_hours")
                    t = t0
        times[arm.id] = t
        granted = person["consent"].get(ch)
        if granted is False or (granted is None and g["consent"].get(ch, "opt_in") == "opt_in"):
            reasons.add("no_consent")
        if ch in prefs.get("blocked_channels", []):
            reasons.add("channel_blocked")
        for kind, sch, at in person["signals"]:
            if kind == "unsubscribe" and sch == ch and cd["unsubscribe"] and now < at + cd["unsubscribe"]:
                reasons.add("cooldown_unsubscribe")
            if kind == "complaint" and cd["complaint"] and now < at + cd["complaint"]:
                reasons.add("cooldown_complaint")
        if g.get("daily_budget") is not None and person["budget_used"] >= g["daily_budget"]:
            reasons.add("daily_budget")
        every = [at for _, at in person["contacts"]]
        for cap in g["caps"]:
            pts = every if cap["channel"] == "*" else [at for cch, at in person["contacts"] if cch == ch]
            if cap["channel"] in ("*", ch) and _cap_broken(pts, t, windows[cap["window"]], cap["max"]):
                reasons.add("frequency_cap")
        if "max_contacts_per_week" in prefs and _cap_broken(every, t, 7 * DAY, prefs["max_contacts_per_week"]):
            reasons.add("personal_cap")
        if gap and any(abs(p - t) < gap for p in every):
            reasons.add("min_gap")
        if c.topic in blocked_topics:
            reasons.add("blocked_topic")
        if c.valid_from is not None and t < c.valid_from.timestamp():
            reasons.add("not_yet_valid")
        if c.valid_until is not None and t >= c.valid_until.timestamp():
            reasons.add("expired")
        for target in (c.id, arm.id):
            s = person["arm_state"].get(target)
            if s:
                if s["status"] != "active":
                    reasons.add(s["status"])
                if s["valid_from"] is not None and t < s["valid_from"]:
                    reasons.add("not_yet_valid")
                if s["valid_until"] is not None and t >= s["valid_until"]:
                    reasons.add("expired")
        sup = g.get("suppression")
        if sup and person["unengaged"] >= sup["after"] and not any(
                r["channel"] == ch for r in sup["allow"]):
            reasons.add("suppressed")
        if person["contents"] is not None and c.id not in person["contents"]:
            reasons.add("not_eligible_content")
        if person["channels"] is not None and ch not in person["channels"]:
            reasons.add("not_eligible_channel")
        out[arm.id] = reasons
    return out, times


# -- arranging the state in the real store ---------------------------------------------------------

_counter = itertools.count()


def arrange(store: Store, policy_name: str, key: str, person: dict, policy) -> None:
    now = person["now"]
    channels = {ch: g for ch, g in person["consent"].items() if g is not None}
    if channels:
        store.set_consent(key, channels, "test", now - DAY)
    if person["prefs"]:
        store.set_preferences(key, person["prefs"], now - DAY)
    with store.write() as conn:
        for ch, at in person["contacts"]:
            conn.execute("INSERT INTO contacts(person_key, channel, at, event_id, policy) VALUES (?,?,?,?,?)",
                         (key, ch, at, "earlier", "other-policy"))
        for kind, ch, at in person["signals"]:
            conn.execute("INSERT INTO signals(person_key, kind, channel, at, event_id) VALUES (?,?,?,?,?)",
                         (key, kind, ch if kind == "unsubscribe" else None, at, "earlier"))
        conn.execute("INSERT INTO people(person_key, unengaged, rev) VALUES (?,?,0) ON CONFLICT(person_key) "
                     "DO UPDATE SET unengaged=excluded.unengaged", (key, person["unengaged"]))
        for target, s in person["arm_state"].items():
            conn.execute("INSERT INTO arm_state(policy, target, status, valid_from, valid_until, reason, updated_at)"
                         " VALUES (?,?,?,?,?,?,?)", (policy_name, target, s["status"], s["valid_from"],
                                                       s["valid_until"], "test", now - DAY))
        day = datetime.fromtimestamp(now, policy.tz).date().isoformat()
        conn.execute("INSERT INTO budget(policy, day, used) VALUES (?,?,?)", (policy_name, day, person["budget_used"]))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(str(tmp_path_factory.mktemp("prop") / "prop.db"))
    yield s
    s.close()


@settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_removed_arms_are_exactly_the_disallowed_ones(store, data):
    spec = data.draw(policies())
    person = data.draw(people(spec))
    name = f"p{next(_counter)}"
    spec = dict(spec, name=name)
    policy = parse_policy(spec)
    engine = build_engine(store, {name: policy}, ManualClock(person["now"]), refresh_seconds=0)
    engine.ensure_models()
    user = f"user-{name}"
    arrange(store, name, store.person_key(user), person, policy)

    answer = engine.decide(name, DecideInput(user, {"segment": "s"}, contents=person["contents"],
                                             channels=person["channels"]))
    event = engine.event(answer["event_id"])
    expected, times = reference(spec, person, policy)

    got = {a: {r["reason"] for r in rs} for a, rs in event["removed_arms"].items()}
    want = {a: codes for a, codes in expected.items() if codes}
    assert got == want
    allowed = [a["arm"] for a in event["allowed"]]
    assert set(allowed) == {a for a, codes in expected.items() if not codes}
    chosen = answer["action"]["arm"]
    if allowed:
        assert chosen in allowed and not expected[chosen]
        assert sum(a["probability"] for a in event["allowed"]) == pytest.approx(1.0)
        assert all(a["probability"] > 0 for a in event["allowed"]) or answer["mode"] in ("holdout", "fallback")
    else:  # everything removed (a policy without a hold arm): a hold with the reasons
        assert answer["action"]["hold"] and chosen == "hold" and answer["mode"] == "fallback"
        assert answer["removed"]["count"] == len(policy.arms)
    counts: dict[str, int] = {}
    for codes in want.values():
        for code in codes:
            counts[code] = counts.get(code, 0) + 1
    assert answer["removed"]["reasons"] == counts
    if not answer["action"]["hold"]:
        sent = datetime.fromisoformat(answer["action"]["send_at"].replace("Z", "+00:00")).timestamp()
        assert sent == pytest.approx(times[chosen], abs=1e-3)
        tz = ZoneInfo(person["prefs"].get("timezone") or spec["timezone"])
        for rule in ([spec["guardrails"].get("quiet_hours")] + [person["prefs"].get("quiet_hours")]):
            if rule and answer["action"]["channel"] in (rule.get("channels") or spec["channels"]):
                assert not _wall_quiet(sent, tz, rule["start"], rule["end"])


# -- decides, delivery reports and time, in any order ----------------------------------------------

@st.composite
def campaigns(draw):
    """A policy with caps, maybe a minimum gap and a daily budget, everyone's consent; and a
    sequence of decides (with eligible sets), delivery reports on earlier decisions, catalog
    changes (contents added, changed, retired) and time."""
    channels = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3, unique=True))
    caps = [{"channel": draw(st.sampled_from(["*", *channels])), "max": draw(st.integers(1, 3)),
             "window": draw(st.sampled_from(["1h", "1d", "7d"]))} for _ in range(draw(st.integers(1, 3)))]
    g: dict = {"caps": caps, "consent": {ch: "opt_out" for ch in channels}}
    if draw(st.booleans()):
        g["min_gap"] = draw(st.sampled_from(["1h", "4h"]))
    if draw(st.booleans()):
        g["daily_budget"] = draw(st.integers(1, 4))
    timing = [{"name": "now", "delay_minutes": 0}, {"name": "later", "delay_minutes": 90}]
    data = {"name": "p", "timezone": "UTC", "channels": channels, "timing": timing, "arms": {"hold": True},
            "content": [{"id": "c0", "topic": "promotion"}, {"id": "c1", "topic": "loyalty"}],  # c0: the fallback's
            "features": {"segment": {"type": "string"}}, "guardrails": g,
            "reward": {"weights": {"click": 1.0}}, "learner": {"fallback_arm": "c0:%s:now" % channels[0]}}
    steps = draw(st.lists(st.one_of(
        st.tuples(st.just("decide"), st.integers(0, 1),
                  st.none() | st.lists(st.sampled_from(["c0", "c1", "c2", "c3"]), min_size=1, unique=True),
                  st.none() | st.lists(st.sampled_from(channels), min_size=1, unique=True)),
        st.tuples(st.just("report"), st.integers(0, 50), st.sampled_from(["sent", "not_sent", "bounced", "failed"])),
        st.tuples(st.just("wait"), st.sampled_from([60.0, 1800.0, 3 * HOUR, DAY])),
        st.tuples(st.just("catalog"), st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["put", "delete"]))),
        min_size=4, max_size=30))
    return data, steps


def check_live_contacts(store: Store, policy, spec: dict) -> None:
    """The contacts the store holds are exactly the sends not reported undelivered, and they keep
    every cap, the minimum gap and the daily budget, judged independently of the guardrails."""
    sends = store.query("SELECT event_id, person_key, channel, send_at, delivery, history FROM decisions"
                        " WHERE policy=? AND channel IS NOT NULL", (policy.name,))
    live = [r for r in sends if r["delivery"] not in ("not_sent", "bounced", "failed")]
    held = store.query("SELECT event_id FROM contacts WHERE policy=?", (policy.name,))
    assert sorted(r[0] for r in held) == sorted(r["event_id"] for r in live)
    g = spec["guardrails"]
    windows = {"1h": HOUR, "1d": DAY, "7d": 7 * DAY}
    for key in {r["person_key"] for r in live}:
        mine = sorted((r["send_at"], r["channel"]) for r in live if r["person_key"] == key)
        for cap in g["caps"]:
            pts = [t for t, ch in mine if cap["channel"] in ("*", ch)]
            for s in pts:  # the fullest window starts at a contact
                assert sum(1 for p in pts if s <= p < s + windows[cap["window"]]) <= cap["max"]
        gap = {"1h": HOUR, "4h": 4 * HOUR}.get(g.get("min_gap"))
        if gap:
            assert all(b[0] - a[0] >= gap for a, b in zip(mine, mine[1:]))
    if "daily_budget" in g:
        days: dict[str, int] = {}
        for r in live:
            day = json.loads(r["history"])["budget_day"]
            days[day] = days.get(day, 0) + 1
        for day, used in days.items():
            assert used <= g["daily_budget"]
            assert store.query("SELECT used FROM budget WHERE policy=? AND day=?", (policy.name, day))[0][0] == used


@settings(max_examples=max(10, int(os.environ.get("PROPERTY_EXAMPLES", "300")) // 3), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_sequence_of_decides_delivery_reports_and_catalog_changes_exceeds_a_cap(store, data):
    spec, steps = data.draw(campaigns())
    name = f"q{next(_counter)}"
    spec = dict(spec, name=name)
    policy = parse_policy(spec)
    clock = ManualClock(DST_MOMENTS[4].timestamp())
    engine = build_engine(store, {name: policy}, clock, refresh_seconds=0)
    engine.ensure_models()
    catalog = PolicyReloads(store, engine.policies, engine.use_policy, refresh_seconds=0)
    events: list[str] = []
    offered = {"c0", "c1"}  # what the catalog offers, tracked here from the changes made
    for step in steps:
        if step[0] == "decide":
            _, user, contents, channels = step
            if contents is not None:  # the offered ones (none of them offered now: no restriction)
                contents = [c for c in contents if c in offered] or None
            answer = engine.decide(name, DecideInput(f"{name}-u{user}", {"segment": "s"}, contents=contents,
                                                     channels=channels))
            shown = engine.event(answer["event_id"])
            arms = [a["arm"] for a in shown["allowed"]] + list(shown["removed_arms"])
            assert {a.split(":")[0] for a in arms if a != "hold"} == offered  # retired ones are no arms
            if not answer["action"]["hold"]:
                events.append(answer["event_id"])
                assert contents is None or answer["action"]["content"] in contents
                assert channels is None or answer["action"]["channel"] in channels
        elif step[0] == "report" and events:
            try:
                engine.record_delivery(events[step[1] % len(events)], DeliveryInput(step[2]))
            except Conflict:
                pass  # a contradiction (not_sent, then sent) is refused and changes nothing
        elif step[0] == "wait":
            clock.advance(step[1])
        elif step[0] == "catalog" and (step[2] == "put" or step[1] in offered):
            fields = {"topic": "promotion", "tags": ["t"]} if step[2] == "put" else None
            catalog.change_content(name, step[1], fields, clock.now(), "test", None)
            offered = offered | {step[1]} if fields else offered - {step[1]}
        check_live_contacts(store, policy, spec)
