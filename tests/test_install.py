"""Installs that stay the same: every dependency pinned in constraints.txt at a registry version,
every documented install going through it (README, .ci/run, Dockerfile), and a LICENSE that is
the one pyproject.toml declares."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), f"not a registry pin: {line!r}"
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_every_dependency_and_extra_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    pinned = pins()
    assert [r for r in wanted if _name(r) not in pinned] == []
    assert "tactful" not in pinned  # the project itself is installed from the tree, never pinned


def test_every_documented_install_uses_the_constraints():
    docker = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt" in re.search(r"^COPY .*$", docker, re.M).group(0)
    assert re.search(r"^RUN pip install --no-cache-dir -c constraints\.txt \.", docker, re.M)
    assert "pip install -q -c constraints.txt -e '.[dev]'" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install [^\n`]*", readme)
    assert installs and all("-c constraints.txt" in i or " -U " in i for i in installs), installs


def test_the_license_is_the_one_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
