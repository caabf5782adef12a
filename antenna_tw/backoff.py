"""The one back-off policy: crash movers, S3 request retries and worker restarts use it."""

from __future__ import annotations

import random

import attr


@attr.s(frozen=True)
class Backoff:
    """
    How long to wait before the next try: exponential backoff with jitter,
    uniform in ``[base / 2, min(cap, base * 2**(failures-1))]``, so a dead
    service is not hammered and a crowd of tries that failed together does
    not retry together.
    """

    base: float = attr.ib(default=1.0)
    cap: float = attr.ib(default=60.0)
    rng: random.Random = attr.ib(factory=random.Random, repr=False, eq=False)

    def ceiling(self, failures: int) -> float:
        """The largest delay after ``failures`` failures in a row."""
        return float(min(self.cap, self.base * (2 ** min(max(failures, 1) - 1, 60))))

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...)."""
        ceiling = self.ceiling(failures)
        return self.rng.uniform(min(self.base / 2, ceiling), ceiling)
