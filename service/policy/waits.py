"""How long after its decision a send can go out: what a policy's reward window must outlast.

A decision's reward is final `reward.window` after the decision; a send that goes out later than
that has its outcomes counted as none, and the learner is told such sends earned nothing. The
policy check (`PolicySpec._cross_checks`) refuses such a window, and a window not given is a day
longer than the longest wait (`PolicySpec._default_window`).
"""
from __future__ import annotations

HOUR, DAY = 3600.0, 86400.0


def _clock(hhmm: str) -> float:
    h, m = hhmm.split(":")
    return int(h) * HOUR + int(m) * 60.0


def slot_waits(timing, quiet, clocks_back: bool) -> list[tuple[float, str, float]]:
    """(the longest a slot's send can follow its decision, in seconds; the slot's name; how much
    of that the quiet hours add), slot by slot (`timing`: the policy's `Timing`s): the delay, or
    up to a day for a slot at a local time; the policy's quiet hours (`QuietHours` or None), when
    they move sends, add the time to their end (a send that lands at their start waits them out). `clocks_back`: with the hour a local
    day gains the night the clocks go back. A person's own quiet hours are not known here and can
    delay a send further."""
    moving = quiet is not None and quiet.action == "move" and quiet.channels != ()
    start, end = (_clock(quiet.start), _clock(quiet.end)) if moving else (0.0, 0.0)
    extra = HOUR if clocks_back else 0.0
    waits = []
    for t in timing:
        if t.at is None:
            wait, added = t.delay_minutes * 60.0, ((end - start) % DAY + extra if moving else 0.0)
        else:
            at = _clock(t.at)
            inside = moving and (start <= at < end if start < end else at >= start or at < end)
            wait, added = DAY + extra, ((end - at) % DAY if inside else 0.0)
        waits.append((wait + added, t.name, added))
    return waits
