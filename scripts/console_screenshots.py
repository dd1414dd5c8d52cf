"""Screenshots of the operator's console (docs/console.md, the README) at 1280 and 390 px wide.

Simulates the `see-it-learn` scenario into a fresh SQLite store (4,000 decisions, in process),
with its report written under out/console-screenshots/ (the console's reports directory here);
evaluates the version before the active one (`tactful evaluate`, which stores its estimates beside
it and writes its report there too); creates an operator's key; starts `tactful serve` on that
store with TACTFUL_REPORTS naming that directory and the scenario's secret (so its people are
found); signs in with Debian's headless chromium (through tests/test_console_browser.py's
`browser`) and saves one PNG per page and width into docs/console/, reduced to 64 colours so that
each stays small.

    .venv/bin/python scripts/console_screenshots.py [--out docs/console] [--decisions 4000]
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serving import start_serve  # noqa: E402
from service.api.auth import create_key  # noqa: E402
from service.learning.registry import VersionRegistry  # noqa: E402
from service.simulation.run import simulate  # noqa: E402
from service.store import open_store  # noqa: E402
from test_console_browser import browser  # noqa: E402

SCENARIO = ROOT / "examples" / "scenarios" / "see-it-learn.toml"
WIDTHS = {"wide": 1280, "narrow": 390}
TALLEST = {"wide": 2200, "narrow": 3600}  # px: a long page is cut there
USER = "see-it-learn-000007"


def pages(report: str) -> dict[str, str]:
    return {"overview": "/ui/?window=7d", "policy": "/ui/policies/lifecycle?window=7d",
            "person": f"/ui/people?user_id={USER}", "reports": "/ui/reports", "report": f"/ui/reports/{report}"}


def shoot(driver, name: str, width: int, tallest: int, out: Path) -> Path:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
    height = min(tallest, driver.execute_script("return document.documentElement.scrollHeight"))
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    path = out / f"{name}-{width}.png"
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "console"))
    ap.add_argument("--decisions", type=int, default=4000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # the reports under the repository's out/ (ignored by git), so the page shows a relative path
        reports = Path("out") / "console-screenshots"
        shutil.rmtree(ROOT / reports, ignore_errors=True)
        db = f"{tmp}/sim.db"
        simulate(SCENARIO, monotonic=time.monotonic, decisions=args.decisions, db=db,
                 out=ROOT / reports / "simulation",
                 progress=False)
        store = open_store(db)
        token = create_key(store, "operator", ["admin", "people:read", "people:write"], time.time())
        store.close()
        os.environ["TACTFUL_REPORTS"] = str(reports)
        os.environ["TACTFUL_SECRET"] = "tactful-simulation-1"  # the scenario's seed's: its people's keys
        policies = Path(tmp) / "policies"  # the scenario's policy alone (its directory holds two `lifecycle`s)
        policies.mkdir()
        (policies / "lifecycle.toml").write_text((SCENARIO.parent / "policies" / "lifecycle-sim.toml").read_text())
        # an off-policy estimate stored beside the version before the active one, and its report
        previous = str(len(VersionRegistry(open_store(db)).versions("lifecycle")) - 1)
        subprocess.run([sys.executable, "-m", "service.cli", "evaluate", "--db", db, "--policies", str(policies),
                        "--policy", "lifecycle", "--candidate", previous, "--bootstrap", "100",
                        "--out", str(ROOT / reports / "evaluation-lifecycle")], cwd=ROOT, check=True,
                       capture_output=True)
        proc, base = start_serve(["--db", db, "--policies", str(policies), "--workers", "1"], Path(tmp) / "serve.log")
        driver = browser()
        try:
            driver.get(f"{base}/ui/sign-in")
            for kind, width in WIDTHS.items():
                print(shoot(driver, "sign-in", width, TALLEST[kind], out))
            driver.find_element("id", "key").send_keys(token)
            driver.find_element("id", "sign-in").click()
            time.sleep(1.0)
            for name, path in pages("simulation/report.md").items():
                driver.get(base + path)
                for kind, width in WIDTHS.items():
                    print(shoot(driver, name, width, TALLEST[kind], out))
        finally:
            driver.quit()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
