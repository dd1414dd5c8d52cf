"""The learner: Vowpal Wabbit `--cb_explore_adf` over a fixed catalogue of arms.

VW only ever sees the allowed arms of a decision; its action indices are positions in that
subset, which callers map back to arm ids. Parsing text examples is most of VW's cost with many
arms, so each arm's action example is parsed once per workspace and reused for every
prediction; only the shared (person) example is parsed per request.

The Python binding saves models to files only: `to_bytes` and `from_bytes` go through a
temporary file.

A model file carries only some of the arguments it was trained with: the reductions, exploration,
interactions, bits, learning rate and power_t, but not, for instance, `--l1`, `--l2` or
`--decay_learning_rate` (VW 9.11). Predicting needs only what the file carries; whoever continues
learning from stored bytes must give the model's own arguments again (`vw_args` with
`model_bytes`), or it learns with VW's defaults for the rest. `stored_options` and
`resume_conflicts` tell whether given arguments describe a stored model at all.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import Sequence

import numpy as np
import pylibvw
import vowpalwabbit as vw
from vowpalwabbit import pyvw

from models.featurize import label_action, with_rest

_CB = vw.LabelType.CONTEXTUAL_BANDIT
_CB_VALUE = _CB.value
_ACTION_SCORES = (vw.PredictionType.ACTION_PROBS, vw.PredictionType.ACTION_SCORES)


class VWPolicy:
    """One VW workspace and the parsed action examples of a catalogue of arms.

    `arm_lines[i]` is the VW text of arm i (see models.featurize.arm_line). With `model_bytes`,
    `vw_args` (without `--cb_explore_adf`) are given to VW beside the model file: the arguments the
    model was trained with, for whoever continues learning from it (see the module's docstring).
    """

    def __init__(self, arm_lines: Sequence[str], vw_args: str = "", seed: int = 0,
                 model_bytes: bytes | None = None):
        self.vw_args = vw_args
        self.seed = seed
        if model_bytes is None:
            self.ws = vw.Workspace(f"--cb_explore_adf {vw_args} --random_seed {seed} --quiet")
        else:
            self.ws = _load(model_bytes, vw_args)
        self.arm_lines = with_rest(arm_lines, interactions(self.ws))
        self._actions: list[pyvw.Example] | None = None
        self._prediction_type = self.ws.get_prediction_type()
        self._blanks: list[pylibvw.example] | None = [] if learns_chosen_only(self.ws) else None

    @property
    def actions(self) -> list[pyvw.Example]:
        if self._actions is None:
            self._actions = [pyvw.Example(self.ws, line, _CB) for line in self.arm_lines]
        return self._actions

    def predict(self, shared: str, allowed: Sequence[int]) -> np.ndarray:
        """The probability of each allowed arm (in the order given); sums to 1."""
        actions = self.actions
        examples = [pyvw.Example(self.ws, shared, _CB)] + [actions[i] for i in allowed]
        # what Workspace.predict does for a list of parsed examples, without its per-call type
        # checks (a tenth of a prediction's cost at 50 arms)
        pylibvw.vw.predict_multi(self.ws, examples)
        # Example.get_prediction builds a table of every prediction type's getter on each call
        # (2.7 us against 0.8 for the getter alone)
        probs = (examples[0].get_action_scores() if self._prediction_type in _ACTION_SCORES
                 else examples[0].get_prediction(self._prediction_type))
        total = sum(probs)
        if len(probs) != len(allowed) or not math.isfinite(total) or total <= 0:
            raise ValueError(f"VW returned an unusable distribution over {len(allowed)} arms")
        return np.array(probs) / total

    def predict_text(self, shared: str, allowed: Sequence[int]) -> np.ndarray:
        """The same as `predict`, parsing every line: the baseline the benchmark compares with."""
        pmf = np.asarray(self.ws.predict([shared] + [self.arm_lines[i] for i in allowed]), dtype=float)
        return pmf / pmf.sum()

    def learn(self, shared: str, allowed: Sequence[int], chosen: int, cost: float, probability: float) -> None:
        """Learn from one logged decision: `chosen` is a position in `allowed`.

        Only the shared line and the chosen (labelled) arm are parsed; the other arms reuse the
        cached action examples, as predictions do, or featureless stand-ins where VW learns the
        chosen arm's example alone. The model learned is bit-identical to parsing every line
        (tests/test_vw_learn_cached.py), and learning is several times faster."""
        ws = self.ws
        # the native examples pyvw.Example wraps, without its Python constructor (5 us an example,
        # a sixth of learning a decision): VW is given the same examples either way
        if self._blanks is None:
            others = self.actions
            examples = [pylibvw.example(ws, _CB_VALUE, shared)] + [others[arm] for arm in allowed]
        else:
            # only the chosen arm's example is learned (see learns_chosen_only): the others need
            # only be there, and featureless ones cost VW a fraction of the arms' own
            while len(self._blanks) < len(allowed):
                self._blanks.append(pylibvw.example(ws, _CB_VALUE, ""))
            examples = [pylibvw.example(ws, _CB_VALUE, shared)] + self._blanks[:len(allowed)]
        examples[chosen + 1] = pylibvw.example(ws, _CB_VALUE,
                                               label_action(self.arm_lines[allowed[chosen]], cost, probability))
        pylibvw.vw.learn_multi(self.ws, examples)  # Workspace.learn without its per-call type checks

    def learn_text(self, shared: str, allowed: Sequence[int], chosen: int, cost: float, probability: float) -> None:
        """The same as `learn`, parsing every line: the reference `learn` is checked against."""
        lines = [shared]
        for pos, arm in enumerate(allowed):
            line = self.arm_lines[arm]
            lines.append(label_action(line, cost, probability) if pos == chosen else line)
        self.ws.learn(lines)

    def predict_lines(self, shared: str, lines: Sequence[str]) -> np.ndarray:
        """The probability of each action given as VW text (per-request actions, whose lines are
        not the workspace's catalogue); sums to 1."""
        probs = self.ws.predict([shared, *lines])
        total = sum(probs)
        if len(probs) != len(lines) or not math.isfinite(total) or total <= 0:
            raise ValueError(f"VW returned an unusable distribution over {len(lines)} actions")
        return np.array(probs) / total

    def learn_lines(self, shared: str, lines: Sequence[str], chosen: int, cost: float, probability: float) -> None:
        """Learn from one logged decision over actions given as VW text: `chosen` is a position in
        `lines`."""
        self.ws.learn([shared] + [label_action(line, cost, probability) if pos == chosen else line
                                  for pos, line in enumerate(lines)])

    def to_bytes(self) -> bytes:
        return _save(self.ws)

    def close(self) -> None:
        self._actions = None
        self._blanks = None if self._blanks is None else []
        self.ws.finish()


# The reduction stacks whose update, for one logged decision, touches the chosen arm's example
# alone: `--cb_type mtr` (VW's default for --cb_explore_adf) learns a regression on that example,
# weighted by 1/probability and by the running ratio of decisions to arms seen -- which counts the
# arms, not their features; greedy and SquareCB exploration (without --elim) pass learning straight
# down. VW still predicts every arm before it learns, so the other arms can be featureless
# examples and the model is the same, bit for bit (tests/test_vw_learn_cached.py). Other stacks
# (ips, dr, bagging, cover, ...) use every arm's features and get the arms themselves.
_CHOSEN_ONLY_STACKS = ({"gd", "scorer-identity", "csoaa_ldf-rank", "cb_adf", "shared_feature_merger", explore}
                       for explore in ("cb_explore_adf_greedy", "cb_explore_adf_squarecb"))
_CHOSEN_ONLY = [frozenset(stack) for stack in _CHOSEN_ONLY_STACKS]


def learns_chosen_only(ws: vw.Workspace) -> bool:
    """Whether learning a decision changes the model through its chosen arm's example alone."""
    options = _options(ws)
    return (frozenset(ws.get_enabled_learners()) in _CHOSEN_ONLY and options.get("cb_type") == ["mtr"]
            and "elim" not in options)


def _load(model_bytes: bytes, vw_args: str = "") -> vw.Workspace:
    fd, path = tempfile.mkstemp(suffix=".vw")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model_bytes)
        # the model file carries its reductions and interactions; `vw_args` add what it does not
        return vw.Workspace(f"-i {path} {vw_args} --quiet")
    finally:
        os.unlink(path)


_NOT_OPTIONS = {"initial_regressor", "quiet", "no_stdin"}


def _options(ws: vw.Workspace) -> dict[str, list[str]]:
    """The options a workspace runs with, as VW reports them: name -> values (several for `-q`)."""
    out: dict[str, list[str]] = {}
    name = None
    args = ws.get_arguments()
    for token in (args.split() if isinstance(args, str) else args):
        if token.startswith("--"):
            name = token[2:]
            out.setdefault(name, [])
        elif name is not None:
            out[name].append(token)
    for key in _NOT_OPTIONS:
        out.pop(key, None)
    return {k: sorted(v) for k, v in out.items()}


def interactions(ws: vw.Workspace) -> list[str]:
    """The namespace interactions a workspace runs with (`-q UA` is `UA`)."""
    options = _options(ws)
    return options.get("quadratic", []) + options.get("cubic", []) + options.get("interactions", [])


def stored_options(model_bytes: bytes) -> dict[str, list[str]]:
    """The options a model file carries (what VW runs with when given the file alone)."""
    ws = _load(model_bytes)
    try:
        return _options(ws)
    finally:
        ws.finish()


def options_args(options: dict[str, list[str]]) -> str:
    """Options as `stored_options` gives them, back as arguments (without `--cb_explore_adf`, which
    every Tactful model has and callers add)."""
    parts = []
    for name, values in options.items():
        if name == "cb_explore_adf":
            continue
        parts += [f"--{name} {v}" for v in values] if values else [f"--{name}"]
    return " ".join(parts)


def resume_conflicts(model_bytes: bytes, vw_args: str) -> list[str]:
    """Why `vw_args` do not describe this model, or [] when they do.

    VW lets command-line arguments override what the file carries, silently: a different
    `--epsilon`, `-q HA` in place of the file's `-q UA`, an added `--squarecb`; others (`-b`) it
    refuses. Either way the model that would go on learning is not the one that was stored. The
    test: load the model with the arguments, save it, and compare what that file carries with what
    the original carries. Each conflict names the option and both values."""
    stored = stored_options(model_bytes)
    try:
        ws = _load(model_bytes, vw_args)
    except RuntimeError as exc:  # VW refuses, e.g. "Disagreeing option values for 'bit_precision'"
        return [str(exc)]
    try:
        resaved = stored_options(_save(ws))
    finally:
        ws.finish()
    return [f"--{name}: the model has {' '.join(stored.get(name, ['(nothing)'])) or '(set)'}, the arguments "
            f"make it {' '.join(resaved.get(name, ['(nothing)'])) or '(set)'}"
            for name in sorted(set(stored) | set(resaved)) if stored.get(name) != resaved.get(name)]


def _save(ws: vw.Workspace) -> bytes:
    fd, path = tempfile.mkstemp(suffix=".vw")
    os.close(fd)
    try:
        ws.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def check_model(model_bytes: bytes) -> None:
    """Raise RuntimeError (VW's reason) unless VW loads these bytes as a model."""
    _load(model_bytes).finish()
