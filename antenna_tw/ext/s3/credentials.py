"""
AWS credentials for signing: the two CRASHSTORAGE_* keys, else botocore's
provider chain (environment, shared config, container and instance roles).

The chain may do blocking HTTP (instance metadata, STS, SSO), so it is
resolved and refreshed through ``run_in_thread``, never on the reactor
thread; on the reactor thread only frozen credentials that are not near
expiry are read. botocore's refreshable credentials report
``refresh_needed()`` some minutes before they expire, so a refresh happens
before requests would be refused, and a failed advisory refresh keeps the
old keys while they are still valid.
"""

from __future__ import annotations

import attr
import botocore.session
from botocore.credentials import Credentials, RefreshableCredentials
from twisted.internet import defer

from antenna_tw.ext.s3.shared import SingleFlight


class NoCredentials(Exception):
    """No credentials in the settings nor in botocore's chain."""


def _needs_refresh(credentials):
    return isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed()


@attr.s
class CredentialSource:
    """
    Hands out frozen (read-only) credentials for one request at a time.

    ``run_in_thread(function, *args)`` returns a Deferred of the call run in
    a thread pool. ``make_session`` builds a botocore session (each
    re-resolution uses a fresh one so nothing stale is cached).
    """

    run_in_thread = attr.ib(repr=False)
    access_key = attr.ib(default="", repr=False)
    secret_access_key = attr.ib(default="", repr=False)
    make_session = attr.ib(default=botocore.session.get_session, repr=False)
    _credentials = attr.ib(default=None, init=False, repr=False)
    _flight = attr.ib(factory=SingleFlight, init=False, repr=False)

    def __attrs_post_init__(self):
        if bool(self.access_key) != bool(self.secret_access_key):
            raise ValueError(
                "CRASHSTORAGE_ACCESS_KEY and CRASHSTORAGE_SECRET_ACCESS_KEY go together: "
                "set both, or neither to use the AWS credential chain")
        if self.access_key:
            self._credentials = Credentials(self.access_key, self.secret_access_key,
                                            method="settings")

    @property
    def static(self):
        """True when the keys come from the settings."""
        return bool(self.access_key)

    @property
    def method(self):
        """Where the credentials came from (``settings``, ``env``, ``iam-role``...), or None."""
        return getattr(self._credentials, "method", None)

    def _resolve(self):
        credentials = self.make_session().get_credentials()
        if credentials is None:
            raise NoCredentials(
                "no AWS credentials: set CRASHSTORAGE_ACCESS_KEY and "
                "CRASHSTORAGE_SECRET_ACCESS_KEY, or configure the AWS credential chain")
        return credentials

    def resolve_blocking(self):
        """
        Resolve now, blocking; for start-up, before the reactor runs.
        Returns frozen credentials and keeps the resolved ones for later.
        """
        if self._credentials is None:
            self._credentials = self._resolve()
        return self._credentials.get_frozen_credentials()

    def _resolve_and_freeze(self, credentials):
        # In a worker thread: may do blocking HTTP.
        if credentials is None:
            credentials = self._resolve()
        return credentials, credentials.get_frozen_credentials()

    def _store(self, result):
        self._credentials, frozen = result
        return frozen

    def frozen(self):
        """A Deferred of ``ReadOnlyCredentials`` good for signing a request now."""
        credentials = self._credentials
        if credentials is not None and not _needs_refresh(credentials):
            return defer.succeed(credentials.get_frozen_credentials())
        return self._flight.run(
            lambda: self.run_in_thread(self._resolve_and_freeze, credentials)
            .addCallback(self._store))

    def invalidate(self):
        """
        Forget chain credentials (S3 said the token expired): the next
        request resolves the chain afresh, in a thread. Static keys stay.
        """
        if not self.static:
            self._credentials = None
