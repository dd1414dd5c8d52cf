"""Schemathesis against the live document: a real `tactful serve` (gunicorn workers and a learner)
on a fresh SQLite store, fuzzed from the `/openapi.json` it serves, with every phase (examples,
coverage, fuzzing, stateful: decide -> outcome -> event through the document's links) and every
check, with a fixed seed. The run fails on any 500, any status, content type, header or body the
document does not declare, any schema-valid request refused and any schema-invalid one accepted
(tests/fuzz_hooks.py names the three cross-field rules a JSON Schema cannot state). Once with an
API key holding every scope, and once without a key (every secured operation must answer 401 as
documented). docs/reliability.md ("Fuzzing the HTTP API") records what a run covers and found."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving import ROOT, start_serve
from service.api.auth import SCOPES, create_key
from service.store import open_store

SEED = 20261129
HOOKS = Path(__file__).resolve().parent / "fuzz_hooks.py"


def fuzz(base: str, cwd: Path, examples: int, *args: str) -> tuple[int, str]:
    """`st run` against the served document: (exit code, what it printed)."""
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json", "--checks", "all",
           "--phases", "examples,coverage,fuzzing,stateful", "--seed", str(SEED), "--max-examples", str(examples),
           "--workers", "1", "--generation-database", "none", "--no-color", "--request-timeout", "30", *args]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS)))
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def served(tmp_path, request):
    """A fresh store holding one key with every scope, served with the clock asked for: (base, key)."""
    db = tmp_path / "fuzz.db"
    store = open_store(str(db))
    key = create_key(store, "fuzz", list(SCOPES), time.time())
    store.close()
    proc, base = start_serve(["--db", str(db), "--policies", str(ROOT / "examples" / "policies"),
                              "--clock", request.param, "--workers", "2"], tmp_path / "serve.log")
    yield base, key
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log, log[-5000:]


@pytest.mark.e2e
@pytest.mark.parametrize("served", ["system", "request"], indirect=True)
def test_fuzzing_the_served_document_finds_no_server_error_and_no_mismatch(served, tmp_path):
    base, key = served
    events = tmp_path / "fuzz.ndjson"
    code, out = fuzz(base, tmp_path, 100, "-H", f"Authorization: Bearer {key}",
                     "--report", "ndjson", "--report-ndjson-path", str(events))
    assert code == 0, out
    assert int(re.search(r"(\d+) generated", out).group(1)) > 1000, out
    steps = events.read_text()  # the stateful phase chained a decision to its outcome and its event
    for link in ("POST /v1/policies/{policy}/decide -> [200] ReportOutcome -> POST /v1/events/{event_id}/outcomes",
                 "POST /v1/policies/{policy}/decide -> [200] GetEvent -> GET /v1/events/{event_id}"):
        assert link in steps, out
    code, out = fuzz(base, tmp_path, 10)  # no key: 401 everywhere but the public operations
    assert code == 0, out
