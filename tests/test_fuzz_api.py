"""Schemathesis against the live document: a real `tactful serve` (gunicorn workers and a learner)
on a fresh store (SQLite with either clock, and PostgreSQL), fuzzed from the `/openapi.json` it
serves, with every check and a fixed seed. The run fails on any 500, any status, content type,
header or body the document does not declare, any schema-valid request refused and any
schema-invalid one accepted (tests/fuzz_hooks.py names the three cross-field rules a JSON Schema
cannot state). Three runs per store: every phase (examples, coverage, fuzzing, stateful) with an
API key holding every scope; the stateful phase on the decision's operations, which must chain
decide -> outcome -> event through the document's links; every phase without a key (every
secured operation must answer 401, as documented). docs/reliability.md ("Fuzzing the HTTP API")
records what a run covers and what it found."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends import store_address
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
    # (a second --phases, as the stateful run gives, wins over the first)
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS)))
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def served(tmp_path, request):
    """A fresh store of the backend asked for, holding one key with every scope, served with the
    clock asked for: (base, key)."""
    clock, backend = request.param
    with store_address(backend, tmp_path) as db:
        store = open_store(db)
        key = create_key(store, "fuzz", list(SCOPES), time.time())
        store.close()
        proc, base = start_serve(["--db", db, "--policies", str(ROOT / "examples" / "policies"),
                                  "--clock", clock, "--workers", "2"], tmp_path / "serve.log")
        yield base, key
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    # every 500 fails the run already; this is for a worker that died or hung meanwhile
    log = [line for line in (tmp_path / "serve.log").read_text().splitlines() if not line.startswith('{"time"')]
    bad = [line for line in log if any(m in line for m in ("unexpected error", "WORKER TIMEOUT", "exited with code"))]
    assert not bad, "\n".join(log[-60:])


# the default deployment; the request clock (whose document has timestamps); PostgreSQL, which
# refuses what SQLite stores (NUL characters in text)
SERVED = [("system", "sqlite"), ("request", "sqlite"), ("system", "postgresql")]
# examples per operation of the every-phase run: 100 on the default deployment, 40 on the other
# two, whose differences (timestamp fields, text PostgreSQL refuses) the coverage phase's boundary
# cases reach on every operation whatever the count; the decision chain's stateful run keeps 100
EXAMPLES = {("system", "sqlite"): 100}


@pytest.mark.e2e
@pytest.mark.parametrize("served", SERVED, indirect=True, ids=["-".join(s) for s in SERVED])
def test_fuzzing_the_served_document_finds_no_server_error_and_no_mismatch(served, tmp_path, request):
    base, key = served
    examples = EXAMPLES.get(request.node.callspec.params["served"], 40)
    auth = ("-H", f"Authorization: Bearer {key}")
    code, out = fuzz(base, tmp_path, examples, *auth)
    assert code == 0, out
    assert int(re.search(r"(\d+) generated", out).group(1)) > 10 * examples, out
    # The stateful phase again, on the decision's operations alone: among every operation, it
    # mostly follows the links it infers elsewhere; here it must chain a decision to its outcome
    # and its event through the document's links.
    steps = tmp_path / "stateful.ndjson"
    code, out = fuzz(base, tmp_path, 100, *auth, "--phases", "stateful", "--include-operation-id", "decide",
                     "--include-operation-id", "reportOutcome", "--include-operation-id", "getEvent",
                     "--report", "ndjson", "--report-ndjson-path", str(steps))
    assert code == 0, out
    for link in ("POST /v1/policies/{policy}/decide -> [200] ReportOutcome -> POST /v1/events/{event_id}/outcomes",
                 "POST /v1/events/{event_id}/outcomes -> [202] GetEvent -> GET /v1/events/{event_id}"):
        assert link in steps.read_text(), out
    code, out = fuzz(base, tmp_path, 10)  # no key: 401 everywhere but the public operations
    assert code == 0, out
