"""Shared fixtures: a fresh Tactful app on a temporary SQLite file, with the real store, learner
model, guardrails and clock. Paths are resolved from this file, so tests run from any directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends import BACKENDS, store_address
from service.api.app import create_app

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICIES_DIR = REPO_ROOT / "examples" / "policies"


def pytest_configure(config):
    """The guardrail property test runs 300 examples when the whole suite runs (`pytest -m ''`,
    as CI does) and 60 in the quick local loop (a plain `pytest`); PROPERTY_EXAMPLES overrides."""
    full = not config.getoption("markexpr")
    os.environ.setdefault("PROPERTY_EXAMPLES", "300" if full else "60")


def _make_app(tmp_path: Path, clock, db_name: str):
    return create_app({"DB": str(tmp_path / db_name), "POLICIES": str(POLICIES_DIR), "CLOCK": clock})


def _close(app) -> None:
    app.extensions["tactful"].store.close()


@pytest.fixture
def app(tmp_path):
    """The app with the system (wall) clock: requests may not carry timestamps."""
    app = _make_app(tmp_path, "system", "tactful.db")
    yield app
    _close(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def request_app(tmp_path):
    """The app with the request clock: "now" is the latest timestamp requests carried."""
    app = _make_app(tmp_path, "request", "tactful-request.db")
    yield app
    _close(app)


@pytest.fixture
def request_client(request_app):
    return request_app.test_client()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    """Where a store lives, once per backend: a SQLite file and a fresh PostgreSQL schema."""
    with store_address(request.param, tmp_path) as url:
        yield url
