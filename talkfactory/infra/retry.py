"""One retry policy for everything that talks to a server (object stores, the lineage database).

Only ``TransientError`` is retried (``talkfactory.errors``): adapters translate their client's exceptions
first, so the policy never has to know about urllib3 or psycopg2. Waits grow exponentially with additive
jitter, so parallel workers hitting the same restarting server spread out, while the minimum total wait
stays predictable (0.5 + 1 + 2 + 4 s with the defaults: enough to ride out a SeaweedFS or Postgres restart).
Both the attempt count and the elapsed time are bounded: a retry is not started when its wait would end
past ``max_seconds``, so a call gives up within ``max_seconds`` plus the duration of one attempt.

Example::

    from talkfactory.infra.retry import transient_retry

    @transient_retry(attempts=5, max_seconds=30)
    def fetch(key: str) -> bytes:
        try:
            return client.get(key)
        except ConnectionResetError as exc:
            raise StoreUnavailableError(str(exc), subject=key) from exc

Each retry is logged at WARNING with the error's ``subject`` (the key or URL), its type and message, and
the wait; the final failure is re-raised unchanged (not wrapped in ``tenacity.RetryError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import tenacity

from talkfactory.errors import is_transient

logger = logging.getLogger("talkfactory.retry")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of one retry loop; ``transient_retry(**vars)`` as a value adapters can take as a parameter."""

    attempts: int = 5
    """Most calls in total, the first included."""
    max_seconds: float = 30.0
    """No retry starts whose wait would end later than this after the first call began."""
    base: float = 0.5
    """First wait in seconds; each further wait doubles, plus up to ``base`` of random jitter."""
    cap: float = 8.0
    """Longest single wait."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_seconds <= 0 or self.base < 0 or self.cap < 0:
            raise ValueError(f"impossible retry bounds: {self}")

    def decorator(
        self,
        *,
        retry_if: Callable[[BaseException], bool] = is_transient,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Callable[[F], F]:
        return transient_retry(
            attempts=self.attempts,
            max_seconds=self.max_seconds,
            base=self.base,
            cap=self.cap,
            retry_if=retry_if,
            sleep=sleep,
        )


NO_RETRY = RetryPolicy(attempts=1)
"""For callers that retry at a higher level (a Prefect task with its own retries)."""


def transient_retry(
    *,
    attempts: int = 5,
    max_seconds: float = 30.0,
    base: float = 0.5,
    cap: float = 8.0,
    retry_if: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[F], F]:
    """Decorator factory: retry the wrapped call while it raises an error ``retry_if`` accepts.

    Args:
        attempts: most calls in total (1 disables retrying).
        max_seconds: bound on elapsed time; see the module docstring.
        base: first wait; waits are ``min(cap, base * 2**n + uniform(0, base))``.
        cap: longest single wait.
        retry_if: which exceptions are worth another call; ``is_transient`` by default.
        sleep: injected by tests to run without waiting.
    """
    RetryPolicy(attempts, max_seconds, base, cap)  # validates the bounds

    def decorate(fn: F) -> F:
        name = getattr(fn, "__qualname__", repr(fn))
        retrying = tenacity.retry(
            retry=tenacity.retry_if_exception(retry_if),
            stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(max_seconds),
            wait=tenacity.wait_exponential_jitter(multiplier=base, max=cap, jitter=base),
            before_sleep=lambda state: _log_retry(name, attempts, state),
            retry_error_callback=lambda state: _give_up(name, state),
            sleep=sleep,
            reraise=True,
        )
        return cast(F, retrying(fn))

    return decorate


def _subject(exc: BaseException | None) -> str:
    subject = getattr(exc, "subject", None)
    return str(subject) if subject else "?"


def _log_retry(name: str, attempts: int, state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.warning(
        "retrying %s for %s: attempt %d/%d failed with %s: %s; next attempt in %.1f s",
        name,
        _subject(exc),
        state.attempt_number,
        attempts,
        type(exc).__name__,
        getattr(exc, "message", exc),
        wait,
    )


def _give_up(name: str, state: tenacity.RetryCallState) -> Any:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "giving up %s for %s after %d attempts in %.1f s: %s: %s",
        name,
        _subject(exc),
        state.attempt_number,
        state.seconds_since_start or 0.0,
        type(exc).__name__,
        getattr(exc, "message", exc),
    )
    assert state.outcome is not None
    return state.outcome.result()  # re-raises the last error unchanged


__all__ = ["NO_RETRY", "RetryPolicy", "transient_retry"]
