"""transient_retry: what is retried, how often, how long, and what gets logged."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from talkfactory.errors import ObjectNotFoundError, StoreUnavailableError
from talkfactory.infra.retry import NO_RETRY, RetryPolicy, transient_retry


class Clock:
    """A fake sleep that records waits (tenacity measures elapsed time with its own clock)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def flaky(failures: int, error: Exception) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "done"

    return calls, fn


def test_transient_errors_are_retried_with_growing_jittered_waits(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    calls, fn = flaky(3, StoreUnavailableError("reset", subject="s3://b/k.flv"))
    wrapped = transient_retry(attempts=5, max_seconds=60, base=0.5, cap=8, sleep=clock)(fn)
    caplog.set_level(logging.WARNING, logger="talkfactory.retry")
    assert wrapped() == "done"
    assert len(calls) == 4
    assert len(clock.waits) == 3
    for n, wait in enumerate(clock.waits):
        assert 0.5 * 2**n <= wait <= 0.5 * 2**n + 0.5
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert all(
        "s3://b/k.flv" in line and "StoreUnavailableError" in line and "reset" in line for line in lines
    )
    assert "attempt 1/5" in lines[0] and "attempt 3/5" in lines[2]


def test_waits_are_capped() -> None:
    clock = Clock()
    _, fn = flaky(6, StoreUnavailableError("down"))
    transient_retry(attempts=7, max_seconds=600, base=1, cap=3, sleep=clock)(fn)()
    assert max(clock.waits) <= 3


def test_permanent_errors_are_raised_at_once() -> None:
    clock = Clock()
    calls, fn = flaky(1, ObjectNotFoundError("no such key", subject="s3://b/x"))
    with pytest.raises(ObjectNotFoundError):
        transient_retry(sleep=clock)(fn)()
    assert len(calls) == 1 and clock.waits == []


def test_gives_up_after_the_attempts_with_the_last_error(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    error = StoreUnavailableError("refused", subject="s3://b/k")
    calls, fn = flaky(99, error)
    caplog.set_level(logging.WARNING, logger="talkfactory.retry")
    with pytest.raises(StoreUnavailableError) as info:
        transient_retry(attempts=3, sleep=clock)(fn)()
    assert info.value is error  # not wrapped in tenacity.RetryError
    assert len(calls) == 3
    assert caplog.records[-1].getMessage().startswith("giving up")


def test_total_time_is_bounded_before_the_attempts_run_out() -> None:
    # Real sleeps this time: with base 0.2 the third wait (0.8 s) would end past max_seconds=1.
    calls, fn = flaky(99, StoreUnavailableError("down"))
    with pytest.raises(StoreUnavailableError):
        transient_retry(attempts=50, max_seconds=1.0, base=0.2, cap=5)(fn)()
    assert 2 <= len(calls) <= 4


def test_policy_values() -> None:
    assert RetryPolicy().attempts == 5 and NO_RETRY.attempts == 1
    calls, fn = flaky(1, StoreUnavailableError("once"))
    with pytest.raises(StoreUnavailableError):
        NO_RETRY.decorator()(fn)()
    assert len(calls) == 1
    for bad in ({"attempts": 0}, {"max_seconds": 0}, {"base": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_custom_predicate_for_other_callers() -> None:
    clock = Clock()
    calls, fn = flaky(2, OSError("db says try again"))
    wrapped = transient_retry(retry_if=lambda e: isinstance(e, OSError), sleep=clock)(fn)
    assert wrapped() == "done" and len(calls) == 3
