"""A decision's explanation never contradicts itself: its mode, its summary, its chosen arm and
`model_favourite` agree in every case -- ties, a fresh model's flat distribution, a trained
model, the holdout group, the fallback (no usable model), a consistency key, every arm removed.

Checked two ways: over the pure rule (`explain_choice` with the engine's own `scored_mode`) for
any distribution, ties forced in; and over real decisions of the real engine (real VW models, a
real SQLite store), in the answer to decide and in `GET /v1/events/{id}`'s rendering of it."""
from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from service.clock import ManualClock
from service.decision.engine import DecideInput, OutcomeInput
from service.decision.explain import SUMMARY, explain_choice, scored_mode
from service.decision.sampling import in_holdout
from service.learning.registry import VersionRegistry
from service.policy import load_policies, parse_policy
from service.runtime import build_engine, build_learner
from service.store import open_store

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "examples" / "policies" / "lifecycle.toml"
START = 1_780_000_000.0
CHANNELS = ("email", "push", "sms", "in_app")
SEGMENTS = ("new_users", "bargain_hunters", "loyal")
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "60"))


def assert_coherent(answer: dict, probabilities: dict[str, float]) -> None:
    """The rule every answer keeps. `probabilities`: every allowed arm's logged probability."""
    mode, chosen = answer["mode"], answer["action"]["arm"]
    expl = answer["explanation"]
    fav, summary = expl["model_favourite"], expl["summary"]
    top = max(probabilities.values(), default=None)
    assert expl["allowed_count"] == len(probabilities)
    if fav is not None:
        assert fav["arm"] in probabilities and fav["probability"] == probabilities[fav["arm"]]
        assert fav["probability"] >= top * (1 - 1e-4), "the favourite is a most probable arm"
    if mode == "exploit":
        assert fav is not None and fav["arm"] == chosen, answer
        assert summary in (SUMMARY["exploit"], SUMMARY["exploit_tied"].format(n=_tied(probabilities)))
        assert (summary == SUMMARY["exploit"]) == (_tied(probabilities) == 1)
    elif mode == "explore":
        if fav is None:
            assert _tied(probabilities) == len(probabilities) > 1, "no favourite: a flat distribution"
            assert summary == SUMMARY["explore_flat"].format(n=len(probabilities))
        else:
            assert fav["arm"] != chosen and fav["probability"] > answer["probability"], answer
            assert summary == SUMMARY["explore"]
    elif mode in ("holdout", "fallback"):
        assert fav is None, "the model did not choose: it names no favourite"
        assert summary in (SUMMARY["holdout"], SUMMARY["fallback"], SUMMARY["fallback_empty"])
        assert (summary == SUMMARY["fallback_empty"]) == (not probabilities)
    else:
        assert mode == "consistent"
        assert summary.startswith(SUMMARY["consistent"])
        if fav is None:
            assert summary.endswith("no favourite among its arms yet")
        else:
            assert summary.endswith("the model's favourite") == (fav["arm"] == chosen)
    if not probabilities:
        assert mode == "fallback" and answer["action"]["hold"]
    else:
        assert probabilities[chosen] == answer["probability"]
    # nothing else in the summary claims a favourite the answer does not name
    if "favourite" in summary and "no favourite" not in summary and "other than" not in summary \
            and "another" not in summary:
        assert fav is not None and fav["arm"] == chosen


def _tied(probabilities: dict[str, float]) -> int:
    top = max(probabilities.values())
    return sum(1 for p in probabilities.values() if p >= top * (1 - 1e-4))


# -- the rule itself, over any distribution -----------------------------------------------------

@st.composite
def distributions(draw):
    """A distribution over 1-8 arms, often with ties (flat included), and a drawn position."""
    n = draw(st.integers(1, 8))
    levels = draw(st.lists(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0]), min_size=n, max_size=n))
    total = sum(levels)
    probs = [x / total for x in levels]
    return probs, draw(st.integers(0, n - 1))


@given(distributions())
@settings(max_examples=EXAMPLES * 5, deadline=None)
def test_the_mode_the_engine_sets_and_the_explanation_agree(case):
    probs, pos = case
    allowed = [f"arm{i}" for i in range(len(probs))]
    mode = scored_mode(probs, pos)
    fav, summary = explain_choice(mode, allowed, probs, allowed[pos])
    answer = {"mode": mode, "action": {"arm": allowed[pos], "hold": False}, "probability": probs[pos],
              "explanation": {"model_favourite": fav, "summary": summary, "allowed_count": len(probs)}}
    assert_coherent(answer, dict(zip(allowed, probs)))


def test_a_fresh_models_flat_distribution_has_no_favourite():
    probs = [1 / 55] * 55
    assert scored_mode(probs, 7) == "explore"
    assert explain_choice("explore", [f"a{i}" for i in range(55)], probs, "a7") == (
        None, SUMMARY["explore_flat"].format(n=55))


def test_a_tie_names_the_chosen_arm_as_the_favourite():
    probs, allowed = [0.4, 0.4, 0.2], ["hold", "b", "c"]
    assert scored_mode(probs, 1) == "exploit"
    fav, summary = explain_choice("exploit", allowed, probs, "b")
    assert fav == {"arm": "b", "probability": 0.4} and summary == SUMMARY["exploit_tied"].format(n=2)
    # a decision logged before ties were read this way (exploit on a flat distribution) still agrees
    fav, summary = explain_choice("exploit", allowed[:2], [0.5, 0.5], "b")
    assert fav["arm"] == "b" and "2 equal favourites" in summary


def test_one_allowed_arm_is_the_favourite():
    assert scored_mode([1.0], 0) == "exploit"
    assert explain_choice("exploit", ["hold"], [1.0], "hold") == ({"arm": "hold", "probability": 1.0},
                                                                  SUMMARY["exploit"])


# -- real decisions of the real engine -----------------------------------------------------------

def _no_hold(data: dict) -> None:
    """The example policy without its hold arm: a person with no consent has no arm left."""
    data["arms"]["hold"] = False
    data["learner"]["fallback_arm"] = "welcome_tips:in_app:now"


def _engine(path: Path, tweak=None):
    data = tomllib.loads(POLICY.read_text())
    if tweak is not None:
        tweak(data)
    policies = {"lifecycle": parse_policy(data, str(POLICY))}
    store = open_store(str(path))
    clock = ManualClock(START)
    engine = build_engine(store, policies, clock, refresh_seconds=0)
    engine.ensure_models()
    return engine, clock


def _train(engine, clock) -> None:
    """A model with opinions: a day of decisions where each segment clicks one content, learned."""
    learner = build_learner(engine.store, engine.policies, clock)
    liked = {"new_users": "welcome_tips", "bargain_hunters": "spring_sale", "loyal": "loyalty_reward"}
    for i in range(450):
        user, segment = f"trainee-{i}", SEGMENTS[i % 3]
        engine.people.set_consent(user, dict.fromkeys(CHANNELS, True), "test", None)
        d = engine.decide("lifecycle", DecideInput(user, {"segment": segment}))
        if d["action"]["content"] == liked[segment]:
            engine.record_outcome(d["event_id"], OutcomeInput("click", 1.0, "c"))
        clock.advance(60)
    clock.advance(2 * 86400)
    assert learner.step("lifecycle") > 0


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """A fresh model (flat), a trained one, a broken one (fallback), a policy without hold."""
    tmp = tmp_path_factory.mktemp("explanations")
    fresh = _engine(tmp / "fresh.db")
    trained = _engine(tmp / "trained.db")
    _train(*trained)
    broken = _engine(tmp / "broken.db")
    registry = VersionRegistry(broken[0].store)
    bad = registry.add_version("lifecycle", b"not a VW model", "", "import", time.time())
    registry.activate("lifecycle", bad, "a version VW cannot load", time.time())
    no_hold = _engine(tmp / "nohold.db", _no_hold)
    built = {"fresh": fresh, "trained": trained, "broken": broken, "no_hold": no_hold}
    yield built
    for engine, _ in built.values():
        engine.store.close()


def _holdout_user(engine) -> str:
    share = engine.policies["lifecycle"].spec.learner.holdout_share
    return next(u for u in (f"h{i}" for i in range(10_000))
                if in_holdout("lifecycle", engine.store.person_key(u), share))


@given(which=st.sampled_from(["fresh", "trained", "trained", "broken", "no_hold"]),
       user=st.sampled_from(["ann", "bob", "cat", "dan", "holdout"]),
       consent=st.fixed_dictionaries({c: st.booleans() for c in CHANNELS}),
       segment=st.sampled_from(SEGMENTS),
       key=st.sampled_from([None, None, "campaign-1", "campaign-2"]),
       minutes=st.integers(0, 3 * 24 * 60))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_real_decision_explains_itself_coherently(engines, which, user, consent, segment, key, minutes):
    engine, clock = engines[which]
    clock.advance(minutes * 60)
    if user == "holdout":
        user = _holdout_user(engine)
    engine.people.set_consent(user, consent, "test", None)
    answer = engine.decide("lifecycle", DecideInput(user, {"segment": segment}, key))
    event = engine.event(answer["event_id"])
    probabilities = {a["arm"]: a["probability"] for a in event["allowed"]}
    assert_coherent(answer, probabilities)
    assert_coherent(event, probabilities)
    if which == "broken" and answer["mode"] != "holdout":
        assert answer["mode"] == "fallback"


def test_the_cases_the_property_covers_all_occur(engines):
    """The real decisions above reach every mode and both kinds of explore."""
    seen = set()
    for which, (engine, clock) in engines.items():
        for i, (consent, key) in enumerate([(True, None), (True, "k"), (True, "k"), (False, None)] * 8):
            user = f"cover-{which}-{i % 4}"
            engine.people.set_consent(user, dict.fromkeys(CHANNELS, consent), "test", None)
            clock.advance(3 * 3600)
            a = engine.decide("lifecycle", DecideInput(user, {"segment": SEGMENTS[i % 3]}, key))
            seen.add((a["mode"], a["explanation"]["model_favourite"] is None))
        holdout = _holdout_user(engine)
        engine.people.set_consent(holdout, dict.fromkeys(CHANNELS, True), "test", None)
        seen.add((engine.decide("lifecycle", DecideInput(holdout, {"segment": "loyal"}))["mode"], True))
    for case in [("explore", True), ("holdout", True), ("fallback", True)]:
        assert case in seen, seen  # a flat explore (the fresh model) among them
    assert {m for m, _ in seen} == {"explore", "exploit", "holdout", "fallback", "consistent"}, seen
    assert ("exploit", False) in seen or ("explore", False) in seen, seen
