"""Erasure leaves no trace (docs/reliability.md): after `DELETE /v1/users/{user_id}`, the bytes of
the store's files hold neither the user id, nor its keyed form, nor the consistency keys and
request ids (idempotency keys) of its decisions. SQLite: the database, its WAL and its
shared-memory file, scanned while the app still has them open. PostgreSQL (when its data directory is readable here, as on the development and CI
machines): the dead rows stay in the table and index files until VACUUM FULL rewrites them, after
which the files of the store's schema hold none of it; that is what PostgreSQL can promise (its
WAL, archives and backups keep the bytes longer: docs/reliability.md)."""
from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
import requests

import faultrun
from backends import PG_URL, pg_schema
from conftest import POLICIES_DIR
from serving import start_serve
from service.api.app import create_app
from service.store import SQLiteStore, StoreUnavailable, open_store

USER = "erase-me-7f3a9c@example.com"
HANDLE = USER.split("@")[0]  # a request id may not hold "@"
ALL = {"email": True, "push": True, "sms": True, "in_app": True}
OTHERS = 300


def at(day: int, minute: int) -> str:
    return f"2026-05-{1 + day:02d}T{8 + minute // 60:02d}:{minute % 60:02d}:00Z"


def populate(client) -> list[str]:
    """The person to erase, among OTHERS people: consent, preferences, decisions with consistency
    keys and request ids spread over days and pages, outcomes (a click, an unsubscribe, a
    complaint). Their consistency keys and request ids."""
    def ok(r, status=200):
        assert r.status_code == status, r.json
        return r.json

    ok(client.put(f"/v1/users/{USER}/consent", json={"channels": ALL, "source": "signup", "timestamp": at(0, 0)}))
    ok(client.put(f"/v1/users/{USER}/preferences", json={"blocked_topics": ["loyalty"], "timezone": "Europe/Paris",
                                                          "timestamp": at(0, 0)}))
    keys, sent = [], []
    for day in range(12):
        for i in range(OTHERS // 12 * day, OTHERS // 12 * (day + 1)):
            other = f"other-{i}"
            ok(client.put(f"/v1/users/{other}/consent", json={"channels": ALL, "timestamp": at(day, i % 60)}))
            for n in range(3):
                ok(client.post("/v1/policies/lifecycle/decide", json={
                    "user_id": other, "context": {"segment": "s"}, "timestamp": at(day, 60 + n * 60 + i % 60)}))
        keys += [f"basket-{USER}-{day}", f"spring-2026:{HANDLE}:{day}"]  # idempotency keys name people too
        d = ok(client.post("/v1/policies/lifecycle/decide", json={
            "user_id": USER, "context": {"segment": "s"}, "consistency_key": keys[-2], "request_id": keys[-1],
            "timestamp": at(day, 300)}))
        if not d["action"]["hold"]:
            sent.append(d)
    assert len(sent) >= 3, "the person should have been contacted a few times"
    for d, kind in zip(sent, ("click", "unsubscribe", "complaint")):
        ok(client.post(f"/v1/events/{d['event_id']}/outcomes", json={
            "type": kind, "outcome_id": kind, "timestamp": at(12, 0)}), 202)
    return keys


def holding(files: list[Path], needles: list[str]) -> dict[str, list[str]]:
    """Which of `needles` each file's bytes hold (files that hold none are left out)."""
    out = {}
    for path in files:
        data = path.read_bytes() if path.exists() else b""
        found = [n for n in needles if n.encode() in data]
        if found:
            out[path.name] = found
    return out


def test_an_erased_person_leaves_no_byte_in_the_sqlite_files(tmp_path):
    db = tmp_path / "erase.db"
    app = create_app({"DB": str(db), "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
    client, store = app.test_client(), app.extensions["tactful"].store
    try:
        keys = populate(client)
        store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # as SQLite's own do: older copies in the file
        r = client.put(f"/v1/users/{USER}/consent", json={"channels": {"sms": False}, "timestamp": at(12, 1)})
        assert r.status_code == 200  # and newer ones in the WAL
        key = store.person_key(USER)
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        needles = [USER, key, *keys]
        before = holding(files, needles)
        assert key in sum(before.values(), []) and keys[0] in sum(before.values(), []), before

        r = client.delete(f"/v1/users/{USER}")
        assert r.status_code == 200 and r.json["deleted"]["decisions_unlinked"] == 12

        assert holding(files, needles) == {}
        assert client.get("/v1/policies/lifecycle").json["counts"]["decisions"] == 12 + 3 * OTHERS
    finally:
        store.close()


@pytest.mark.slow  # a thousand requests on PostgreSQL, checkpoints and VACUUM FULL: 10 to 16 s here
def test_an_erased_person_leaves_no_byte_in_the_postgresql_tables_after_vacuum_full(tmp_path):
    with pg_schema() as url:
        schema = url.rsplit("search_path%3D", 1)[1]
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            data_dir = Path(admin.execute("SHOW data_directory").fetchone()[0])
            if not (data_dir / "PG_VERSION").is_file():
                pytest.skip(f"PostgreSQL's data directory {data_dir} is not readable here (a server elsewhere)")
            app = create_app({"DB": url, "POLICIES": str(POLICIES_DIR), "CLOCK": "request", "ACCESS_LOG": False})
            client, store = app.test_client(), app.extensions["tactful"].store
            try:
                keys = populate(client)
                key = store.person_key(USER)
                needles = [USER, key, *keys]

                def files() -> list[Path]:
                    admin.execute("CHECKPOINT")  # every page on disk
                    return relation_files(admin, data_dir, schema)

                before = holding(files(), needles)
                assert key in sum(before.values(), []) and keys[0] in sum(before.values(), []), before
                r = client.delete(f"/v1/users/{USER}")
                assert r.status_code == 200 and r.json["deleted"]["decisions_unlinked"] == 12
                left = holding(files(), needles)
                assert left, "the dead rows were expected in the table files until VACUUM FULL"
                # plain VACUUM (and autovacuum) frees the dead rows' space but leaves their bytes in
                # the pages (PostgreSQL 15, docs/reliability.md); VACUUM FULL writes new files
                for table in ("consent", "contacts", "signals", "people", "requests", "decisions"):
                    admin.execute(f"VACUUM FULL {schema}.{table}")
                assert holding(files(), needles) == {}
            finally:
                store.close()


def relation_files(conn, data_dir: Path, schema: str) -> list[Path]:
    """Every file of every table, index and TOAST relation of `schema` (all their 1 GB segments)."""
    rows = conn.execute(
        "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'i')"
        " UNION SELECT pg_relation_filepath(t.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_class t ON t.oid IN (c.reltoastrelid, (SELECT indexrelid FROM pg_index WHERE indrelid ="
        " c.reltoastrelid LIMIT 1)) WHERE n.nspname = %s", (schema, schema)).fetchall()
    out = []
    for (rel,) in rows:
        base = data_dir / rel
        out += [base] + sorted(base.parent.glob(f"{base.name}.[0-9]*"))
    return out


@pytest.mark.e2e
def test_erasure_under_load_on_a_real_serve_leaves_no_byte_in_the_sqlite_files(tmp_path):
    """The same on `tactful serve` (2 workers and the learner, each with the file open) while a
    client sends decisions and outcomes for other people: the checkpoint waits its turn."""
    db = tmp_path / "served.db"
    proc, base = start_serve(["--db", str(db), "--policies", str(faultrun.fault_policies(tmp_path / "policies"))],
                             tmp_path / "serve.log", new_session=True)
    client = faultrun.Client(base, [f"other-{i}" for i in range(100)], rate=60)
    try:
        http = requests.Session()
        assert http.put(f"{base}/v1/users/{USER}/consent", json={"channels": ALL}).status_code == 200
        assert http.put(f"{base}/v1/users/{USER}/preferences", json={"timezone": "Europe/Paris"}).status_code == 200
        keys = [f"basket-{USER}-{n}" for n in range(20)]
        events = [http.post(f"{base}/v1/policies/lifecycle/decide", json={
            "user_id": USER, "context": {"segment": "s"}, "consistency_key": k, "request_id": f"r:{HANDLE}:{n}"}
            ).json()["event_id"] for n, k in enumerate(keys)]
        keys += [f"r:{HANDLE}:{n}" for n in range(20)]
        for kind in ("click", "unsubscribe"):
            assert http.post(f"{base}/v1/events/{events[0]}/outcomes", json={"type": kind}).status_code == 202
        client.start()
        time.sleep(3)
        store = open_store(str(db))
        key = store.person_key(USER)
        store.close()
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        needles = [USER, key, *keys]
        assert key in sum(holding(files, needles).values(), [])
        wal_before = Path(f"{db}-wal").stat().st_size
        r = http.delete(f"{base}/v1/users/{USER}")
        assert r.status_code == 200 and r.json()["deleted"]["decisions_unlinked"] == 20, r.text
        print(f"DELETE /v1/users/... under load, with its checkpoint: {r.elapsed.total_seconds() * 1000:.0f} ms, "
              f"WAL {wal_before} bytes before")
        time.sleep(2)  # traffic goes on, writing new pages
        assert holding(files, needles) == {}
    finally:
        client.finish()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert client.decisions.acknowledged and not client.decisions.refused and not client.decisions.unanswered


def test_an_erasure_whose_checkpoint_cannot_finish_says_so_and_a_repeat_finishes_it(tmp_path):
    """A reader that holds an old snapshot keeps the WAL's older frames in use: the erasure is
    committed, StoreUnavailable (503) says its trace is not gone yet, and asking again once the
    reader is done leaves no byte."""
    db = tmp_path / "held.db"
    store = SQLiteStore(str(db), timeout=0.5)
    key = store.person_key(USER)
    store.set_consent(key, {"email": True}, "form", 1.0)
    store.set_preferences(key, {"timezone": "Europe/Paris"}, 1.0)
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM consent").fetchone()  # a snapshot that the checkpoint must wait for
        store.set_consent(key, {"sms": True}, "form", 2.0)
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert holding(files, [key])
        with pytest.raises(StoreUnavailable, match="erase again"):
            store.erase_person(key)
        assert store.consent_history(key) == [] and store.person_row(key) is None
        reader.execute("COMMIT")
        again = store.erase_person(key)
        assert set(again.values()) == {0} and again["decisions_unlinked"] == 0
        assert holding(files, [key]) == {}
    finally:
        reader.close()
        store.close()
