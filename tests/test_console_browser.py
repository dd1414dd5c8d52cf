"""The operator's console in a real headless browser (Debian's chromium and chromedriver, driven by
Selenium; nothing downloaded) against a real `tactful serve` with API keys: sign in, the overview's
numbers against the API's, an arm switched off from the page and decisions that stop choosing it,
a model version rolled back from the page and the API serving the older one, a person looked up,
and no page wider than a 390 px screen.

Skipped where chromium is not installed, except under CI (CI=true), where it fails: .ci/run
installs it."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

from conftest import POLICIES_DIR
from serving import start_serve
from service.api.auth import create_key
from service.learning.registry import VersionRegistry
from service.store import open_store

# Debian's packages (`chromium`, `chromium-driver`), found on PATH
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.e2e


def browser(width: int = 1280, height: int = 900):
    """Headless chromium, through the system's chromedriver (Selenium Manager is not asked for one)."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if path is None]
    if missing:
        reason = f"no browser: {' and '.join(missing)} not found (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set: the browser tests must run)")
        pytest.skip(reason)
    from selenium import webdriver  # noqa: PLC0415 -- only where a browser runs
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    return driver


LONG = "evaluation-lifecycle-candidate-version-that-has-a-very-long-name"


@pytest.fixture
def served(tmp_path, monkeypatch):
    """`tactful serve` on a store with an operator's key, a person with consent, a few decisions,
    and a second model version active (so there is one to roll back from); a report with a long
    name in its reports directory."""
    (tmp_path / "reports" / LONG).mkdir(parents=True)
    (tmp_path / "reports" / LONG / "report.md").write_text("# An evaluation\n\nIts `estimates_of_every_kind.png`.\n")
    monkeypatch.setenv("TACTFUL_REPORTS", str(tmp_path / "reports"))
    db = str(tmp_path / "console.db")
    store = open_store(db)
    token = create_key(store, "operator", ["admin", "people:read", "people:write", "decide"], time.time())
    store.close()
    proc, base = start_serve(["--db", db, "--policies", str(POLICIES_DIR), "--workers", "2"], tmp_path / "serve.log")
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    for i in range(20):
        assert api.put(f"{base}/v1/users/u{i}/consent", json={"channels": {"email": True, "push": True},
                                                              "source": "signup form"}).status_code == 200
        assert api.post(f"{base}/v1/policies/lifecycle/decide",
                        json={"user_id": f"u{i}", "context": {"segment": "s"}}).status_code == 200
    store = open_store(db)
    registry = VersionRegistry(store)
    one = store.model("lifecycle", 1)
    two = registry.add_version("lifecycle", one["model"], one["vw_args"], "import", time.time())
    registry.activate("lifecycle", two, "a version to roll back from", time.time(), watch=False)
    store.close()
    driver = browser()
    yield driver, base, api, token
    driver.quit()
    stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def until(condition, seconds: float = 10.0):
    """The first true value of `condition()` within `seconds` (asked every 0.1 s; a page element
    read while the browser loads the next page counts as false)."""
    from selenium.common.exceptions import WebDriverException  # noqa: PLC0415
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except WebDriverException:
            value = None
        if value or time.monotonic() > deadline:
            assert value, "never true"
            return value
        time.sleep(0.1)


def test_an_operator_signs_in_checks_switches_rolls_back_and_looks_up(served):
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    driver, base, api, token = served
    driver.get(f"{base}/ui/")
    assert "/ui/sign-in" in driver.current_url
    driver.find_element(By.ID, "key").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    until(lambda: "/ui/sign-in" not in driver.current_url)
    assert "Signed in with the key operator" in driver.find_element(By.CSS_SELECTOR, "header").text
    cookie = {c["name"]: c for c in driver.get_cookies()}["tactful_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]

    # the overview's numbers are the API's for the same data
    listed = api.get(f"{base}/v1/policies").json()["policies"][0]
    card = driver.find_element(By.ID, "policy-lifecycle")

    def figure(name: str) -> str:
        return card.find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]').text.strip()

    assert figure("total-decisions") == str(listed["counts"]["decisions"]) == "20"
    assert figure("total-holds") == str(listed["counts"]["holds"])
    assert figure("active-version") == str(listed["active_model_version"]) == "2"

    # switch a content off from its page: decisions stop choosing it
    driver.find_element(By.LINK_TEXT, "lifecycle").click()
    until(lambda: driver.current_url.startswith(f"{base}/ui/policies/lifecycle"))
    driver.find_element(By.ID, "status-spring_sale").send_keys("out of stock")
    driver.find_element(By.ID, "reason-spring_sale").send_keys("sold out")
    driver.find_element(By.ID, "switch-spring_sale").click()
    until(lambda: "Content spring_sale is now out_of_stock" in driver.find_element(By.CSS_SELECTOR, ".flash").text)
    assert "out of stock" in driver.find_element(By.CSS_SELECTOR, "#content-spring_sale [data-status]").text
    # and one arm alone, in the arms' table
    arm = "loyalty_reward:email:evening"
    driver.find_element(By.ID, f"status-{arm}").send_keys("retired")
    driver.find_element(By.ID, f"reason-{arm}").send_keys("wrong tone")
    driver.find_element(By.ID, f"switch-{arm}").click()
    until(lambda: f"Arm {arm} is now retired" in driver.find_element(By.CSS_SELECTOR, ".flash").text)
    assert driver.find_element(By.CSS_SELECTOR, f'[id="arm-{arm}"] [data-status]').text == "retired"
    assert "console (key operator): wrong tone" in driver.find_element(By.CSS_SELECTOR, f'[id="arm-{arm}"]').text
    # every worker reads the switches with the person's state: the next decision follows them
    actions = [api.post(f"{base}/v1/policies/lifecycle/decide", json={"user_id": f"u{i}", "context": {"segment": "s"}})
               .json()["action"] for i in range(20, 60)]
    assert not [a for a in actions if a["content"] == "spring_sale" or a["arm"] == arm]
    assert any(not a["hold"] for a in actions)

    # roll back from the page: the API serves the older version
    driver.find_element(By.ID, "rollback-reason").send_keys("version 2 misbehaves")
    driver.find_element(By.ID, "rollback-confirm").click()
    driver.find_element(By.ID, "rollback").click()
    until(lambda: "Rolled back: version 1 is active (was 2)" in driver.find_element(By.CSS_SELECTOR, ".flash").text)
    assert api.get(f"{base}/v1/policies/lifecycle").json()["active_model_version"] == 1
    until(lambda: api.post(f"{base}/v1/policies/lifecycle/decide", json={"user_id": "u1", "context": {"segment": "s"}})
          .json()["model_version"] == 1, 5.0)

    # look a person up
    driver.find_element(By.LINK_TEXT, "Person").click()
    driver.find_element(By.ID, "user_id").send_keys("u3")
    driver.find_element(By.ID, "look-up").click()
    until(lambda: driver.find_element(By.ID, "person-id").text == "u3")
    assert "email: granted" in driver.find_element(By.ID, "consent").text
    assert "lifecycle" in driver.find_element(By.ID, "decisions").text

    # at a phone's width no page scrolls sideways (wide tables scroll inside their box)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    for path in ("/ui/", "/ui/policies/lifecycle", "/ui/people?user_id=u3", "/ui/reports",
                 f"/ui/reports/{LONG}/report.md"):
        driver.get(base + path)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390, path
    assert driver.find_element(By.CSS_SELECTOR, ".report h1").text == "An evaluation"
