"""
The heartbeat's background checks (``antenna_tw.health``): a recent answer is
reused, callers during a run share it, a run past its bound counts as
failing, and a heartbeat never waits longer than ANSWER_WAIT (task.Clock).
"""

from __future__ import annotations

from twisted.internet import defer, task

from antenna_tw.health import ANSWER_WAIT, CHECK_BOUND, REFRESH_INTERVAL, HealthChecks, Probe


def fired(deferred: defer.Deferred) -> bool:
    results: list[object] = []
    deferred.addBoth(results.append)
    return bool(results)


def test_a_recent_answer_is_reused_and_a_stale_one_checked_again() -> None:
    clock = task.Clock()
    calls: list[float] = []

    def check() -> defer.Deferred[list[str]]:
        calls.append(clock.seconds())
        return defer.succeed([f"error {len(calls)}"])

    checks = HealthChecks(clock, [Probe("storage", check, clock, ttl=5.0)])
    assert fired(checks.settle()) and checks.errors("storage") == ["error 1"]
    clock.advance(4.9)
    assert fired(checks.settle()) and checks.errors("storage") == ["error 1"]
    clock.advance(0.1)
    assert fired(checks.settle()) and checks.errors("storage") == ["error 2"]
    assert calls == [0.0, 5.0]


def by_hand(clock: task.Clock, name: str) -> tuple[HealthChecks, list[defer.Deferred]]:
    """Checks of one probe whose runs end when the test fires them."""
    runs: list[defer.Deferred[list[str]]] = []

    def check() -> defer.Deferred[list[str]]:
        runs.append(defer.Deferred())
        return runs[-1]

    return HealthChecks(clock, [Probe(name, check, clock)]), runs


def test_callers_during_a_run_share_it() -> None:
    clock = task.Clock()
    checks, runs = by_hand(clock, "publisher")
    first, second = checks.settle(), checks.settle()
    assert len(runs) == 1 and not fired(first)
    runs[0].callback(["down"])
    assert fired(first) and fired(second)
    assert checks.errors("publisher") == ["down"]


def test_a_hung_check_is_answered_from_the_last_state_then_counts_as_failing() -> None:
    clock = task.Clock()
    checks, runs = by_hand(clock, "storage")
    checks.start()  # the first run at start-up
    runs[0].callback([])
    clock.advance(1.0)
    settled = checks.settle()  # stale (ttl 0): a second run, which hangs
    assert len(runs) == 2 and not fired(settled)
    clock.advance(ANSWER_WAIT)
    assert fired(settled)  # answered in time, from the last state, with its age
    assert checks.errors("storage") == []
    assert checks.ages() == {"storage": {"age_seconds": 1.5, "running_seconds": 0.5}}
    clock.advance(CHECK_BOUND)
    assert checks.errors("storage") == [
        f"storage check: no answer for {CHECK_BOUND + ANSWER_WAIT:.1f} s "
        f"(bound {CHECK_BOUND:g} s)"]
    # Overdue: a heartbeat no longer waits for it at all, nor starts another run.
    assert fired(checks.settle()) and len(runs) == 2
    runs[1].callback(["S3 bucket: no answer"])
    assert checks.errors("storage") == ["S3 bucket: no answer"]


def test_checks_run_in_the_background_until_stopped() -> None:
    clock = task.Clock()
    calls: list[float] = []

    def check() -> defer.Deferred[list[str]]:
        calls.append(clock.seconds())
        return defer.succeed([])

    checks = HealthChecks(clock, [Probe("spool", check, clock)])
    checks.start()
    clock.pump([REFRESH_INTERVAL] * 3)
    checks.stop()
    clock.advance(REFRESH_INTERVAL * 3)
    assert calls == [0.0, REFRESH_INTERVAL, 2 * REFRESH_INTERVAL, 3 * REFRESH_INTERVAL]
    assert clock.getDelayedCalls() == []


def test_a_failing_check_is_an_error_not_a_500() -> None:
    clock = task.Clock()
    checks = HealthChecks(clock, [Probe("storage", lambda: defer.fail(OSError("EIO")), clock)])
    assert fired(checks.settle())
    assert checks.errors("storage") == ["check failed: EIO"]
