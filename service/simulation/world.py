"""The simulated population, drawn from a scenario and a seed: who the people are (segment,
time zone, country, tenure, consent) and the moments at which each is asked about.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from service.simulation.scenario import Scenario


@dataclass
class Population:
    segment: np.ndarray          # segment index per person
    timezone: list[str]          # IANA zone per person
    country: list[str | None]
    tenure_days: np.ndarray
    consent: list[dict[str, bool]]


def make_population(scenario: Scenario, people: int, channels: Sequence[str], rng: np.random.Generator) -> Population:
    spec = scenario.spec
    shares = np.array([s.share for s in spec.segments])
    seg = rng.choice(len(shares), size=people, p=shares / shares.sum())
    tzs, countries, tenure, consent = [], [], np.zeros(people), []
    for i in range(people):
        s = spec.segments[seg[i]]
        r = s.regions[rng.choice(len(s.regions), p=np.array([x.share for x in s.regions]) / sum(x.share for x in s.regions))]
        tzs.append(r.timezone)
        countries.append(r.country)
        tenure[i] = round(float(rng.uniform(*s.tenure_days)))
        consent.append({ch: bool(rng.random() < spec.consent.get(ch, 1.0)) for ch in channels})
    return Population(seg, tzs, countries, tenure, consent)


def make_asks(scenario: Scenario, population: Population, decisions: int, rng: np.random.Generator,
              warmup: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`decisions` moments at which a person is asked about: (epoch seconds, person), sorted by
    time. People are picked uniformly; each ask falls on a uniform day of the run (of the warm-up
    before it, with `warmup`), at a uniform local time between the scenario's ask_hours in the
    person's own time zone."""
    spec = scenario.spec
    people = len(population.segment)
    person = rng.integers(people, size=decisions)
    if warmup:
        day = rng.integers(spec.warmup_days, size=decisions) - spec.warmup_days
    else:
        day = rng.integers(int(math.ceil(spec.days)), size=decisions)
    lo, hi = spec.ask_hours
    seconds = rng.uniform(lo * 3600, hi * 3600, size=decisions)
    start_day = spec.start.astimezone(timezone.utc).date()
    zones = {z: ZoneInfo(z) for z in set(population.timezone)}
    t = np.empty(decisions)
    for i in range(decisions):
        tz = zones[population.timezone[person[i]]]
        local = datetime.combine(start_day + timedelta(days=int(day[i])), datetime.min.time(), tzinfo=tz)
        t[i] = local.timestamp() + seconds[i]
    t = np.minimum(t, spec.start.timestamp() - 1.0) if warmup else np.maximum(t, spec.start.timestamp())
    order = np.argsort(t, kind="stable")
    return t[order], person[order]
