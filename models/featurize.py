"""Turn a person's context and history, and a policy's arms, into Vowpal Wabbit text.

Namespaces (VW keys interactions on the first letter):
  User     the request context (segment, country, tenure, ...)
  History  recent contact pressure, computed from the store at decision time
  Arm      the arm's parts: content id, topic, tags, channel, timing and numeric content
           features; the hold arm is the single feature `hold`.
  Id       the arm itself (`arm=content.channel.timing`), apart from its parts, so that the
           policy's `vw_args` decide whether the model may learn a table of arms of its own:
           `-q UI` crosses it with the context (each segment's own table), `--ignore I` leaves it
           out (the example policy's choice: see docs/policies.md).
  Rest     the hold arm alone (`hold`), written only for a model that crosses it (`-q HR`; see
           `with_rest`): contact pressure crossed with it moves the choice between holding and
           sending, with a weight per level of pressure rather than one per content, channel and
           timing as `-q HA` has.
The policy's `vw_args` choose the interactions (by default `-q UA --ignore I`).
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

_UNSAFE = re.compile(r"[\s|:]+")


_TOKENS: dict[str, str] = {}  # names and values repeat: the learner featurizes thousands a second


def _tok(value: object) -> str:
    """A VW-safe token: no whitespace, no '|' and no ':'."""
    text = str(value)
    token = _TOKENS.get(text)
    if token is None:
        token = _UNSAFE.sub("_", text) or "_"
        if len(_TOKENS) < 65536:
            _TOKENS[text] = token
    return token


HISTORY_FEATURES = ("contacts_7d", "recency")

# what the learning-curve study (scripts/learning_curve.py) compares to know that a Tactful run it
# kept was made with today's features: change it with anything a model's features depend on
FEATURES_VERSION = "3: numbers also as half-octave bins, h-tokens"


def history_features(contacts_7d: int, hours_since_contact: float | None,
                     preferred_channels: Iterable[str] | None = None) -> dict:
    """What we know of the person's recent contact pressure, and the channels they said they
    prefer (a soft signal the learner may use; blocked channels are a guardrail instead)."""
    if hours_since_contact is None:
        recency = "never"
    elif hours_since_contact < 24:
        recency = "lt1d"
    elif hours_since_contact < 72:
        recency = "lt3d"
    elif hours_since_contact < 168:
        recency = "lt7d"
    else:
        recency = "ge7d"
    out: dict = {"contacts_7d": float(contacts_7d), "recency": recency}
    if preferred_channels:
        out["preferred_channels"] = sorted(preferred_channels)
    return out


def half_octave_bin(value: float) -> int:
    """The bin of a finite number on a scale of half-octaves, signed: k = floor(2 * log2(1 + |x|)),
    -k below 0. Bins start at 0, 1, 2, 3, 5, 7, 11, 15, 22, 31, 45, 63, 90, 127, 181, 255, 362,
    511, 724...: for tenure in days, a few days apart in the first weeks, a month apart after
    three months, a season apart after a year. Computed on integers (the bit length of n*n for n =
    int(|x|) + 1), so that no rounding moves a number across a bin's edge. Half-octaves rather
    than octaves: docs/quality.md, "One grid of half-octave bins", measured both; with octave
    bins, a preference that changes inside a bin (at a month, half a year) was learned only
    as the bin's average."""
    n = int(abs(value)) + 1
    k = (n * n).bit_length() - 1
    return -k if value < 0 else k


def _features(values: Mapping[str, object]) -> str:
    parts = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            parts.append(f"{_tok(name)}={'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            v = float(value)
            if math.isfinite(v):
                # log scale keeps large counts (tenure in days) in a range SGD likes; the bin lets
                # a model crossing it with the arms (-q UA) learn what a linear weight cannot
                scaled = math.copysign(math.log1p(abs(v)), v)
                tok = _tok(name)
                parts.append(f"{tok}:{scaled:.6g} {tok}=h{half_octave_bin(v)}")
        else:
            parts.append(f"{_tok(name)}={_tok(value)}")
    return " ".join(parts)


def shared_line(context: Mapping[str, object], history: Mapping[str, object]) -> str:
    """The shared (person) example. Only HISTORY_FEATURES are read from `history`, so a logged
    decision's history (which also records, say, its fatigue count) featurizes exactly as it did
    when the decision was made."""
    return join_shared(user_features(context), history_parts(history))


def user_features(context: Mapping[str, object]) -> str:
    """The User namespace's features of a context (the first part of `shared_line`)."""
    return _features(context)


def history_parts(history: Mapping[str, object]) -> tuple[str, str]:
    """What `shared_line` writes of a history: the preferred channels (a suffix of the User
    namespace, possibly empty) and the History namespace's features. Apart from `user_features`
    so that a caller featurizing many decisions can keep each part by the text it came from (the
    online learner: service/learning/rows.py)."""
    hist = {k: history[k] for k in HISTORY_FEATURES if k in history}
    prefers = " ".join(f"prefers={_tok(ch)}" for ch in history.get("preferred_channels") or ())
    # in User, so that the User x Arm interaction crosses a preference with the arm's channel
    return (" " + prefers if prefers else ""), _features(hist)


def join_shared(user: str, history: tuple[str, str]) -> str:
    """The shared line of a context's `user_features` and a history's `history_parts`."""
    return f"shared |User {user}{history[0]} |History {history[1]}"


HOLD_LINE = "|Arm hold"
REST = " |Rest hold"


def with_rest(lines: Iterable[str], interactions: Iterable[str]) -> list[str]:
    """The arm lines, the hold arm's with the Rest namespace when one of the model's interactions
    (`-q HR` is `HR`) names it; other models' lines unchanged, so their hold arm keeps one
    feature. A policy that crosses Rest also gives `--ignore_linear R`: alone, `Rest hold` would
    repeat `Arm hold`."""
    lines = list(lines)
    if any("R" in term for term in interactions):
        lines = [line + REST if line == HOLD_LINE else line for line in lines]
    return lines


def arm_line(content_id: str | None, topic: str | None = None, tags: Iterable[str] = (),
             channel: str | None = None, timing: str | None = None,
             numeric: Mapping[str, float] | None = None) -> str:
    if content_id is None:
        return HOLD_LINE
    c, ch, t = _tok(content_id), _tok(channel), _tok(timing)
    toks = [f"content={c}", f"topic={_tok(topic)}", f"channel={ch}", f"timing={t}"]
    toks += [f"tag={_tok(tag)}" for tag in tags]
    toks += [f"{_tok(k)}:{float(v):.6g}" for k, v in (numeric or {}).items()]
    # the arm itself, in a namespace of its own: crossed with the context (-q UI) it lets the
    # model learn a segment's own table of arms -- a favourite that is not the sum of a favourite
    # content, channel and timing -- at the price of a weight per segment and arm, which a few
    # unlucky early outcomes can sink for good under greedy exploration; `--ignore I` drops it
    return "|Arm " + " ".join(toks) + f" |Id arm={c}.{ch}.{t}"


def label_action(line: str, cost: float, probability: float) -> str:
    """The chosen action's line with its cb label `0:cost:probability`."""
    return f"0:{cost:.6f}:{probability:.6f} {line}"


def flatten_features(groups: Iterable[Mapping[str, object]]) -> dict[str, object]:
    """Personalizer's feature lists (a list of JSON objects, values possibly nested objects or
    lists) as one flat mapping: nested keys joined with `.`, a list of scalars as one feature per
    item (`name=item`, as a categorical), numbers and booleans kept, everything else a string."""
    out: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, Mapping):
                    walk(prefix, item)
                elif item is not None:
                    out[f"{prefix}={item}"] = True
        elif value is not None:
            out[prefix] = value

    for group in groups:
        walk("", group)
    return out


def action_line(action_id: str, features: Mapping[str, object]) -> str:
    """A per-request action (Personalizer's `actions`): its features in the Arm namespace, so the
    policy's `-q UA` crosses them with the context, and its id in the Id namespace as for catalog
    arms."""
    return f"|Arm {_features(features)} |Id arm={_tok(action_id)}"
