"""Policy files: the example loads as documented, and every error names the file, the key and
the reason (PolicyError's .path, .key, .reason and its message)."""
from __future__ import annotations

import pickle
import shutil
import tomllib
from pathlib import Path

import pytest

from service.policy import HOLD_ARM, PolicyError, load_policies, load_policy, parse_policy
from service.policy.spec import Content, Learner, PolicySpec, Reward, Timing

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples" / "policies"

# A small valid policy; each error test below changes one thing in it.
MINIMAL = """\
name = "mini"
channels = ["email", "push"]

[[content]]
id = "hello"
topic = "onboarding"

[[content]]
id = "promo"
topic = "promotion"

[[timing]]
name = "now"
delay_minutes = 0

[[timing]]
name = "evening"
at = "19:00"

[[guardrails.caps]]
channel = "push"
max = 1
window = "1d"

[reward]
window = "2d"
weights = { click = 1.0 }
"""


def write(tmp_path: Path, text: str, name: str = "mini.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def replace(old: str, new: str, text: str = MINIMAL) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def policy_error(path: Path, key: str, *reason_parts: str) -> PolicyError:
    """Load `path`, expect a PolicyError about `key`, whose reason carries every part."""
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    err = info.value
    assert err.path == str(path)
    assert err.key == key, err
    assert err.reason.strip()
    for part in reason_parts:
        assert part in err.reason, f"{part!r} not in {err.reason!r}"
    message = str(err)
    assert message == f"{path}: {key or '(file)'}: {err.reason}"
    assert str(path) in message and err.reason in message
    if key:
        assert key in message
    return err


# -- the example ---------------------------------------------------------------------------------

def test_minimal_policy_loads(tmp_path):
    policy = load_policy(write(tmp_path, MINIMAL))
    assert policy.name == "mini"
    assert len(policy.arms) == 1 + 2 * 2 * 2
    assert policy.arms[0].id == HOLD_ARM


def test_load_examples():
    policies = load_policies(EXAMPLES)
    assert "lifecycle" in policies
    p = policies["lifecycle"]
    spec = p.spec
    assert p.path == str(EXAMPLES / "lifecycle.toml")
    assert len(spec.content) >= 6
    assert set(spec.channels) == {"email", "push", "sms", "in_app"}
    assert len(spec.timing) >= 3
    assert HOLD_ARM in p.arm_index and p.arms[p.arm_index[HOLD_ARM]].hold
    assert set(spec.features) >= {"segment", "country", "tenure_days"}
    assert spec.features["segment"].type == "string" and spec.features["segment"].required
    assert spec.features["tenure_days"].type == "number" and spec.features["tenure_days"].min == 0
    caps = {(c.channel, c.max, c.window) for c in spec.guardrails.caps}
    assert caps >= {("push", 1, 86400.0), ("email", 3, 7 * 86400.0), ("*", 5, 7 * 86400.0)}
    # every arm that is not hold is a (content, channel, timing) combination
    for arm in p.arms:
        if not arm.hold:
            assert arm.id == f"{arm.content.id}:{arm.channel}:{arm.timing.name}"
            assert arm.channel in spec.channels


def test_load_policy_of_the_example_file_matches_load_policies():
    p = load_policy(EXAMPLES / "lifecycle.toml")
    assert [a.id for a in p.arms] == [a.id for a in load_policies(EXAMPLES)["lifecycle"].arms]


def test_name_defaults_to_the_file_stem(tmp_path):
    path = write(tmp_path, replace('name = "mini"\n', ""), name="welcome-flow.toml")
    assert load_policy(path).name == "welcome-flow"


# -- errors name the file, the key and the reason --------------------------------------------------

def test_invalid_toml_syntax(tmp_path):
    path = write(tmp_path, replace('channels = ["email", "push"]', 'channels = ["email", "push"'))
    policy_error(path, "", "not valid TOML")


def test_unreadable_file(tmp_path):
    policy_error(tmp_path / "absent.toml", "", "cannot be read")


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, replace('name = "mini"', 'name = "mini"\ncolour = "blue"'))
    policy_error(path, "colour", "unknown key")


def test_policy_error_survives_pickling(tmp_path):
    """A worker process's error (a simulation in a process pool) reaches the parent as itself."""
    err = policy_error(write(tmp_path, replace('name = "mini"', 'name = "mini"\ncolour = "blue"')), "colour")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is PolicyError
    assert (back.path, back.key, back.reason, str(back)) == (err.path, err.key, err.reason, str(err))


def test_unknown_nested_key(tmp_path):
    path = write(tmp_path, replace('window = "2d"\nweights', 'window = "2d"\nwieghts = {}\nweights'))
    policy_error(path, "reward.wieghts", "unknown key")


@pytest.mark.parametrize("window", ['"7 days"', '"7x"', '"-1d"', "0", "true"])
def test_bad_duration(tmp_path, window):
    path = write(tmp_path, replace('max = 1\nwindow = "1d"', f"max = 1\nwindow = {window}"))
    err = policy_error(path, "guardrails.caps[0].window")
    assert "duration" in err.reason


def test_bad_duration_names_the_value(tmp_path):
    path = write(tmp_path, replace('[reward]\nwindow = "2d"', '[reward]\nwindow = "7 days"'))
    policy_error(path, "reward.window", "'7 days'", "is not a duration")


def test_unknown_channel_in_a_cap(tmp_path):
    path = write(tmp_path, replace('channel = "push"', 'channel = "fax"'))
    policy_error(path, "guardrails.caps[0].channel", "'fax'", "unknown channel")


def test_unknown_channel_in_consent(tmp_path):
    path = write(tmp_path, MINIMAL + '\n[guardrails.consent]\nemail = "opt_in"\nfax = "opt_out"\n')
    policy_error(path, "guardrails.consent.fax", "'fax'", "unknown channel")


def test_duplicate_content_id(tmp_path):
    path = write(tmp_path, replace('id = "promo"', 'id = "hello"'))
    policy_error(path, "content[1].id", "'hello'", "unique")


def test_duplicate_timing_name(tmp_path):
    path = write(tmp_path, replace('name = "evening"', 'name = "now"'))
    policy_error(path, "timing[1].name", "'now'", "unique")


def test_timing_with_both_delay_minutes_and_at(tmp_path):
    path = write(tmp_path, replace('name = "evening"\nat = "19:00"',
                                   'name = "evening"\nat = "19:00"\ndelay_minutes = 30'))
    policy_error(path, "timing[1]", "exactly one of delay_minutes or at")


def test_timing_with_neither_delay_minutes_nor_at(tmp_path):
    path = write(tmp_path, replace('name = "now"\ndelay_minutes = 0', 'name = "now"'))
    policy_error(path, "timing[0]", "exactly one of delay_minutes or at")


def test_bad_local_time(tmp_path):
    path = write(tmp_path, replace('at = "19:00"', 'at = "7pm"'))
    policy_error(path, "timing[1].at", "'7pm'", "local time")


def test_bad_time_zone(tmp_path):
    path = write(tmp_path, replace('name = "mini"', 'name = "mini"\ntimezone = "Mars/Olympus_Mons"'))
    policy_error(path, "timezone", "'Mars/Olympus_Mons'", "time zone")


def test_fallback_arm_not_an_arm(tmp_path):
    path = write(tmp_path, MINIMAL + '\n[learner]\nfallback_arm = "promo:sms:now"\n')
    policy_error(path, "learner.fallback_arm", "'promo:sms:now'", "not an arm")


def test_fallback_arm_hold_without_hold_arm(tmp_path):
    path = write(tmp_path, MINIMAL + "\n[arms]\nhold = false\n")
    policy_error(path, "learner.fallback_arm", "'hold'", "not an arm")


@pytest.mark.parametrize("flag", ["-d", "--data", "-f", "--cb_explore_adf"])
def test_vw_args_with_io_or_reduction_flags(tmp_path, flag):
    path = write(tmp_path, MINIMAL + f'\n[learner]\nvw_args = "--squarecb {flag} x.txt"\n')
    policy_error(path, "learner.vw_args", flag, "set by Tactful itself")


def test_empty_reward_weights(tmp_path):
    path = write(tmp_path, replace("weights = { click = 1.0 }", "weights = {}"))
    policy_error(path, "reward.weights", "at least one outcome type")


def test_missing_reward(tmp_path):
    path = write(tmp_path, replace('[reward]\nwindow = "2d"\nweights = { click = 1.0 }\n', ""))
    policy_error(path, "reward", "required")


@pytest.mark.parametrize("window", ['"1d"', '"25h"'])
def test_a_reward_window_that_closes_before_a_send_is_refused(tmp_path, window):
    # the evening slot can send up to a day after the decision (25 hours the night the clocks go
    # back): its outcomes would come after the reward is final
    path = write(tmp_path, replace('[reward]\nwindow = "2d"', f"[reward]\nwindow = {window}"))
    err = policy_error(path, "reward.window", f"{window.strip(chr(34))} is not longer than the wait before timing 'evening'",
                       "up to 25h after the decision (the night the clocks go back)",
                       "learner would be told they earned nothing", "make the window longer than 25h")
    assert "quiet hours" not in err.reason
    assert load_policy(write(tmp_path, replace('[reward]\nwindow = "2d"', '[reward]\nwindow = "26h"'))).spec.reward.window == 26 * 3600


def test_the_refusal_names_the_slot_that_waits_longest(tmp_path):
    # two delay slots, neither at a local time: no clock change in the message
    text = replace('at = "19:00"', "delay_minutes = 180",
                   replace('delay_minutes = 0', "delay_minutes = 90", replace('[reward]\nwindow = "2d"', '[reward]\nwindow = "2h"')))
    err = policy_error(write(tmp_path, text), "reward.window", "2h is not longer", "timing 'evening'",
                       "up to 3h after the decision.", "longer than 3h")
    assert "clocks" not in err.reason and "'now'" not in err.reason
    assert load_policy(write(tmp_path, text.replace('window = "2h"', 'window = "4h"'))).spec.reward.window == 4 * 3600


def test_quiet_hours_that_move_sends_lengthen_the_wait(tmp_path):
    # a send landing at 21:00 waits until 08:00: 11 hours, and 12 the night the clocks go back
    quiet = '\n[guardrails]\nquiet_hours = { start = "21:00", end = "08:00" }\n'
    only_now = replace('[[timing]]\nname = "evening"\nat = "19:00"\n', "")
    text = replace('[reward]\nwindow = "2d"', '[reward]\nwindow = "6h"', only_now) + quiet
    policy_error(write(tmp_path, text), "reward.window", "timing 'now'", "up to 12h after the decision",
                 "(the night the clocks go back, its quiet hours included)")
    # removing the arms instead of moving their sends waits for nothing
    removed = text.replace('end = "08:00" }', 'end = "08:00", action = "remove" }')
    assert load_policy(write(tmp_path, removed)).spec.reward.window == 6 * 3600
    # a slot at a local time inside the quiet hours waits a day and then until they end
    late = replace('at = "19:00"', 'at = "22:00"', replace('[reward]\nwindow = "2d"', '[reward]\nwindow = "30h"')) + quiet
    policy_error(write(tmp_path, late), "reward.window", "timing 'evening'", "up to 35h after the decision")
    assert load_policy(write(tmp_path, late.replace('window = "30h"', ''))).spec.reward.window == 34 * 3600 + 86400


def test_the_default_reward_window_is_a_day_after_the_longest_wait(tmp_path):
    text = replace('[reward]\nwindow = "2d"\n', "[reward]\n")
    assert load_policy(write(tmp_path, text)).spec.reward.window == 2 * 86400  # evening: up to a day later
    now_only = replace('[[timing]]\nname = "evening"\nat = "19:00"\n', "", text)
    assert load_policy(write(tmp_path, now_only)).spec.reward.window == 86400
    later = replace('at = "19:00"', "delay_minutes = 180", text)
    assert load_policy(write(tmp_path, later)).spec.reward.window == 86400 + 3 * 3600
    as_text = replace('at = "19:00"', 'delay_minutes = "180"', text)  # a number in a string, as pydantic takes it
    assert load_policy(write(tmp_path, as_text)).spec.reward.window == 86400 + 3 * 3600


def test_the_default_reward_window_of_a_policy_built_in_code(tmp_path):
    spec = PolicySpec(name="coded", channels=("email",), content=[Content(id="a", topic="t")],
                      timing=[Timing(name="evening", at="19:00")], reward=Reward(weights={"click": 1.0}))
    assert spec.reward.window == 2 * 86400
    given = Reward(window="3d", weights={"click": 1.0})
    assert PolicySpec(name="coded", channels=("email",), content=[Content(id="a", topic="t")],
                      timing=[Timing(name="evening", at="19:00")], reward=given).reward.window == 3 * 86400


def test_a_personalizer_policy_is_not_held_to_send_slots(tmp_path):
    # its decisions close after the Rank call's reward wait, not after reward.window
    spec = parse_policy({"name": "p", "kind": "personalizer", "timing": [{"name": "evening", "at": "19:00"}],
                         "reward": {"window": "1h", "weights": {"click": 1.0}}}).spec
    assert spec.reward.window == 3600


def test_an_infinite_delay_is_refused(tmp_path):
    policy_error(write(tmp_path, replace("delay_minutes = 0", "delay_minutes = inf")), "timing[0].delay_minutes")


def test_unknown_content_in_an_exclusion(tmp_path):
    path = write(tmp_path, MINIMAL + '\n[arms]\nexclude = [{ content = "hello" }, { content = "bye" }]\n')
    policy_error(path, "arms.exclude[1].content", "'bye'")


def test_everything_excluded(tmp_path):
    exclude = 'exclude = [{ channel = "email" }, { channel = "push" }]'
    path = write(tmp_path, MINIMAL + f"\n[arms]\nhold = false\n{exclude}\n")
    policy_error(path, "arms", "no arm is left")


# -- directories --------------------------------------------------------------------------------------

def test_directory_with_no_toml(tmp_path):
    (tmp_path / "README.md").write_text("no policies here")
    (tmp_path / "lifecycle.toml.bak").write_text(MINIMAL)
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    err = info.value
    assert err.path == str(tmp_path) and err.key == ""
    assert "no *.toml" in err.reason
    assert str(err) == f"{tmp_path}: (file): {err.reason}"


def test_one_policy_file_in_place_of_a_directory(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert list(load_policies(path)) == [load_policy(path).name]
    missing = tmp_path / "nowhere"
    with pytest.raises(PolicyError) as info:
        load_policies(missing)
    assert info.value.path == str(missing)
    assert "neither a directory of policy files nor a policy file" in info.value.reason


def test_two_files_declaring_the_same_policy(tmp_path):
    first = write(tmp_path, MINIMAL, name="a.toml")
    second = write(tmp_path, MINIMAL, name="b.toml")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    err = info.value
    assert err.path == str(second)
    assert err.key == "name"
    assert "'mini'" in err.reason and "declared twice" in err.reason and str(first) in err.reason
    assert str(err).startswith(f"{second}: name: ")


def test_an_error_in_one_file_names_that_file(tmp_path):
    write(tmp_path, MINIMAL, name="a.toml")
    bad = write(tmp_path, replace('name = "mini"', 'name = "other"\ncolour = 1'), name="b.toml")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert info.value.path == str(bad) and info.value.key == "colour"


def test_directory_with_several_policies(tmp_path):
    shutil.copy(EXAMPLES / "lifecycle.toml", tmp_path / "lifecycle.toml")
    write(tmp_path, MINIMAL, name="mini.toml")
    assert sorted(load_policies(tmp_path)) == ["lifecycle", "mini"]


def test_default_learner_is_the_examples():
    """The default `vw_args` and the example's are one choice (docs/policies.md), written twice:
    a policy without `[learner]` learns as the example does."""
    from_file = tomllib.loads((EXAMPLES / "lifecycle.toml").read_text())["learner"]["vw_args"]
    assert Learner().vw_args == from_file
