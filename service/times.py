"""Moments as text and time zones by name: the one RFC 3339 formatter, the one parser and the one
time-zone check that every package uses (the HTTP answers, the store's exports, the simulator,
the policy and scenario files)."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


@lru_cache(maxsize=4096)  # the same contact and slot times are rendered again and again
def to_rfc3339(ts: float | None) -> str | None:
    """Seconds since the epoch as RFC 3339 text in UTC (`2026-05-28T09:00:00Z`); None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: str | float | None) -> float | None:
    """Seconds since the epoch from RFC 3339 / ISO 8601 text, from a number of seconds (as a
    number or as text), or from a date alone (midnight UTC). None stays None; anything else is a
    ValueError that says what to write."""
    if value is None or isinstance(value, (int, float)):
        return value
    text = value.strip().replace("Z", "+00:00")
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a time: use RFC 3339 such as 2026-05-28T00:00:00Z "
                         f"or a date such as 2026-05-28") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


@lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    """Every IANA time zone this machine knows, sorted: what `iana_zone` accepts (the OpenAPI
    document lists them). Not every name ZoneInfo opens: it also opens `posix/...`, `right/...`."""
    return tuple(sorted(available_timezones()))


def iana_zone(name: str) -> str:
    """`name` if it is an IANA time zone (`Europe/Paris`), else a ValueError saying so: the check
    behind every validator of a time-zone field."""
    try:
        if name not in time_zones():
            raise ZoneInfoNotFoundError(name)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone such as Europe/Paris") from None
    return name
