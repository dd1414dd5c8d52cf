"""Check-and-reserve of a contact is one transaction, across gunicorn workers."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serving import serve  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


def test_fifty_simultaneous_decisions_for_one_person_send_once(serve):
    http, base = serve(workers=3)
    r = http.put(f"{base}/v1/users/carol/consent", json={"channels": {"push": True, "in_app": False}})
    assert r.status_code == 200
    body = {"user_id": "carol", "context": {"segment": "s"}}

    def one(_):
        return requests.post(f"{base}/v1/policies/lifecycle/decide", json=body, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(one, range(50)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    sends = [a.json() for a in answers if not a.json()["action"]["hold"]]
    assert len(sends) == 1 and sends[0]["action"]["channel"] == "push"
    holds = [a.json() for a in answers if a.json()["action"]["hold"]]
    # every later decision saw the reserved push and removed every push arm for the cap
    capped = [h for h in holds if h["removed"]["reasons"].get("frequency_cap")]
    assert len(capped) >= len(holds) - 5


def test_an_arm_switched_off_is_off_in_every_worker(serve):
    http, base = serve(workers=2)
    for i in range(40):
        http.put(f"{base}/v1/users/u{i}/consent", json={"channels": {"email": True, "push": True, "sms": True}})
    r = http.patch(f"{base}/v1/policies/lifecycle/arms/spring_sale", json={"status": "out_of_stock"})
    assert r.status_code == 200

    def one(i):  # a fresh connection per request, so both workers answer
        return requests.post(f"{base}/v1/policies/lifecycle/decide",
                             json={"user_id": f"u{i}", "context": {"segment": "s"}}, timeout=60).json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(40)))
    assert all(a["removed"]["reasons"].get("out_of_stock") == 12 for a in answers)
    assert not any(a["action"]["content"] == "spring_sale" for a in answers)
    http.patch(f"{base}/v1/policies/lifecycle/arms/spring_sale", json={"status": "active"})
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: requests.post(
            f"{base}/v1/policies/lifecycle/decide", json={"user_id": f"v{i}", "context": {"segment": "s"}},
            timeout=60).json(), range(20)))
    assert not any("out_of_stock" in a["removed"]["reasons"] for a in answers)
