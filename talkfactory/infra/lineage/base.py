"""What every lineage query stands on: one short transaction per call, retried when the database drops
out, and the provenance each write carries.

Every repository method is a complete unit of work, so retrying one after a dropped connection
(Postgres restarting between steps) cannot half-apply it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from talkfactory.errors import DatabaseUnavailableError
from talkfactory.infra.lineage.db import make_engine
from talkfactory.infra.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Provenance:
    """What is producing a row; ``code_version`` is talkfactory's version."""

    flow_run_id: str | None = None
    task_run_id: str | None = None
    code_version: str | None = None

    def columns(self) -> dict[str, str | None]:
        return {
            "flow_run_id": self.flow_run_id,
            "task_run_id": self.task_run_id,
            "code_version": self.code_version,
        }


class RepositoryBase:
    """An engine and the transaction runner the query classes share."""

    def __init__(self, engine: Engine, *, retry_seconds: float = 60.0) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._retry_seconds = retry_seconds

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(make_engine(url))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def _run(self, what: str, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a fresh transaction, retrying the whole unit when the database drops out."""

        def attempt() -> T:
            try:
                with self.session() as s:
                    return fn(s)
            except (OperationalError, DBAPIError) as exc:
                if _is_disconnect(exc):
                    log.warning("lineage database unavailable during %s (%s); retrying", what, exc.orig)
                    raise DatabaseUnavailableError(str(exc.orig), subject="lineage database") from exc
                raise

        # A Postgres restart takes seconds: short first waits, many attempts, bounded in time.
        policy = RetryPolicy(attempts=30, max_seconds=self._retry_seconds, base=0.2, cap=5.0)
        # Only a dropped database is retried here: a render another process holds (RenderBusyError,
        # transient too) is the caller's to wait for.
        return policy.decorator(retry_if=lambda e: isinstance(e, DatabaseUnavailableError))(attempt)()

    def _upsert(self, what: str, fn: Callable[[Session], T]) -> T:
        # Two workers registering the same content race on the unique constraint; the loser re-reads.
        try:
            return self._run(what, fn)
        except IntegrityError:
            return self._run(what, fn)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def error_text(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    return describe(error)


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc).lower()
        return any(
            s in text
            for s in (
                "server closed",
                "connection",
                "terminating",
                "could not serialize",
                "database is locked",
            )
        )
    return False
