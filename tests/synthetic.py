"""A small synthetic population for learning tests: two segments that prefer different
(content, channel, timing) arms of the `lifecycle` policy.

Click probability is additive in whether the content, the channel and the timing match the
segment's favourites, so the best arm of each segment (all three match) is unique.
"""
from __future__ import annotations

import numpy as np

BEST = {
    "bargain_hunters": ("spring_sale", "email", "evening"),
    "new_users": ("feature_tour", "push", "next_morning"),
}
CHANNELS = ("email", "push", "sms", "in_app")


def click_probability(segment: str, arm: str) -> float:
    if arm == "hold":
        return 0.0
    content, channel, timing = arm.split(":")
    b_content, b_channel, b_timing = BEST[segment]
    return 0.02 + 0.3 * (content == b_content) + 0.25 * (channel == b_channel) + 0.25 * (timing == b_timing)


def uniform_value(arms: list[str], segment: str) -> float:
    """Expected clicks of uniform random choice over `arms` for a segment."""
    return float(np.mean([click_probability(segment, a) for a in arms]))


def best_arm(segment: str) -> str:
    return ":".join(BEST[segment])
