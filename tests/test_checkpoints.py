"""A served worker's SQLite store checkpoints its WAL in a thread of its own
(SQLiteStore.checkpoint_in_background), not in the decide whose commit fills the WAL: that decide
waited 30-40 ms for the checkpoint, about once a second under load (docs/benchmarks.md)."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from service.store import open_store

ROW = "x" * 3000  # about a page per row


def _write(store, rows: int, start: int = 0, pause: float = 0.0) -> None:
    for i in range(start, start + rows):
        with store.write() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (f"filler-{i}", ROW))
        if pause:
            time.sleep(pause)  # a served worker's time between its commits


def _grows(path: str, size: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.getsize(path) > size:
            return True
        time.sleep(0.02)
    return False


def test_commits_leave_checkpoints_to_the_background_thread(tmp_path):
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        store.checkpoint_in_background(0.05)
        assert store.wconn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size = os.path.getsize(db)
        _write(store, 300)  # far below SQLite's own threshold: only the thread copies pages over
        assert _grows(db, size + 300 * 3000 // 2)
    finally:
        store.close()
    assert not any(t.name == "tactful-checkpoint" for t in threading.enumerate())


def test_without_the_thread_the_same_commits_are_not_checkpointed(tmp_path):
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        size = os.path.getsize(db)
        _write(store, 300)
        assert not _grows(db, size + 300 * 3000 // 2, seconds=1.0)
    finally:
        store.close()


def test_the_wal_starts_over_under_steady_writes(tmp_path):
    """PASSIVE checkpoints alone rarely catch up with a writer that commits every fraction of a
    millisecond (without the RESTART this WAL reached 180 MB); the RESTART after a large one bounds
    it. Each restart first waits for a PASSIVE checkpoint and a flush (_Checkpointer._restart), so
    with one due every 200 pages the WAL peaks somewhat above them (6.3 MB seen, here)."""
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        store.checkpoint_in_background(0.01, restart_pages=200)
        largest = 0
        for chunk in range(20):  # 6,000 commits of about 4 pages each
            _write(store, 300, start=chunk * 300, pause=0.0002)
            largest = max(largest, os.path.getsize(db + "-wal"))
        assert largest < 6_000 * 4096 / 2  # 12 MB; without restarts 180 MB
    finally:
        store.close()


_LOCKS = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
# SQLite's SHARED range of the database file (unix VFS: PENDING_BYTE + 2, 510 bytes)
flock = struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, 0, 0x40000002, 510, 0)
kind, _, _, _, pid = struct.unpack("hhxxxxqqixxxx", fcntl.fcntl(fd, fcntl.F_GETLK, flock))
print(pid if kind == fcntl.F_RDLCK else 0)
"""


def _shared_lock_holder(db: str) -> int:
    """The pid holding a read lock on the database's SHARED range, as another process sees it."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _LOCKS, db], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's struct flock")
def test_the_writes_before_a_restart_keep_this_process_s_locks(tmp_path):
    """Before each RESTART the checkpoint thread writes dirty data out through a descriptor of
    the WAL file (_Checkpointer._flush). Through one of the database file it would be as fast,
    but closing it would drop the SHARED lock every WAL connection of this process holds there,
    and another process closing its last connection would then take the file for its own and
    delete the WAL in use."""
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        _write(store, 10)
        assert _shared_lock_holder(db) == os.getpid()
        store.checkpoint_in_background(0.01, restart_pages=50)
        for chunk in range(10):  # restarts, each try after a _flush
            _write(store, 100, start=10 + chunk * 100, pause=0.0002)
        assert os.path.getsize(db + "-wal") < 1100 * 4096  # the WAL did start over
        assert _shared_lock_holder(db) == os.getpid()
    finally:
        store.close()


def test_an_erasure_waits_for_a_checkpoint_running_on_another_connection(tmp_path):
    """SQLite answers a TRUNCATE checkpoint busy at once while another connection checkpoints
    (a served worker's background thread does, every second): the erasure's checkpoint tries
    again rather than failing the DELETE with a 503."""
    import sqlite3
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        store.checkpoint_in_background(3600)  # no turn comes: only SQLite's threshold is off
        _write(store, 6000)
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        running = threading.Thread(target=lambda: other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        running.start()
        time.sleep(0.005)
        assert running.is_alive()  # the other checkpoint copies about 24 MB
        store.leave_no_trace()
        running.join()
        other.close()
        assert os.path.getsize(db + "-wal") == 0
    finally:
        store.close()


@pytest.mark.slow  # a real `tactful learn` process, started and stopped
def test_the_learner_process_checkpoints_in_a_thread_of_its_own(tmp_path):
    """`tactful learn` opens its store as a served worker does: a step's commit rewrites every
    learned decision's row, and would otherwise wait for their copy into the database file. Seen
    from outside: WAL pages that no commit of the learner's would checkpoint (too few for SQLite's
    threshold) reach the database file while it runs."""
    import signal
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        store.conn.execute("PRAGMA wal_autocheckpoint=0")  # this connection leaves them in the WAL too
        store.wconn.execute("PRAGMA wal_autocheckpoint=0")
        _write(store, 300)
        size = os.path.getsize(db)
        cmd = [sys.executable, "-m", "service.cli", "learn", "--db", db, "--policies", str(root / "examples" / "policies")]
        log = tmp_path / "learn.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=str(root)), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            while os.path.getsize(db) <= size + 300 * 3000 // 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, log.read_text()  # still learning: it did not die
            assert os.path.getsize(db) > size + 300 * 3000 // 2, log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        store.close()
