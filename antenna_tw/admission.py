"""
When the collector must answer busy (docs/intake.rst, docs/spool.rst).

One ``Admission`` object per process holds every limit that turns an upload
away: the memory the uploads being received hold (MAX_INFLIGHT_BYTES), and the
spool's room (SPOOL_MAX_BYTES, SPOOL_MIN_FREE_BYTES) and whether the process is
shutting down. ``CrashSite`` asks it while a body arrives, ``/submit`` before it
spools a crash, and the heartbeat reads the same figures, and the last spool
write that failed (a spool that cannot take crashes whatever the thresholds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attr

#: How long the heartbeat reports a failed spool write with no successful one since.
RECENT_WRITE_FAILURE = 60.0

if TYPE_CHECKING:  # for mypy only: nothing at run time refers to it
    from twisted.internet.interfaces import IReactorTime

    class SpoolRoom(Protocol):
        """What admission reads of the spool."""

        total_bytes: int
        writing_bytes: int

        def free_bytes(self) -> int:
            """Bytes free on the spool's file system (may raise OSError)."""


@attr.s(auto_attribs=True)
class Admission:
    """
    Decides "busy": an upload is turned away while it arrives when the
    uploads in flight hold more than ``max_inflight_bytes`` (and it is not
    the only one), and a crash is not spooled when the spool holds (or is
    writing) more than ``max_bytes``, its disk has less than
    ``min_free_bytes`` free, or the process is shutting down. The free space
    is read at most once per ``interval`` seconds.
    """

    spool: SpoolRoom
    clock: IReactorTime
    max_bytes: int
    min_free_bytes: int
    max_inflight_bytes: int
    interval: float = 1.0
    #: Bytes held by the uploads being received (see ``Hold``).
    inflight_bytes: int = attr.ib(default=0, init=False)
    closing: bool = attr.ib(default=False, init=False)
    _checked_at: float | None = attr.ib(default=None, init=False)
    _free: int = attr.ib(default=0, init=False)
    # (when, why) of the last spool write, if it failed.
    _write_failure: tuple[float, str] | None = attr.ib(default=None, init=False)

    # -- uploads being received --------------------------------------------

    def hold(self) -> Hold:
        """A new upload's share of the in-flight budget, holding nothing yet."""
        return Hold(self)

    def _count(self, change: int, held: int) -> bool:
        self.inflight_bytes += change
        return self.inflight_bytes > self.max_inflight_bytes and self.inflight_bytes > held

    # -- the spool ---------------------------------------------------------

    def free_bytes(self) -> int:
        """Bytes free under the spool, read at most once per ``interval``; 0 if unreadable."""
        now = self.clock.seconds()
        if self._checked_at is None or now - self._checked_at >= self.interval:
            try:
                self._free = self.spool.free_bytes()
            except OSError:
                self._free = 0
            self._checked_at = now
        return self._free

    def used_bytes(self) -> int:
        """Bytes in the spool plus bytes being written to it."""
        return self.spool.total_bytes + self.spool.writing_bytes

    def write_failed(self, reason: str) -> None:
        """A spool write failed (``reason``: one line, e.g. the OS error)."""
        self._write_failure = (self.clock.seconds(), reason)

    def write_succeeded(self) -> None:
        """A spool write succeeded: the spool takes crashes again."""
        self._write_failure = None

    def write_failure(self) -> str | None:
        """
        Why crashes are refused, when the last spool write failed within
        RECENT_WRITE_FAILURE seconds; else None.
        """
        if self._write_failure is None:
            return None
        when, reason = self._write_failure
        age = self.clock.seconds() - when
        if age > RECENT_WRITE_FAILURE:
            return None
        return f"crashes are refused: the last spool write failed {age:.0f} s ago: {reason}"

    def close(self) -> None:
        """From now on every /submit is answered busy: the process is stopping."""
        self.closing = True

    def busy(self) -> str | None:
        """Why /submit must answer busy now, in a few words; None when it need not."""
        if self.closing:
            return "shutting down"
        if self.used_bytes() > self.max_bytes:
            return "spool is over SPOOL_MAX_BYTES"
        if self.free_bytes() < self.min_free_bytes:
            return "disk under the spool is nearly full"
        return None


class Hold:
    """What one upload holds of its ``Admission``'s in-flight budget."""

    __slots__ = ("_admission", "held")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.held = 0

    def update(self, held: int) -> bool:
        """
        The upload now holds ``held`` bytes. True when it must be answered
        busy: the uploads in flight hold more than MAX_INFLIGHT_BYTES while
        others hold bytes too (a lone upload is bounded by
        MAX_DECOMPRESSED_SIZE alone).
        """
        change, self.held = held - self.held, held
        return self._admission._count(change, held)

    def release(self) -> None:
        """Give back whatever the upload holds."""
        if self.held:
            self._admission.inflight_bytes -= self.held
            self.held = 0
