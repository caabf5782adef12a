"""
What the collector relies on in Twisted beyond its public API.

Each function names the private attribute it reads or sets and why; the
tests in ``tests/unit/test_adapters_twisted.py`` pin that behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet import tcp

# -- twisted.application: services -------------------------------------------


# -- twisted.web: the HTTP server (intake) -----------------------------------


# -- twisted.web: the HTTP client (S3) ---------------------------------------


# -- twisted.internet: transports and ports (workers) ------------------------


def close_without_shutdown(transport: tcp.Connection) -> None:
    """
    Close this process's descriptor of the TCP connection ``transport``
    without ending the connection: another process holds it now (its
    descriptor went over SCM_RIGHTS, ``antenna_tw.workers.balance``).

    ``loseConnection`` calls ``shutdown(SHUT_RDWR)`` before ``close()``,
    which would end the connection for every process holding it; Twisted
    skips it when ``tcp._SocketCloser._shouldShutdown`` is false, as it does
    itself for a port adopted with ``adoptStreamPort``. There is no public
    way: ``abortConnection`` sets SO_LINGER to 0, which resets the
    connection at the other process's close. Pinned by
    ``tests/unit/test_adapters_twisted_workers.py``.
    """
    transport._shouldShutdown = False
    transport.loseConnection()
