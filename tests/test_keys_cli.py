"""`tactful keys create|list|revoke` on both backends: a key is printed once, alone on standard
output, and stored only as its hash; `list` shows names, scopes and times, never a key or a hash;
`revoke` refuses it; bad names and scopes are refused naming the option."""
from __future__ import annotations

import re
from pathlib import Path

import psycopg
from click.testing import CliRunner

from service.api.auth import token_hash
from service.cli.main import main
from service.store import is_postgres


def keys(*args: str, db: str):
    return CliRunner().invoke(main, ["keys", *args, "--db", db])


def stored_bytes(db: str) -> bytes:
    """Everything the store holds about keys, as bytes: the SQLite file (and its WAL), or every
    column of the PostgreSQL table."""
    if not is_postgres(db):
        return b"".join(p.read_bytes() for p in Path(db).parent.glob(Path(db).name + "*"))
    with psycopg.connect(db) as conn:
        return repr(conn.execute("SELECT * FROM api_keys").fetchall()).encode()


def test_create_prints_the_key_once_and_keeps_only_its_hash(store_url):
    made = keys("create", "--name", "campaigns", "--scopes", "people:read, decide", db=store_url)
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert re.fullmatch(r"tk_[A-Za-z0-9_-]{43}", key) and made.stdout == key + "\n"  # nothing else on stdout
    assert "shown this once" in made.stderr and "first key" in made.stderr
    held = stored_bytes(store_url)
    assert key.encode() not in held and key[3:].encode() not in held and token_hash(key).encode() in held
    listed = keys("list", db=store_url)
    assert listed.exit_code == 0
    assert re.search(r"^campaigns\s+decide,people:read\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+-$", listed.stdout, re.M), \
        listed.stdout
    assert key not in listed.output and token_hash(key) not in listed.output
    second = keys("create", "--name", "ops", "--scopes", "admin", db=store_url)
    assert second.exit_code == 0 and "first key" not in second.stderr and second.stdout.strip() != key


def test_revoke_and_list(store_url):
    assert keys("create", "--name", "ci", "--scopes", "decide", db=store_url).exit_code == 0
    taken = keys("create", "--name", "ci", "--scopes", "admin", db=store_url)
    assert taken.exit_code == 1 and "an API key named 'ci' exists" in taken.output
    revoked = keys("revoke", "ci", db=store_url)
    assert revoked.exit_code == 0 and "No key is left" in revoked.stderr
    listed = keys("list", db=store_url)
    assert "ci" not in listed.stdout and "every one is revoked" in listed.stderr
    every = keys("list", "--all", db=store_url)
    assert re.search(r"^ci\s+decide\s+\S+Z\s+-\s+\S+Z$", every.stdout, re.M), every.stdout
    again = keys("revoke", "ci", db=store_url)
    assert again.exit_code == 1 and "no API key named 'ci'" in again.output
    reused = keys("create", "--name", "ci", "--scopes", "decide", db=store_url)  # the name is free again
    assert reused.exit_code == 0 and "first key" not in reused.stderr


def test_bad_names_and_scopes_are_refused_naming_the_option(tmp_path):
    db = str(tmp_path / "k.db")
    empty = keys("list", db=db)
    assert empty.exit_code == 2 and "does not exist" in empty.output  # list and revoke never create a store
    for args, option, reason in [
        (["--name", "a b", "--scopes", "decide"], "--name", "is not a key name"),
        (["--name", "ok", "--scopes", "decide,root"], "--scopes", "root: name one or more of decide, people:read"),
        (["--name", "ok", "--scopes", " , "], "--scopes", "no scope"),
    ]:
        run = keys("create", *args, db=db)
        assert run.exit_code == 2 and option in run.output and reason in run.output, run.output
    assert keys("create", "--name", "ok", "--scopes", "admin", db=db).exit_code == 0  # creates the store
    assert "no API key" not in keys("list", db=db).output
