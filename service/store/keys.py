"""API keys (service/api/auth.py): a name, the scopes it grants and a SHA-256 hash of the key;
never the key itself. A revoked key keeps its row (revoked_at set): a store that has held a key
stays protected even when every key is revoked, and a revoked key is told apart from an unknown
one. Names are unique among the keys not revoked, so a name can be reused after a revocation."""
from __future__ import annotations

from typing import Iterable, Sequence

from service.store.records import StoreError


class KeyNameTaken(StoreError):
    """An active key already has this name."""

    def __init__(self, name: str):
        super().__init__(f"an API key named {name!r} exists: revoke it first (tactful keys revoke {name}) "
                         f"or choose another name")
        self.name = name


def _key(row) -> dict:
    return {"name": row["name"], "scopes": row["scopes"].split(), "created_at": row["created_at"],
            "last_used_at": row["last_used_at"], "revoked_at": row["revoked_at"]}


class KeyTables:
    """The `api_keys` table; mixed into `Store`."""

    def add_api_key(self, name: str, key_hash: str, scopes: Sequence[str], at: float) -> None:
        """Store a new key under `name` (KeyNameTaken if an active key has that name)."""
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL", (name,)).fetchone():
                raise KeyNameTaken(name)
            conn.execute("INSERT INTO api_keys(name, key_hash, scopes, created_at) VALUES (?,?,?,?)",
                         (name, key_hash, " ".join(scopes), at))

    def revoke_api_key(self, name: str, at: float) -> bool:
        """Revoke the active key named `name`; False when there is none."""
        with self.write() as conn:
            return conn.execute("UPDATE api_keys SET revoked_at=? WHERE name=? AND revoked_at IS NULL",
                                (at, name)).rowcount == 1

    def api_keys(self, include_revoked: bool = False) -> list[dict]:
        """The keys, oldest first: name, scopes, created_at, last_used_at, revoked_at (never the hash)."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        return [_key(r) for r in self.query(
            "SELECT name, scopes, created_at, last_used_at, revoked_at FROM api_keys" + where + " ORDER BY id")]

    def api_key_table(self) -> list[dict]:
        """Every key with its hash, revoked ones included: what each worker keeps in memory."""
        return [_key(r) | {"key_hash": r["key_hash"]} for r in self.query(
            "SELECT key_hash, name, scopes, created_at, last_used_at, revoked_at FROM api_keys")]

    def api_keys_used(self, key_hashes: Iterable[str], at: float) -> None:
        """Record that these keys were used at `at` (one statement for them all)."""
        with self.write(lock=None) as conn:
            conn.executemany("UPDATE api_keys SET last_used_at=? WHERE key_hash=? AND"
                             " (last_used_at IS NULL OR last_used_at < ?)", [(at, h, at) for h in key_hashes])
