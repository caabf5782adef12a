"""CachedHealth: S3's and SQS's heartbeat checks run at most once per ttl, one at a time."""

from __future__ import annotations

from twisted.internet import defer, task

from antenna_tw.ext.s3.client import CachedHealth


def test_a_recent_answer_is_reused_and_a_stale_one_checked_again() -> None:
    clock = task.Clock()
    calls: list[float] = []

    async def check() -> list[str]:
        calls.append(clock.seconds())
        return [f"error {len(calls)}"]

    health = CachedHealth(clock, check)
    assert health(5.0).result == ["error 1"]
    clock.advance(4.9)
    assert health(5.0).result == ["error 1"]
    assert health(0.0).result == ["error 2"]  # the caller's ttl counts, not the first one's
    clock.advance(5.0)
    assert health(5.0).result == ["error 3"]
    assert calls == [0.0, 4.9, 9.9]


def test_callers_during_a_check_share_it() -> None:
    clock = task.Clock()
    answers: list[defer.Deferred[list[str]]] = []

    def check() -> defer.Deferred[list[str]]:
        answers.append(defer.Deferred())
        return answers[-1]

    health = CachedHealth(clock, check)
    first, second = health(5.0), health(5.0)
    assert len(answers) == 1
    answers[0].callback(["down"])
    assert first.result == second.result == ["down"]
    returned = first.result
    returned.append("changed by a caller")
    assert health(5.0).result == ["down"]  # each caller gets its own list
