"""The decision's randomness, all of it derived from ids so that every draw can be audited and
replayed: the uniform number behind each choice comes from the event id, and membership of the
holdout group from the policy and the person's key."""
from __future__ import annotations

import hashlib
from bisect import bisect_right
from itertools import accumulate


def uniform_draw(event_id: str) -> float:
    """A number in [0, 1) derived from the event id, so every draw can be audited and replayed."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sample(pmf, u: float) -> int:
    """The position drawn by `u` in [0, 1) from the probabilities `pmf` (a list or an array)."""
    cdf = list(accumulate(pmf))
    return min(bisect_right(cdf, u * cdf[-1]), len(cdf) - 1)


def in_holdout(policy_name: str, key: str, share: float) -> bool:
    """Is this person in the policy's holdout group? A stable share of people, by their key."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{policy_name}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share
