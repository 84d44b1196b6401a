"""The reconnect delay schedule, as a pure function of the policy and a random source."""

from __future__ import annotations

import random
from collections.abc import Iterator

from .._types import Backoff

__all__ = ["delays"]


def delays(policy: Backoff, rng: random.Random) -> Iterator[float]:
    """Yield the wait before each retry: ``initial * multiplier**n`` capped at ``maximum``,
    then varied uniformly by ``± jitter`` of itself and floored at zero.

    Ends after ``policy.max_attempts - 1`` delays (the first attempt needs no wait); endless when
    ``max_attempts`` is None.
    """
    produced = 0
    exponent = 0
    while policy.max_attempts is None or produced < policy.max_attempts - 1:
        base = min(policy.initial * policy.multiplier**exponent, policy.maximum)
        spread = base * policy.jitter
        yield max(0.0, base + rng.uniform(-spread, spread))
        produced += 1
        # Once capped the exponent no longer matters: stop it growing (it would overflow).
        if base < policy.maximum:
            exponent += 1
