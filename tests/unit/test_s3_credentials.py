"""Credentials: static keys, botocore's chain off the reactor thread, refresh before expiry."""

import datetime

import attr
import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from twisted.internet import defer

from antenna_tw.ext.s3.client import CredentialSource, NoCredentials


class ManualThread:
    """Stands in for deferToThreadPool: records calls and runs them when told."""

    def __init__(self):
        self.calls = []

    def __call__(self, function, *args):
        d = defer.Deferred()
        self.calls.append((function, args, d))
        return d

    def run_all(self):
        calls, self.calls = self.calls, []
        for function, args, d in calls:
            try:
                d.callback(function(*args))
            except Exception as error:  # noqa: BLE001 - handed to the Deferred
                d.errback(error)
        return len(calls)


@attr.s
class FakeSession:
    credentials = attr.ib()
    made = attr.ib(default=0)

    def __call__(self):
        self.made += 1
        return self

    def get_credentials(self):
        return self.credentials


def expiring_in(minutes, access_key="ASIAOLD"):
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    return {"access_key": access_key, "secret_key": "s-" + access_key, "token": "t",
            "expiry_time": expiry.isoformat()}


def frozen_now(source):
    results = []
    source.frozen().addBoth(results.append)
    return results


def test_static_keys_need_no_thread():
    thread = ManualThread()
    source = CredentialSource(thread, "AKIASTATIC", "static-secret")
    [frozen] = frozen_now(source)
    assert (frozen.access_key, frozen.secret_key) == ("AKIASTATIC", "static-secret")
    assert thread.calls == [] and source.method == "settings" and source.static
    assert "static-secret" not in repr(source)


def test_one_key_without_the_other_is_refused():
    with pytest.raises(ValueError, match="go together"):
        CredentialSource(ManualThread(), "AKIA", "")
    with pytest.raises(ValueError):
        CredentialSource(ManualThread(), "", "secret")


def test_the_chain_is_resolved_in_a_thread_once():
    thread = ManualThread()
    session = FakeSession(Credentials("AKIACHAIN", "chain-secret", method="env"))
    source = CredentialSource(thread, make_session=session)
    first, second = frozen_now(source), frozen_now(source)
    assert first == second == [] and session.made == 0  # nothing on the reactor thread
    assert thread.run_all() == 1  # both callers share one resolution
    assert first[0].access_key == second[0].access_key == "AKIACHAIN"
    assert frozen_now(source)[0].access_key == "AKIACHAIN"  # cached: no thread
    assert thread.calls == [] and source.method == "env"


def test_no_credentials_anywhere():
    thread = ManualThread()
    source = CredentialSource(thread, make_session=FakeSession(None))
    results = frozen_now(source)
    thread.run_all()
    assert results[0].check(NoCredentials)
    with pytest.raises(NoCredentials):
        source.resolve_blocking()


def test_credentials_near_expiry_are_refreshed_in_a_thread():
    answers = [expiring_in(5, access_key="ASIAMID"), expiring_in(60, access_key="ASIANEW")]

    def refresh():
        return answers.pop(0)

    near_expiry = RefreshableCredentials.create_from_metadata(
        expiring_in(5), refresh_using=refresh, method="container-role")
    thread = ManualThread()
    source = CredentialSource(thread, make_session=FakeSession(near_expiry))
    assert source.resolve_blocking().access_key == "ASIAMID"  # start-up: may block
    results = frozen_now(source)
    assert results == [] and len(answers) == 1  # still near expiry: off to a thread
    thread.run_all()
    assert results[0].access_key == "ASIANEW" and answers == []
    assert frozen_now(source)[0].access_key == "ASIANEW"  # fresh for an hour: no thread
    assert thread.calls == []


def test_invalidate_resolves_the_chain_afresh_but_keeps_static_keys():
    thread = ManualThread()
    session = FakeSession(Credentials("AKIACHAIN", "s", method="env"))
    source = CredentialSource(thread, make_session=session)
    source.resolve_blocking()
    source.invalidate()
    frozen_now(source)
    assert thread.run_all() == 1 and session.made == 2

    static = CredentialSource(thread, "AKIASTATIC", "s")
    static.invalidate()
    assert frozen_now(static)[0].access_key == "AKIASTATIC"
