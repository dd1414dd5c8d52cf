"""The deployment docs/deploy.md describes: examples/deploy/compose.yaml (PostgreSQL, two Tactful
replicas, nginx in front) says what the code does, and the shipped nginx configuration really
balances two real replicas on one PostgreSQL and keeps answering when one of them dies. The
Dockerfile runs unprivileged with a health check, and its command refuses to serve a store
without an API key until the documented `tactful keys create` has run."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from backends import pg_schema
from serving import ROOT, free_port, start_serve, wait_healthy
from service.cli.main import main
from service.cli.serve import access_warning
from service.store import open_store

DEPLOY = ROOT / "examples" / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_the_compose_file_runs_two_replicas_on_postgresql_behind_the_balancer():
    services = compose()["services"]
    replicas = sorted(name for name in services if name.startswith("tactful-"))
    assert replicas == ["tactful-1", "tactful-2"]
    upstream = re.findall(r"server (\S+):8000", (DEPLOY / "nginx.conf").read_text())
    assert upstream == replicas  # the balancer sends to exactly those
    for name in replicas:
        service = services[name]
        assert service["environment"]["TACTFUL_DB"].startswith("postgresql://")
        assert "@postgres:5432/" in service["environment"]["TACTFUL_DB"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        # the command is one the CLI accepts
        args = service["command"]
        assert args[:2] == ["tactful", "serve"]
        # every replica binds all addresses, so it serves only once the store holds an API key
        assert args[args.index("--host") + 1] == "0.0.0.0" and "--insecure-no-auth" not in args
        assert CliRunner().invoke(main, [*args[1:], "--help"]).exit_code == 0
        assert (ROOT / args[args.index("--policies") + 1]).is_dir()
    assert set(services["lb"]["depends_on"]) == set(replicas)
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's instructions, continuation lines joined: name -> every argument text."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            out.setdefault(name, []).append(rest.strip())
    return out


def tactful(args: list[str], db: Path) -> subprocess.CompletedProcess:
    """The real `tactful` command, as the image runs it: from the source tree (the image's
    WORKDIR holds the same examples/), on the store TACTFUL_DB names."""
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT), TACTFUL_DB=str(db)))


@pytest.mark.slow  # the real command, twice, in processes of its own
def test_the_image_runs_unprivileged_checks_its_health_and_needs_a_key_to_serve(tmp_path):
    image = dockerfile()
    assert image["USER"] == ["tactful"] and "useradd" in " ".join(image["RUN"])
    assert image["ENV"] == ["TACTFUL_DB=/data/tactful.db"] and image["VOLUME"] == ["/data"]
    assert "chown tactful:tactful /data" in " ".join(image["RUN"])  # the volume starts out writable by it
    [health] = image["HEALTHCHECK"]
    assert "CMD" in health and "http://127.0.0.1:8000/healthz" in health
    [cmd] = image["CMD"]
    cmd = json.loads(cmd)
    assert cmd[:2] == ["tactful", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == "8000" and "--insecure-no-auth" not in cmd
    db = tmp_path / "data.db"
    refused = tactful(cmd[1:], db)
    assert refused.returncode != 0 and "refusing to serve on 0.0.0.0" in refused.stderr
    assert "tactful keys create" in refused.stderr
    # what the Dockerfile and the README say to run first, against the volume
    documented = re.findall(r"docker run --rm -v tactful-data:/data tactful (tactful keys create [^\n`]+)",
                            (ROOT / "Dockerfile").read_text() + (ROOT / "README.md").read_text())
    assert len(documented) == 2 and len(set(documented)) == 1
    made = tactful(documented[0].split()[1:], db)
    assert made.returncode == 0 and made.stdout.startswith("tk_"), made.stderr
    store = open_store(str(db))
    assert access_warning(store, "0.0.0.0", False) is None  # the image's command now serves
    store.close()


@pytest.mark.e2e
def test_the_balancer_serves_from_two_replicas_and_survives_one(tmp_path):
    if shutil.which("nginx") is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (.ci/run installs it)")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    with pg_schema() as url:
        started = [start_serve(["--db", url, "--workers", "1"], tmp_path / f"r{i}.log", new_session=True)
                   for i in range(2)]
        port = free_port()
        site = (DEPLOY / "nginx.conf").read_text().replace("listen 80;", f"listen 127.0.0.1:{port};")
        for i, (_, base) in enumerate(started):
            site = site.replace(f"tactful-{i + 1}:8000", base.removeprefix("http://"))
        (tmp_path / "site.conf").write_text(site)
        (tmp_path / "nginx.conf").write_text(
            f"events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
            f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/site.conf;\n}}\n")
        nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                  "-g", f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"])
        try:
            _drive_through(f"http://127.0.0.1:{port}", started)
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
            for proc, _ in started:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)


def _drive_through(lb: str, started) -> None:
    assert wait_healthy(lb, 30, pause=0.1), "nginx did not start"
    body = {"context": {"segment": "s"}}
    answered = [requests.post(f"{lb}/v1/policies/lifecycle/decide", json=body | {"user_id": f"u{i}"}, timeout=30)
                for i in range(40)]
    assert all(r.status_code == 200 for r in answered), [r.text for r in answered if r.status_code != 200][:2]
    # one store behind both replicas: each sees every decision, whichever replica made it
    per_replica = [requests.get(f"{base}/v1/policies/lifecycle", timeout=10).json()["counts"]["decisions"]
                   for _, base in started]
    assert per_replica[0] == per_replica[1] == 40  # one store, seen alike from both
    proc, _ = started[0]
    os.killpg(proc.pid, signal.SIGKILL)  # a replica dies: the balancer sends to the other
    proc.wait(timeout=10)
    gone_by = time.time() + 10
    while True:  # every process of the group, so no socket of it is left to accept a request
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < gone_by
        time.sleep(0.05)
    after = [requests.post(f"{lb}/v1/policies/lifecycle/decide", json=body | {"user_id": f"v{i}"}, timeout=30)
             for i in range(40)]
    # (a request in flight at the moment of the kill would get a 502: it reached the replica, so
    # nginx does not send a POST again; campaign tools retry those)
    assert all(r.status_code == 200 for r in after), [r.status_code for r in after]
    assert requests.get(f"{started[1][1]}/v1/policies/lifecycle", timeout=10).json()["counts"]["decisions"] == 80
