"""The store's API keys, on both backends (a real SQLite file and a real PostgreSQL schema): only a
hash is kept, names are unique among the keys not revoked, a revoked key keeps its row, last use
only moves forward, and a store of schema version 3 gains the table when it migrates."""
from __future__ import annotations

import sqlite3

import psycopg
import pytest

from service.store import KeyNameTaken, open_store
from service.store.schema import SCHEMA_VERSION

T = 1_780_000_000.0


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def test_a_key_is_kept_by_its_hash_with_its_scopes(store):
    assert store.api_keys() == [] and store.api_key_table() == []
    store.add_api_key("campaigns", "h1", ["decide", "people:read"], T)
    store.add_api_key("ops", "h2", ["admin"], T + 1)
    assert store.api_keys() == [
        {"name": "campaigns", "scopes": ["decide", "people:read"], "created_at": T, "last_used_at": None,
         "revoked_at": None},
        {"name": "ops", "scopes": ["admin"], "created_at": T + 1, "last_used_at": None, "revoked_at": None}]
    assert {k["key_hash"]: k["name"] for k in store.api_key_table()} == {"h1": "campaigns", "h2": "ops"}
    assert all("key_hash" not in k for k in store.api_keys(include_revoked=True))


def test_names_are_unique_among_active_keys_and_free_again_once_revoked(store):
    store.add_api_key("ci", "h1", ["decide"], T)
    with pytest.raises(KeyNameTaken, match="tactful keys revoke ci"):
        store.add_api_key("ci", "h2", ["admin"], T)
    assert store.revoke_api_key("ci", T + 5) is True
    assert store.revoke_api_key("ci", T + 6) is False  # nothing active under that name any more
    assert store.revoke_api_key("nobody", T) is False
    store.add_api_key("ci", "h3", ["decide"], T + 7)
    assert [k["created_at"] for k in store.api_keys()] == [T + 7]
    listed = store.api_keys(include_revoked=True)
    assert [(k["name"], k["revoked_at"]) for k in listed] == [("ci", T + 5), ("ci", None)]
    table = {k["key_hash"]: k["revoked_at"] for k in store.api_key_table()}
    assert table == {"h1": T + 5, "h3": None}  # the revoked key stays known, as revoked


def test_a_hash_is_stored_once(store):
    store.add_api_key("a", "same", ["decide"], T)
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        store.add_api_key("b", "same", ["decide"], T)
    assert [k["name"] for k in store.api_keys()] == ["a"]


def test_last_use_only_moves_forward(store):
    store.add_api_key("a", "h1", ["decide"], T)
    store.add_api_key("b", "h2", ["decide"], T)
    store.api_keys_used(["h1", "h2", "unknown"], T + 100)
    store.api_keys_used(["h1"], T + 50)  # an older report from another worker
    assert [k["last_used_at"] for k in store.api_keys()] == [T + 100, T + 100]
    store.api_keys_used(["h2"], T + 200)
    assert [k["last_used_at"] for k in store.api_keys()] == [T + 100, T + 200]


def test_a_version_3_store_gains_the_key_table(store_url):
    store = open_store(store_url)
    with store.write() as conn:  # as a Tactful of schema version 3 left it
        conn.execute("DROP TABLE api_keys")
        conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    assert store.migrate() == (3, SCHEMA_VERSION) and SCHEMA_VERSION >= 4
    store.add_api_key("a", "h1", ["decide"], T)
    assert [k["name"] for k in store.api_keys()] == ["a"]
    store.close()

