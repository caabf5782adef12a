"""No-op crash storage: keeps the last few crashes in memory, for tests."""

from collections import deque

import attr
from twisted.internet import defer
from zope.interface import implementer

from antenna_tw.storage import ICrashStorage


@implementer(ICrashStorage)
@attr.s
class NoOpCrashStorage:
    """Saves nothing durable; remembers the last ``keep`` crashes."""

    keep = attr.ib(default=10)
    crashes = attr.ib(init=False)
    name = "noop"

    def __attrs_post_init__(self):
        self.crashes = deque(maxlen=self.keep)

    @classmethod
    def from_settings(cls, settings, reactor, threadpool, concurrency=None):
        return cls()

    def verify(self):
        pass

    def save_crash(self, crash):
        self.crashes.append(crash)
        return defer.succeed(None)

    def check_health(self):
        return defer.succeed([])
