"""The two store backends for tests: a SQLite file, or a fresh schema of the PostgreSQL server that
TACTFUL_TEST_PG names (default: the one the development and CI machines run). Where no PostgreSQL
answers, its tests are skipped with that reason, except when CI is set: there they fail."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote

import psycopg
import pytest

PG_URL = os.environ.get("TACTFUL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _unavailable() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL answers at TACTFUL_TEST_PG={PG_URL}: {str(exc).strip()}"


def require_pg() -> None:
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: the PostgreSQL tests must run)")
    pytest.skip(reason)


def with_schema(url: str, schema: str) -> str:
    """`url` with its search_path set to `schema` (libpq's `options` parameter)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A URL of a fresh, empty schema, dropped afterwards."""
    require_pg()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield with_schema(PG_URL, name)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@contextmanager
def store_address(backend: str, tmp_path) -> Iterator[str]:
    """Where a store of `backend` lives for one test."""
    if backend == "sqlite":
        yield str(tmp_path / "store.db")
    else:
        with pg_schema() as url:
            yield url
