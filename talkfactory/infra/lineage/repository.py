"""The queries the pipeline and flows need, each one its own short transaction.

Every method is a complete unit of work, so retrying one after a dropped connection
(Postgres restarting between steps) cannot half-apply it. Callers pass ``Provenance`` in;
this module never asks Prefect for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from talkfactory.errors import DatabaseUnavailableError
from talkfactory.infra.lineage.db import make_engine
from talkfactory.infra.lineage.tables import Attempt, Avatar, Clip, Recording, Render, utcnow

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


@dataclass(frozen=True)
class RenderState:
    """A render row as the pipeline needs to see it."""

    id: int
    render_key: str
    status: str
    attempts: int
    output_uri: str | None
    error: str | None
    encoder: str | None
    duration_s: float | None
    wall_s: float | None


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


class LineageRepository:
    """Reads and writes lineage rows."""

    def __init__(self, engine: Engine, *, retry_seconds: float = 60.0) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._retry_seconds = retry_seconds

    @classmethod
    def from_url(cls, url: str) -> LineageRepository:
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

        retrying = Retrying(
            retry=retry_if_exception_type(DatabaseUnavailableError),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            stop=stop_after_attempt(30) | stop_after_delay(self._retry_seconds),
            reraise=True,
        )
        return retrying(attempt)

    # recordings -------------------------------------------------------------------------------

    def register_recording(
        self,
        *,
        uri: str,
        sha256: str,
        size_bytes: int,
        duration_s: float | None,
        probe: dict[str, Any],
        warnings: list[str],
        prov: Provenance,
    ) -> int:
        """Insert or refresh the recording with this content hash; returns its id."""

        def fn(s: Session) -> int:
            row = s.scalar(select(Recording).where(Recording.sha256 == sha256))
            if row is None:
                row = Recording(sha256=sha256, uri=uri, **prov.columns())
                s.add(row)
            row.uri, row.size_bytes, row.duration_s = uri, size_bytes, duration_s
            row.probe, row.warnings, row.status, row.error = probe, warnings, "ok", None
            s.flush()
            return row.id

        return self._upsert("register recording", fn)

    def record_recording_failure(
        self, *, uri: str, sha256: str | None, error: BaseException, prov: Provenance
    ) -> int:
        """Record that a recording could not be used (and why); it is quarantined from later runs."""

        def fn(s: Session) -> int:
            q = select(Recording).where(
                Recording.sha256 == sha256 if sha256 else (Recording.uri == uri) & Recording.sha256.is_(None)
            )
            row = s.scalar(q)
            if row is None:
                row = Recording(sha256=sha256, uri=uri, **prov.columns())
                s.add(row)
            row.status, row.error = "failed", _describe(error)
            s.flush()
            self._add_attempt(s, "recording", row.id, uri, "ingest", error, prov)
            return row.id

        return self._upsert("record recording failure", fn)

    # avatars ----------------------------------------------------------------------------------

    def register_avatar(
        self,
        *,
        content_hash: str,
        name: str,
        uri: str,
        kind: str,
        width: int,
        height: int,
        fps: float,
        num_frames: int,
        face_ratio: float,
        track_uri: str,
        prov: Provenance,
    ) -> int:
        def fn(s: Session) -> int:
            row = s.scalar(select(Avatar).where(Avatar.content_hash == content_hash))
            if row is None:
                row = Avatar(content_hash=content_hash, name=name, uri=uri, kind=kind, **prov.columns())
                s.add(row)
            row.width, row.height, row.fps, row.num_frames = width, height, fps, num_frames
            row.face_ratio, row.track_uri, row.status, row.error = face_ratio, track_uri, "ok", None
            s.flush()
            return row.id

        return self._upsert("register avatar", fn)

    def record_avatar_failure(
        self, *, content_hash: str | None, name: str, uri: str, error: BaseException, prov: Provenance
    ) -> None:
        def fn(s: Session) -> None:
            row = (
                s.scalar(select(Avatar).where(Avatar.content_hash == content_hash)) if content_hash else None
            )
            if row is None and content_hash:
                row = Avatar(content_hash=content_hash, name=name, uri=uri, kind="unknown", **prov.columns())
                s.add(row)
            if row is not None:
                row.status, row.error = "failed", _describe(error)
                s.flush()
            self._add_attempt(s, "avatar", row.id if row else None, uri, "prepare", error, prov)

        self._upsert("record avatar failure", fn)

    # renders ----------------------------------------------------------------------------------

    def get_render(self, render_key: str) -> RenderState | None:
        def fn(s: Session) -> RenderState | None:
            row = s.scalar(select(Render).where(Render.render_key == render_key))
            return _render_state(row) if row else None

        return self._run("read render", fn)

    def begin_render(
        self,
        *,
        render_key: str,
        recording_id: int,
        avatar_id: int,
        clip_id: int | None,
        backend: str,
        backend_version: str,
        params_hash: str,
        params: dict[str, Any],
        prov: Provenance,
    ) -> RenderState:
        """Create the render row if new, count one more attempt, and mark it running."""

        def fn(s: Session) -> RenderState:
            row = s.scalar(select(Render).where(Render.render_key == render_key))
            if row is None:
                row = Render(
                    render_key=render_key,
                    recording_id=recording_id,
                    avatar_id=avatar_id,
                    clip_id=clip_id,
                    backend=backend,
                    backend_version=backend_version,
                    params_hash=params_hash,
                    params=params,
                    attempts=0,
                )
                s.add(row)
            row.attempts = (row.attempts or 0) + 1
            row.status, row.error, row.started_at, row.finished_at = "running", None, utcnow(), None
            for k, v in prov.columns().items():
                setattr(row, k, v)
            s.flush()
            return _render_state(row)

        return self._upsert("begin render", fn)

    def finish_render(
        self,
        render_id: int,
        *,
        output_uri: str,
        encoder: str,
        duration_s: float,
        wall_s: float,
        stats: dict[str, Any],
        prov: Provenance,
    ) -> None:
        def fn(s: Session) -> None:
            row = s.get_one(Render, render_id)
            row.status, row.output_uri, row.encoder = "succeeded", output_uri, encoder
            row.duration_s, row.wall_s, row.stats, row.finished_at = duration_s, wall_s, stats, utcnow()
            s.add(_attempt_row("render", render_id, row.render_key, "render", None, prov, row.started_at))

        self._run("finish render", fn)

    def fail_render(self, render_id: int, *, error: BaseException, prov: Provenance) -> None:
        def fn(s: Session) -> None:
            row = s.get_one(Render, render_id)
            row.status, row.error, row.finished_at = "failed", _describe(error), utcnow()
            s.add(_attempt_row("render", render_id, row.render_key, "render", error, prov, row.started_at))

        self._run("fail render", fn)

    def record_attempt(
        self,
        *,
        subject_kind: str,
        subject_id: int | None,
        subject_ref: str,
        step: str,
        error: BaseException | None,
        prov: Provenance,
    ) -> None:
        self._run(
            "record attempt",
            lambda s: self._add_attempt(s, subject_kind, subject_id, subject_ref, step, error, prov),
        )

    # reads ------------------------------------------------------------------------------------

    def renders_for_recording(self, recording_id: int) -> list[dict[str, Any]]:
        def fn(s: Session) -> list[dict[str, Any]]:
            rows = s.execute(
                select(Render, Avatar.name, Clip.start_s, Clip.end_s)
                .join(Avatar, Avatar.id == Render.avatar_id)
                .outerjoin(Clip, Clip.id == Render.clip_id)
                .where(Render.recording_id == recording_id)
                .order_by(Render.id)
            ).all()
            return [
                {**_row_dict(r), "avatar": name, "clip_start_s": cs, "clip_end_s": ce}
                for r, name, cs, ce in rows
            ]

        return self._run("read renders", fn)

    def attempts_for(self, subject_kind: str, subject_id: int) -> list[dict[str, Any]]:
        def fn(s: Session) -> list[dict[str, Any]]:
            rows = s.scalars(
                select(Attempt)
                .where(Attempt.subject_kind == subject_kind, Attempt.subject_id == subject_id)
                .order_by(Attempt.id)
            ).all()
            return [_row_dict(r) for r in rows]

        return self._run("read attempts", fn)

    def find_recording(self, ref: str) -> dict[str, Any] | None:
        """A recording by id, sha256 (or a prefix of 8+ characters), or uri."""

        def fn(s: Session) -> dict[str, Any] | None:
            q = select(Recording)
            if ref.isdigit():
                q = q.where(Recording.id == int(ref))
            elif len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
                q = q.where(Recording.sha256.startswith(ref))
            else:
                q = q.where(Recording.uri.endswith(ref))
            row = s.scalars(q.order_by(Recording.id.desc())).first()
            return _row_dict(row) if row else None

        return self._run("find recording", fn)

    def find_render_by_output(self, ref: str) -> dict[str, Any] | None:
        def fn(s: Session) -> dict[str, Any] | None:
            row = s.scalars(
                select(Render).where(Render.output_uri.endswith(ref)).order_by(Render.id.desc())
            ).first()
            return _row_dict(row) if row else None

        return self._run("find render", fn)

    # helpers ----------------------------------------------------------------------------------

    def _upsert(self, what: str, fn: Callable[[Session], T]) -> T:
        # Two workers registering the same content race on the unique constraint; the loser re-reads.
        try:
            return self._run(what, fn)
        except IntegrityError:
            return self._run(what, fn)

    @staticmethod
    def _add_attempt(
        s: Session,
        kind: str,
        subject_id: int | None,
        ref: str,
        step: str,
        error: BaseException | None,
        prov: Provenance,
    ) -> None:
        s.add(_attempt_row(kind, subject_id, ref, step, error, prov, None))


def _attempt_row(
    kind: str,
    subject_id: int | None,
    ref: str,
    step: str,
    error: BaseException | None,
    prov: Provenance,
    started_at: datetime | None,
) -> Attempt:
    return Attempt(
        subject_kind=kind,
        subject_id=subject_id,
        subject_ref=ref,
        step=step,
        status="failed" if error else "succeeded",
        error_type=type(error).__name__ if error else None,
        error=_describe(error) if error else None,
        started_at=started_at or utcnow(),
        finished_at=utcnow(),
        **prov.columns(),
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _render_state(row: Render) -> RenderState:
    return RenderState(
        id=row.id,
        render_key=row.render_key,
        status=row.status,
        attempts=row.attempts,
        output_uri=row.output_uri,
        error=row.error,
        encoder=row.encoder,
        duration_s=row.duration_s,
        wall_s=row.wall_s,
    )


def _row_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
