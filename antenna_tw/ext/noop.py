"""No-op crash storage: keeps the last few crashes in memory, for tests."""

from __future__ import annotations

from collections import deque

import attr
from twisted.internet import defer
from zope.interface import implementer

from antenna_tw.config import StorageSettings
from antenna_tw.crash import Crash
from antenna_tw.storage import ICrashStorage


@implementer(ICrashStorage)
@attr.s
class NoOpCrashStorage:
    """Saves nothing durable; remembers the last ``keep`` crashes."""

    keep: int = attr.ib(default=10)
    crashes: deque[Crash] = attr.ib(init=False)
    name = "noop"
    health_ttl = 0.0

    def __attrs_post_init__(self) -> None:
        self.crashes = deque(maxlen=self.keep)

    @classmethod
    def from_settings(cls, settings: StorageSettings, reactor: object, threadpool: object,
                      concurrency: int | None = None) -> NoOpCrashStorage:
        """It needs none of them."""
        return cls()

    def verify(self) -> None:
        """Always usable."""

    def save_crash(self, crash: Crash) -> defer.Deferred[None]:
        """Remember ``crash``."""
        self.crashes.append(crash)
        return defer.succeed(None)

    def check_health(self) -> defer.Deferred[list[str]]:
        """Always healthy."""
        return defer.succeed([])

    def close(self) -> defer.Deferred[None]:
        """Nothing to let go of."""
        return defer.succeed(None)
