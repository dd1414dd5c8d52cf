"""Reading a declarative TOML file (a policy, a scenario) into a pydantic model, with errors
that name the file, the key (dotted, with list indices) and the reason."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ValidationError


class SpecError(ValueError):
    """A declarative file that cannot be used: names the file, the key and the reason."""

    def __init__(self, path: str, key: str, reason: str):
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: {key or '(file)'}: {reason}")

    def __reduce__(self):
        # rebuilt from its three parts, not from the message: a worker process's error (a
        # simulation run in a process pool) reaches the parent as itself, subclass included
        return type(self), (self.path, self.key, self.reason), self.__dict__


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: object, allow_zero: bool = False, examples: str = "'30m', '12h', '7d'") -> float:
    """Seconds from a number of seconds or a string such as "90s", "30m", "12h", "7d", "2w"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '7d'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration: use seconds or a string such as {examples}")
    if allow_zero and seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not allow_zero and seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class KeyedError(ValueError):
    """A check across keys that knows which key it is about (pydantic gives such checks no location)."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key


def error_key(loc: tuple) -> str:
    """A pydantic error location as a dotted key with list indices: `guardrails.caps[0].window`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def read_toml(path: Path, error: Callable[[str, str, str], Exception]) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise error(str(path), "", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise error(str(path), "", f"cannot be read: {exc.strerror}") from None


def validate(model: type[BaseModel], data: dict, path: str, error: Callable[[str, str, str], Exception],
             doc: str, default_name: str | None = None):
    """`model` validated from `data` (named `default_name` when it names itself nothing); the
    first problem becomes `error(path, key, reason)`, pointing at `doc` for an unknown key."""
    data = dict(data)
    if "name" not in data and default_name:
        data["name"] = default_name
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = f"unknown key (see {doc} for the format)"
        key = error_key(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, KeyedError):
            key = f"{key}.{cause.key}" if key else cause.key
        raise error(path, key, reason) from None
