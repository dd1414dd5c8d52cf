"""The offline tools' error: an evaluation (or retraining) that cannot run, and why."""


class EvaluationError(ValueError):
    """The evaluation cannot run: names what is wrong (a target, the log)."""
