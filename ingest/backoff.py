"""Exponential backoff with jitter, for every retry loop."""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["backoff"]


def backoff(initial: float = 0.1, cap: float = 5.0) -> Iterator[float]:
    """Endless delays doubling from ``initial`` up to ``cap``, each drawn from ``[d/2, d]`` against stampedes."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)
