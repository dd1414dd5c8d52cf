"""Bounded storage and upkeep on both backends: pruning never removes what serving, rollback or
learning needs; `tactful db upgrade`, `tactful prune` and `tactful backup` from the command line."""
from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg

from click.testing import CliRunner

from backends import pg_schema
from service.cli.main import main
from service.store import RequestClaim, open_store, schema
from service.store import pg_schema as store_pg_schema
from service.store.base import pending
from service.store.schema import SCHEMA_VERSION
from test_store import T, decision, outcome

DAY = 86400.0


def _log(store, event_id: str, at: float, policy: str = "p"):
    d = decision(None, event_id, at=at)
    d.policy, d.closes_at = policy, at + DAY
    assert store.commit_decision(d, None)
    return store.decision(event_id).seq


def test_pruning_versions_keeps_the_active_the_shadow_and_the_way_back(store_url):
    store = open_store(store_url)
    store.ensure_initial_version("p", b"v1", "", T)
    seqs = [_log(store, f"e{i}", T - 10 * DAY + i) for i in range(6)]
    for i, seq in enumerate(seqs[:5]):  # five online versions, 2..6
        assert store.publish_learned("p", i + 1, b"m", "", T, [(seq, 0.0)], seq, {}) == i + 2
    store.set_shadow("p", 3, T)
    assert store.add_version("p", b"c", "", "import", T, {}) == 7
    assert store.protected_versions("p") == {6, 3, 5}  # active, shadow, the latest activation's previous
    assert store.prune_versions(keep=1) == {"p": [1, 2, 4]}
    assert [v["version"] for v in store.versions("p")] == [3, 5, 6, 7]
    assert store.prune_versions(keep=1) == {}
    store.close()


def test_pruning_decisions_spares_open_windows_unlearned_ones_and_the_newest(store_url):
    store = open_store(store_url)
    store.ensure_initial_version("p", b"v1", "", T)
    old = [_log(store, f"old{i}", T - 200 * DAY + i) for i in range(4)]
    store.add_outcome(outcome("old0"), None)
    store.publish_learned("p", 1, b"m", "", T, [(s, 0.0) for s in old[:2]], old[1], {})
    _log(store, "imported", T - 300 * DAY, policy="obd")  # a policy nobody serves: no learner waits
    _log(store, "recent", T - DAY)
    late = decision(None, "open", at=T - 200 * DAY)
    late.policy, late.closes_at = "p", T + DAY  # a window still open, however old the decision
    assert store.commit_decision(late, None)
    store.record_delivery("old1", None, "bounced", None, T - 200 * DAY, T - 200 * DAY, None, "p")
    for request_id, at in (("stale", T - DAY - 1), ("fresh", T - DAY + 1)):
        assert store.commit_decision(decision(None, request_id, at=at), None,
                                     claim=RequestClaim(request_id, "h", "{}", at - DAY))
    counts = store.prune_decisions(before=T - 180 * DAY, now=T, chunk=2)  # two transactions
    assert counts == {"outcomes": 1, "deliveries": 1, "shadow_decisions": 0, "decisions": 3, "requests": 1}
    left = {r[0] for r in store.query("SELECT event_id FROM decisions")}
    assert left == {"old2", "old3", "recent", "open", "stale", "fresh"}  # old2, old3: not learned yet
    assert store.query("SELECT count(*) FROM decision_rewards")[0][0] == 0  # old0's and old1's went with them
    assert [r[0] for r in store.query("SELECT request_id FROM requests")] == ["fresh"]
    store.close()


def test_db_upgrade_migrates_an_older_sqlite_file_and_refuses_a_newer(tmp_path):
    db = str(tmp_path / "old.db")
    open_store(db).close()
    with sqlite3.connect(db) as conn:  # as a Tactful of schema version 2 left it
        conn.execute("DROP INDEX decisions_decided")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    run = CliRunner().invoke(main, ["db", "upgrade", "--db", db])
    assert run.exit_code == 0 and f"schema version {SCHEMA_VERSION} (was 2)" in run.output
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='decisions_decided'").fetchone()[0] == 1
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    run = CliRunner().invoke(main, ["db", "upgrade", "--db", db])
    assert run.exit_code == 1 and "newer than this Tactful knows" in run.output
    run = CliRunner().invoke(main, ["export", "--db", db, "--policy", "lifecycle", "--format", "csv", "--out", str(tmp_path / "x")])
    assert run.exit_code == 2 and "newer than this Tactful knows" in run.output


def test_db_upgrade_creates_a_postgresql_schema_and_commands_take_a_url(tmp_path):
    with pg_schema() as url:
        run = CliRunner().invoke(main, ["db", "upgrade", "--db", url])
        assert run.exit_code == 0 and f"schema version {SCHEMA_VERSION} (was 0)" in run.output, run.output
        run = CliRunner().invoke(main, ["db", "upgrade"], env={"TACTFUL_DB": url})
        assert run.exit_code == 0 and "(up to date)" in run.output
        run = CliRunner().invoke(main, ["prune", "--db", url, "--keep-versions", "3"])
        assert run.exit_code == 0 and "no model version to remove" in run.output
        run = CliRunner().invoke(main, ["backup", "--db", url, str(tmp_path / "b.dump")])
        assert run.exit_code == 1 and "pg_dump" in run.output


def test_backup_copies_a_live_sqlite_store(tmp_path):
    db = str(tmp_path / "live.db")
    store = open_store(db)
    for i in range(50):
        _log(store, f"e{i}", T + i)
    run = CliRunner().invoke(main, ["backup", "--db", db, str(tmp_path / "copy.db")])
    assert run.exit_code == 0, run.output
    copy = open_store(str(tmp_path / "copy.db"))
    assert copy.decision_count() == 50 and copy.person_key("u") == store.person_key("u")
    run = CliRunner().invoke(main, ["backup", "--db", db, str(tmp_path / "copy.db")])
    assert run.exit_code == 2 and "exists" in run.output
    run = CliRunner().invoke(main, ["prune", "--db", db])
    assert run.exit_code == 2 and "say what to prune" in run.output
    run = CliRunner().invoke(main, ["prune", "--db", db, "--decisions-older-than", "soon"])
    assert run.exit_code == 2 and "not an age" in run.output


def test_db_copy_moves_a_sqlite_store_to_postgresql_as_it_was(tmp_path):
    db = str(tmp_path / "one-machine.db")
    source = open_store(db)
    key = source.person_key("u1")
    source.set_consent(key, {"email": True}, "form", T)
    source.ensure_initial_version("p", b"v1", "--x", T)
    seqs = [_log(source, f"e{i}", T - 3 * DAY + i) for i in range(5)]
    assert source.commit_decision(decision(key, "sent"), source.person_state(key, T - 7 * DAY).marker)
    source.add_outcome(outcome("e0"), None)
    source.publish_learned("p", 1, b"v2", "--x", T, [(s, 0.5) for s in seqs[:3]], seqs[2], {"n": 3})
    source.close()
    with pg_schema() as url:
        run = CliRunner().invoke(main, ["db", "copy", "--from", db, "--to", url])
        assert run.exit_code == 0, run.output
        copied = open_store(url)
        assert copied.person_key("u1") == key  # the same secret: people keep their keys
        assert copied.decision_count() == 6 and copied.active_version("p") == 2 and copied.learner_cursor("p") == seqs[2]
        assert copied.model("p", 2)["model"] == b"v2" and [o.type for o in copied.outcomes("e0")] == ["click"]
        learned = copied.decision("e0")
        assert (learned.reward, learned.learned_version) == (0.5, 2) and copied.decision("e3").learned_version is None
        state = copied.person_state(key, T - 7 * DAY)
        assert state.consent == {"email": True} and state.contacts == [("email", T + 60)]
        # new rows go on after the copied ones
        new = _log(copied, "after", T + 1)
        assert new > max(seqs) and copied.decision("after").seq == new
        copied.close()
        run = CliRunner().invoke(main, ["db", "copy", "--from", db, "--to", url])
        assert run.exit_code == 1 and "copy into an empty store" in run.output
    run = CliRunner().invoke(main, ["db", "copy", "--from", db, "--to", str(tmp_path / "x.db")])
    assert run.exit_code == 2 and "must be a PostgreSQL URL" in run.output


def test_a_store_records_the_last_migration_it_applied(store_url):
    """Both backends know the same versions, and a migrated store says so: a store opened again
    finds nothing left to apply (a step beyond the recorded version would run on every open)."""
    assert [v for v, _ in schema.MIGRATIONS] == [v for v, _ in store_pg_schema.MIGRATIONS]
    store = open_store(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    assert pending(schema.MIGRATIONS, store.schema_version(), SCHEMA_VERSION, store.location) == []
    store.close()


def test_version_11_moves_the_learned_rewards_out_of_the_decisions(store_url):
    """A store of version 10 kept each learned reward in its decision's row; version 11 keeps them
    in decision_rewards, and a decision reads the same before and after."""
    store = open_store(store_url)
    store.ensure_initial_version("p", b"v1", "", T)
    seqs = [_log(store, f"e{i}", T - 3 * DAY + i) for i in range(3)]
    with store.write() as conn:  # as a Tactful of schema version 10 left it
        conn.execute("DROP TABLE decision_rewards")
        real, integer = ("double precision", "bigint") if store.kind == "postgresql" else ("REAL", "INTEGER")
        conn.execute(f"ALTER TABLE decisions ADD COLUMN reward {real}")  # the types version 10 had
        conn.execute(f"ALTER TABLE decisions ADD COLUMN learned_version {integer}")
        conn.execute("UPDATE decisions SET reward=0.5, learned_version=1 WHERE seq=?", (seqs[0],))
        conn.execute("UPDATE decisions SET reward=-0.25 WHERE seq=?", (seqs[1],))  # final, learned by none
        conn.execute("UPDATE meta SET value='10' WHERE key='schema_version'")
    assert store.migrate() == (10, SCHEMA_VERSION)
    assert [(d.reward, d.learned_version) for d in map(store.decision, ("e0", "e1", "e2"))] == [
        (0.5, 1), (-0.25, None), (None, None)]
    assert not {"reward", "learned_version"} & set(dict(store.query("SELECT * FROM decisions LIMIT 1")[0]))
    # a decision final but learned by no version is learned by the next one
    assert store.publish_learned("p", 1, b"m", "", T, [(seqs[1], 0.75), (seqs[2], 0.0)], seqs[2], {}) == 2
    assert (store.decision("e1").reward, store.decision("e1").learned_version) == (0.75, 2)
    store.close()


def test_version_11_waits_for_a_learner_of_the_previous_version():
    """During a rollout a replica of the previous version may be recording rewards in its
    decisions' rows while a new one migrates: the migration waits for that transaction and moves
    what it wrote, instead of copying what it saw and dropping the columns under it."""
    with pg_schema() as url:
        store = open_store(url)
        store.ensure_initial_version("p", b"v1", "", T)
        seqs = [_log(store, f"e{i}", T - 3 * DAY + i) for i in range(2)]
        with store.write() as conn:  # as a Tactful of schema version 10 left it
            conn.execute("DROP TABLE decision_rewards")
            conn.execute("ALTER TABLE decisions ADD COLUMN reward double precision")
            conn.execute("ALTER TABLE decisions ADD COLUMN learned_version bigint")
            conn.execute("UPDATE meta SET value='10' WHERE key='schema_version'")
        store.close()
        with psycopg.connect(url) as old, ThreadPoolExecutor(1) as pool:  # that learner, mid-publish
            old.execute("UPDATE decisions SET reward=0.5, learned_version=2 WHERE seq=%s", (seqs[0],))
            migrating = pool.submit(open_store, url)  # opening a store migrates it
            time.sleep(1.0)
            assert not migrating.done()  # it waits for the learner's transaction
            old.commit()
            new = migrating.result(timeout=60)
        assert (new.decision("e0").reward, new.decision("e0").learned_version) == (0.5, 2)
        assert new.decision("e1").learned_version is None
        new.close()
