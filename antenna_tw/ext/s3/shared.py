"""One call at a time, its result shared by every caller who asked meanwhile."""

from __future__ import annotations

import attr
from twisted.internet import defer
from twisted.python.failure import Failure


@attr.s
class SingleFlight:
    """
    ``run(start)`` calls ``start()`` (which returns a Deferred or a value)
    unless a call is already under way; every caller gets a Deferred of that
    call's result. Used so that many crash movers waiting for credentials,
    or many heartbeats, cause one refresh or one HEAD, not one each.
    """

    _waiters = attr.ib(default=None, init=False, repr=False)

    @property
    def running(self):
        return self._waiters is not None

    def run(self, start):
        waiter = defer.Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        defer.maybeDeferred(start).addBoth(self._finish)
        return waiter

    def _finish(self, result):
        waiters, self._waiters = self._waiters, None
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        return None
