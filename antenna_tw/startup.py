"""
The start-up checks of storage and the publisher, and what they may stop.

A definitive misconfiguration (no such bucket or queue, access denied, bad
credentials) stops the start with one line. Storage or a publisher that does
not answer (refused, timed out, a 5xx) does not: the collector starts and
answers ``/submit`` from its spool, the heartbeat reports the outage, and
the crash movers and the publish queue keep trying (docs/s3.rst,
*Start-up check*). Imported by the ``--workers`` parent: nothing here
imports the reactor or the web stack.
"""

from __future__ import annotations

from collections.abc import Callable

from antenna_tw.logs import Logger
from antenna_tw.publisher import PublisherUnreachable
from antenna_tw.storage import StorageUnreachable


def start_up_check(verify: Callable[[], None], log: Logger) -> None:
    """
    Run a start-up ``verify``. StorageUnavailable and PublisherUnavailable
    (a misconfiguration) go through to the caller, which refuses to start;
    their Unreachable subclasses (nothing answered) are logged as a warning
    and the start goes on.
    """
    try:
        verify()
    except (StorageUnreachable, PublisherUnreachable) as error:
        log.warn("{problem}; starting all the same: crashes wait in the spool until it answers",
                 problem=str(error))
