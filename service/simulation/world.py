"""The simulated world, shared by every decision maker of one comparison, all drawn from a
scenario and a seed: the population (segment, time zone, country, tenure, consent), the moments at
which each person is asked about, the random draws of each ask, and the truth bound to the
policy's arms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from models.reward import RewardSpec
from service.specfile import read_toml
from service.policy import Policy, PolicyError, parse_policy
from service.policy.bandit import reward_spec
from service.simulation.scenario import Scenario, load_scenario
from service.simulation.truth import ArmInfo, TimingInfo, Truth

N_UNIFORMS = 9  # common random numbers per ask: open, click, convert, unsubscribe, complaint, 4 delays


@dataclass
class Population:
    """Who the people are, one entry per person."""
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


def load_policy_data(path: Path) -> tuple[dict, Policy]:
    """A policy file's data (for the fatigue-blind twin, which edits it) and the policy."""
    data = read_toml(path, PolicyError)
    return data, parse_policy(data, str(path), default_name=path.stem)


@dataclass
class World:
    """Everything every decision maker of one comparison shares: the scenario, the policy, the
    truth bound to its arms, the population, the asks and their random draws."""
    scenario: Scenario
    policy: Policy
    policy_data: dict
    truth: Truth
    population: Population
    ask_t: np.ndarray
    ask_person: np.ndarray
    uniforms: np.ndarray      # (decisions, N_UNIFORMS): the same draws for every decision maker
    warm_t: np.ndarray        # the warm-up's asks, before the start: business as usual, not measured
    warm_person: np.ndarray
    warm_uniforms: np.ndarray
    seed: int
    people: int
    decisions: int
    reward: RewardSpec        # the policy's own reward: every run is scored with it
    static_ranking: tuple[int, ...] = ()  # the arms by their true value in hindsight (`static_ranking`)

    @property
    def days(self) -> float:
        return self.scenario.spec.days


def build_world(scenario: Scenario | str | Path, policy: str | Path | None = None, decisions: int | None = None,
                seed: int | None = None) -> World:
    """The population, its asks and the truth, all from the scenario and the seed.

    `decisions` other than the scenario's own scales the population with it, so each person is
    asked as often over the same number of days (a small run is a small town, not a short one)."""
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    spec = sc.spec
    policy_path = Path(policy) if policy else sc.policy_path
    data, pol = load_policy_data(policy_path)
    arms = [ArmInfo(a.id) if a.hold else ArmInfo(a.id, a.content.id, a.content.topic, a.channel, a.timing.name)
            for a in pol.arms]
    timings = [TimingInfo(t.name, t.delay_minutes, t.at) for t in pol.spec.timing]
    r = pol.spec.reward
    truth = Truth(sc, arms, timings, r.weights, r.default, r.fatigue.per_contact)
    n = decisions or spec.decisions
    seed = spec.seed if seed is None else seed
    people = max(1, round(spec.people * n / spec.decisions))
    rng = np.random.default_rng(seed)
    population = make_population(sc, people, pol.spec.channels, rng)
    ask_t, ask_person = make_asks(sc, population, n, rng)
    uniforms = rng.random((n, N_UNIFORMS))
    n_warm = round(n * spec.warmup_days / spec.days)
    warm_t, warm_person = make_asks(sc, population, n_warm, rng, warmup=True)
    warm_uniforms = rng.random((n_warm, N_UNIFORMS))
    world = World(sc, pol, data, truth, population, ask_t, ask_person, uniforms, warm_t, warm_person, warm_uniforms,
                  seed, people, n, reward_spec(pol))
    # the ranking reads the world it ranks: the same world, with its ranking, before any run
    return replace(world, static_ranking=tuple(static_ranking(world, np.random.default_rng(seed + 1))))


def static_ranking(world: World, rng: np.random.Generator, sample: int = 3000) -> list[int]:
    """Arms by their true expected shaped reward averaged over a sample of the run's asks, as if
    every arm were allowed and nobody had been contacted: the best single arm in hindsight."""
    truth, pol = world.truth, world.policy
    idx = rng.integers(world.decisions, size=min(sample, world.decisions))
    sends = np.flatnonzero(~truth.is_hold)
    total = np.zeros(len(pol.arms))
    for i in idx:
        person = int(world.ask_person[i])
        t = float(world.ask_t[i])
        tz = ZoneInfo(world.population.timezone[person])
        at = [resolve_send_at(tm, t, tz) for tm in truth.timings]  # the service knows the person's zone
        hours = np.array([datetime.fromtimestamp(s, tz).hour for s in at])
        probs = truth.probabilities(int(world.population.segment[person]), t, sends,
                                    hours[truth.arm_timing[sends]], np.zeros(len(sends)))
        total[sends] += truth.expected_reward(probs, 0)
        total[truth.is_hold] += truth.default
    return [int(a) for a in np.argsort(-total, kind="stable")]


def resolve_send_at(timing: TimingInfo, now: float, tz: ZoneInfo) -> float:
    """When a timing slot sends (the simulator's own reading of the policy format)."""
    if timing.delay_minutes is not None:
        return now + timing.delay_minutes * 60.0
    hh, mm = (int(x) for x in timing.at.split(":")[:2])
    local = datetime.fromtimestamp(now, tz)
    for days in range(3):
        day = local.date() + timedelta(days=days)
        candidate = datetime(day.year, day.month, day.day, hh, mm, tzinfo=tz).timestamp()
        if candidate > now:
            return candidate
    raise AssertionError("a local time recurs within two days")  # pragma: no cover
