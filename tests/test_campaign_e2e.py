"""A campaign tool's loop on a real `tactful serve` (gunicorn workers, a learner): retries of one
decide, on every worker and on two PostgreSQL replicas at once, are one decision and one
reservation; a `not_sent` delivery report frees the cap for the next decide; eligible sets remove
the other arms with their reasons; an edited policy file is served by every worker within 2
seconds of a reload (HTTP or SIGHUP), and an invalid one is refused while the old one serves on; a
content added (or retired) over HTTP is offered (or refused) by every worker within 2 seconds, and
still after a restart. docs/integration.md walks the same loop with curl."""
from __future__ import annotations

import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serving import ROOT, serve, start_serve  # noqa: F401  (fixture)
from test_replicas import CHANNELS, START, at, consent, one_row, replicas  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

ASK = {"user_id": "carol", "context": {"segment": "s"}}
PUSH_JOURNEY = ASK | {"contents": ["spring_sale"], "channels": ["push"]}


def post(base: str, path: str, body: dict, **kw) -> requests.Response:
    return requests.post(f"{base}{path}", json=body, timeout=60, **kw)


def test_retries_on_every_worker_are_one_decision_and_one_reservation(serve):
    http, base = serve(workers=3)
    assert http.put(f"{base}/v1/users/carol/consent", json={"channels": {"email": True, "push": True}}).ok
    body = ASK | {"request_id": "journey-7:carol:step-1"}
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: post(base, "/v1/policies/lifecycle/decide", body), range(20)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    assert len({a.text for a in answers}) == 1  # every retry got the same answer, byte for byte
    decision = answers[0].json()
    person = http.get(f"{base}/v1/users/carol").json()
    assert [c["event_id"] for c in person["contacts"]] == ([] if decision["action"]["hold"]
                                                           else [decision["event_id"]])
    logged = http.get(f"{base}/v1/users/carol/decisions").json()["decisions"]
    assert [d["event_id"] for d in logged] == [decision["event_id"]]


def journey_reasons(http, base: str, answer: dict) -> set[str]:
    removed = http.get(f"{base}/v1/events/{answer['event_id']}").json()["removed_arms"]
    return {r["reason"] for arm, rs in removed.items() if arm.startswith("spring_sale:push:") for r in rs}


def test_a_not_sent_report_frees_the_cap_for_the_next_decide(serve):
    http, base = serve(workers=2)
    assert http.put(f"{base}/v1/users/carol/consent", json={"channels": {"push": True}}).ok
    decide = lambda: post(base, "/v1/policies/lifecycle/decide", PUSH_JOURNEY).json()  # noqa: E731
    first = next(a for a in (decide() for _ in range(60)) if not a["action"]["hold"])
    capped = decide()  # one push a day: the journey's push arms are capped
    assert capped["action"]["hold"] and "frequency_cap" in journey_reasons(http, base, capped)
    r = post(base, f"/v1/events/{first['event_id']}/delivery", {"status": "not_sent", "reason": "provider outage"})
    assert r.status_code == 202 and r.json()["released"] is True
    freed = decide()
    assert not journey_reasons(http, base, freed) & {"frequency_cap", "min_gap"}
    event = http.get(f"{base}/v1/events/{first['event_id']}").json()
    assert event["delivery"]["status"] == "not_sent" and event["delivery"]["reports"][0]["reason"] == "provider outage"


def test_eligible_sets_remove_the_other_arms_with_their_reasons(serve):
    http, base = serve(workers=2)
    assert http.put(f"{base}/v1/users/carol/consent", json={"channels": {"email": True, "push": True}}).ok
    answer = post(base, "/v1/policies/lifecycle/decide",
                  ASK | {"contents": ["win_back", "loyalty_reward"], "channels": ["email"]}).json()
    event = http.get(f"{base}/v1/events/{answer['event_id']}").json()
    assert {a["arm"] for a in event["allowed"]} <= {"hold"} | {
        f"{c}:email:{t}" for c in ("win_back", "loyalty_reward") for t in ("now", "evening", "next_morning")}
    codes = {arm: {r["reason"] for r in rs} for arm, rs in event["removed_arms"].items()}
    assert "not_eligible_channel" in codes["win_back:push:now"]
    assert "not_eligible_content" in codes["spring_sale:email:now"]
    assert {"not_eligible_content", "not_eligible_channel"} <= codes["spring_sale:sms:evening"]
    assert answer["removed"]["reasons"]["not_eligible_content"] == 45  # 4 contents x 4 channels x 3, no welcome sms
    bad = post(base, "/v1/policies/lifecycle/decide", ASK | {"contents": ["win_back", "nope"]})
    assert bad.status_code == 400 and bad.json()["field"] == "contents[1]"


def test_a_retry_on_the_other_replica_is_the_same_decision(replicas):
    """Two replicas on one PostgreSQL, a tool retrying one decide on both at once: one decision,
    one contact, the same answer everywhere."""
    url, ((_, a), (_, b)) = replicas(2)
    consent(a, "carol", CHANNELS)
    body = ASK | {"request_id": "retry-on-both", "timestamp": at(START)}
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: post((a, b)[i % 2], "/v1/policies/lifecycle/decide", body), range(20)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200][:3]
    assert len({r.text for r in answers}) == 1
    assert one_row(url, "SELECT count(*) FROM decisions")[0] == 1
    expected = 0 if answers[0].json()["action"]["hold"] else 1
    assert one_row(url, "SELECT count(*) FROM contacts")[0] == expected


def test_edited_policy_files_reload_on_post_and_sighup_and_an_invalid_one_is_kept(tmp_path):
    """A real server with two workers: a content added to the file is served by every worker
    within 2 seconds of a POST .../reload, then of a SIGHUP to `tactful serve`; a file that does
    not validate is refused both ways and the running policy is kept."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "policies", policies)
    toml = policies / "lifecycle.toml"
    proc, base = start_serve(["--db", str(tmp_path / "r.db"), "--policies", str(policies), "--workers", "2"],
                             tmp_path / "serve.log")
    try:
        original = toml.read_text()
        add_content(toml, "summer_sale")
        r = post(base, "/v1/policies/lifecycle/reload", {"reason": "summer campaign"})
        assert r.status_code == 200 and r.json()["changed"] and r.json()["arm_count"] == 82
        assert every_worker_serves(base, "summer_sale", within=2.0)

        toml.write_text(original)
        add_content(toml, "autumn_sale")
        proc.send_signal(signal.SIGHUP)
        assert every_worker_serves(base, "autumn_sale", within=2.0 + 1.0)  # + the parent's 0.2 s tick
        assert requests.get(f"{base}/v1/policies/lifecycle", timeout=10).json()["reloaded"]["source"] == "SIGHUP"

        toml.write_text(toml.read_text().replace('min_gap = "2h"', 'min_gap = "two hours"'))
        bad = post(base, "/v1/policies/lifecycle/reload", {})
        assert bad.status_code == 409 and bad.json()["field"] == "guardrails.min_gap"
        proc.send_signal(signal.SIGHUP)
        time.sleep(2.0)
        assert every_worker_serves(base, "autumn_sale", within=0.0)  # still the last valid file
        assert "kept as it runs, its file does not validate" in (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def add_content(toml, content_id: str) -> None:
    body = toml.read_text()
    at = body.index("[[timing]]")
    toml.write_text(body[:at] + f'[[content]]\nid = "{content_id}"\ntopic = "promotion"\n\n' + body[at:])


def every_worker_serves(base: str, content_id: str, within: float) -> bool:
    """Whether, from `within` seconds on, 20 requests in a row (spread over the workers) all know
    the content."""
    deadline = time.monotonic() + within
    while True:
        answers = [requests.post(f"{base}/v1/policies/lifecycle/decide", timeout=10,
                                 json={"user_id": f"w{i}", "context": {"segment": "s"}, "contents": [content_id]})
                   for i in range(20)]
        if all(a.status_code == 200 for a in answers):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_a_content_added_over_http_reaches_every_worker_within_two_seconds_and_survives_a_restart(tmp_path):
    db = tmp_path / "catalog.db"
    args = ["--db", str(db), "--workers", "2"]
    proc, base = start_serve(args, tmp_path / "serve-1.log")
    try:
        assert not every_worker_serves(base, "summer_sale", within=0.0)
        r = requests.put(f"{base}/v1/policies/lifecycle/contents/summer_sale", timeout=10,
                         json={"topic": "promotion", "tags": ["seasonal"], "reason": "week 23"})
        assert r.status_code == 201
        assert every_worker_serves(base, "summer_sale", within=2.0)
        r = requests.delete(f"{base}/v1/policies/lifecycle/contents/win_back", timeout=10, json={"reason": "over"})
        assert r.status_code == 200
        assert every_worker_refuses(base, "win_back", within=2.0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    proc, base = start_serve(args, tmp_path / "serve-2.log")  # the same store, started again
    try:
        assert every_worker_serves(base, "summer_sale", within=0.0)
        assert every_worker_refuses(base, "win_back", within=0.0)
        catalog = requests.get(f"{base}/v1/policies/lifecycle/contents", timeout=10).json()
        assert catalog["contents"][-1]["reason"] == "week 23" and catalog["retired"][0]["id"] == "win_back"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def every_worker_refuses(base: str, content_id: str, within: float) -> bool:
    """Whether, from `within` seconds on, 20 requests in a row refuse the content as unknown."""
    deadline = time.monotonic() + within
    while True:
        answers = [requests.post(f"{base}/v1/policies/lifecycle/decide", timeout=10,
                                 json={"user_id": f"w{i}", "context": {"segment": "s"}, "contents": [content_id]})
                   for i in range(20)]
        if all(a.status_code == 400 for a in answers):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
