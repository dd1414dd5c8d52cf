"""scripts/bench_write.py runs against the store as it is (its figures are in docs/benchmarks.md):
a small run, for its output's shape, never its speed."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_write_benchmark_runs_on_the_current_store():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_write.py"), "--rows", "30"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    row = re.search(r"^\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, re.M)
    assert row and all(float(x) > 0 for x in row.groups()), done.stdout
