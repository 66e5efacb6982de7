"""The queries the pipeline and flows need, each one its own short transaction.

Every method is a complete unit of work, so retrying one after a dropped connection
(Postgres restarting between steps) cannot half-apply it. Callers pass ``Provenance`` in;
this module never asks Prefect for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from talkfactory.errors import DatabaseUnavailableError, InterruptedRunError, RenderBusyError
from talkfactory.infra.children import ProcessOwner
from talkfactory.infra.lineage.db import make_engine
from talkfactory.infra.lineage.tables import (
    Attempt,
    Avatar,
    Clip,
    Export,
    IngestLook,
    Recording,
    Render,
    SourceObject,
    utcnow,
)
from talkfactory.infra.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

SOURCE_LOOKUP_BATCH = 500
"""Keys per lookup query: far below SQLite's 32,766 bound parameters and cheap for Postgres to plan."""


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
class ClipRow:
    """One clip as lineage stores it; times are seconds on the recording's timeline."""

    start_s: float
    end_s: float
    speaker: str | None
    loudness_lufs: float | None
    snr_db: float | None
    audio_uri: str
    audio48_uri: str


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

        # A Postgres restart takes seconds: short first waits, many attempts, bounded in time.
        policy = RetryPolicy(attempts=30, max_seconds=self._retry_seconds, base=0.2, cap=5.0)
        # Only a dropped database is retried here: a render another process holds is the caller's to wait for.
        return policy.decorator(retry_if=lambda e: isinstance(e, DatabaseUnavailableError))(attempt)()

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
        """Insert or refresh the avatar with this content hash and make it its name's version in use.

        The other active versions of the same ``name`` become inactive, ``superseded_by`` this row.
        That includes an older content hash registered again: when a user puts an old file back, the
        library on disk is what they mean, so that content is the version in use again and the one
        that had replaced it is superseded in turn. A retired name (it has usable versions and none is
        active, see ``lineage.avatars.set_avatar_active``) stays retired: the row is refreshed but left
        inactive, so a file still lying in the library cannot undo an explicit retirement.
        """

        def fn(s: Session) -> int:
            row = s.scalar(select(Avatar).where(Avatar.content_hash == content_hash))
            versions = list(s.scalars(select(Avatar).where(Avatar.name == (row.name if row else name))))
            usable = [v for v in versions if v.status == "ok"]
            retired = bool(usable) and not any(v.active for v in usable)
            if row is None:
                row = Avatar(content_hash=content_hash, name=name, uri=uri, kind=kind, **prov.columns())
                s.add(row)
            row.width, row.height, row.fps, row.num_frames = width, height, fps, num_frames
            row.face_ratio, row.track_uri, row.status, row.error = face_ratio, track_uri, "ok", None
            row.active = not retired
            if row.active:
                row.superseded_by = None
            s.flush()
            for other in versions:
                if row.active and other.id != row.id and other.active:
                    other.active, other.superseded_by = False, row.id
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

    # clips ------------------------------------------------------------------------------------

    def register_clips(
        self,
        *,
        recording_id: int,
        params_hash: str,
        params: dict[str, Any],
        denoiser: str,
        denoiser_version: str,
        clips: list[ClipRow],
        prov: Provenance,
    ) -> list[int]:
        """Insert the clips of one speech pass (or find them, when the same pass ran before); ids in order."""

        def fn(s: Session) -> list[int]:
            ids = []
            for c in clips:
                row = s.scalar(
                    select(Clip).where(
                        Clip.recording_id == recording_id,
                        Clip.params_hash == params_hash,
                        Clip.start_s == c.start_s,
                        Clip.end_s == c.end_s,
                    )
                )
                if row is None:
                    row = Clip(
                        recording_id=recording_id,
                        params_hash=params_hash,
                        start_s=c.start_s,
                        end_s=c.end_s,
                        **prov.columns(),
                    )
                    s.add(row)
                row.speaker, row.denoiser, row.denoiser_version = c.speaker, denoiser, denoiser_version
                row.params, row.loudness_lufs, row.snr_db = params, c.loudness_lufs, c.snr_db
                row.audio_uri, row.audio48_uri = c.audio_uri, c.audio48_uri
                s.flush()
                ids.append(row.id)
            return ids

        return self._upsert("register clips", fn)

    # renders ----------------------------------------------------------------------------------

    def get_render(self, render_key: str) -> RenderState | None:
        def fn(s: Session) -> RenderState | None:
            row = s.scalar(select(Render).where(Render.render_key == render_key))
            return _render_state(row) if row else None

        return self._run("read render", fn)

    def render_stats(self, render_key: str) -> dict[str, Any] | None:
        """The ``stats`` JSON of a render (its owner while it runs, timings once it is done)."""

        def fn(s: Session) -> dict[str, Any] | None:
            return s.scalar(select(Render.stats).where(Render.render_key == render_key))

        return self._run("read render stats", fn)

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
        """Create the render row if new, count one more attempt, and mark it running, owned by this process.

        ``RenderBusyError`` when another live process on this host is rendering the same key right now
        (two runs of one recording and avatar at once): the caller waits for it
        (``wait_while_rendered_elsewhere``) instead of rendering the same thing twice.
        """
        me = ProcessOwner.current()

        def fn(s: Session) -> RenderState:
            row = s.scalar(select(Render).where(Render.render_key == render_key))
            if row is not None and row.status == "running":
                owner = render_owner(row.stats)
                # Only a process this host can see running blocks the render: an owner on another
                # host may be long dead (its worker crashed), and the zombie automation handles those.
                if owner is not None and owner.pid != me.pid and owner.is_running_here():
                    raise RenderBusyError(
                        f"render {row.id} is being rendered by process {owner.pid} on {owner.host}",
                        subject=render_key,
                    )
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
            # Who renders it: a reader can tell a live render from one whose process was killed.
            row.stats = {**(row.stats or {}), _OWNER: me.to_dict()}
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
        """Record the end of a render that did not succeed: ``interrupted`` when it was stopped on
        request (Ctrl-C; not a failure, nothing to retry for), else ``failed``."""
        status = "interrupted" if isinstance(error, InterruptedRunError) else "failed"

        def fn(s: Session) -> None:
            row = s.get_one(Render, render_id)
            row.status, row.error, row.finished_at = status, _describe(error), utcnow()
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

    # =========================================================================================
    # source objects: the ingest cursor (registered objects), last looks, and exports
    # =========================================================================================
    #
    # A scan lists the ingest location page by page and asks ``known_source_objects`` about a whole
    # page at once (one SELECT per ``SOURCE_LOOKUP_BATCH`` keys), so 10,000 objects cost ~20 queries.
    # Registration is idempotent on (bucket, key, etag): of two scans racing on one object, one
    # creates the row (and processes it), the other is told it already exists.

    def known_source_objects(
        self, bucket: str, keys: Iterable[str], *, batch_size: int = SOURCE_LOOKUP_BATCH
    ) -> dict[tuple[str, str], SourceObjectState]:
        """Every registered version of these keys in ``bucket``, by (key, etag); one query per batch."""
        unique = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], SourceObjectState] = {}
        for start in range(0, len(unique), max(1, batch_size)):
            chunk = unique[start : start + max(1, batch_size)]

            def fn(s: Session, chunk: list[str] = chunk) -> list[SourceObjectState]:
                rows = s.execute(
                    select(*_SOURCE_COLUMNS).where(SourceObject.bucket == bucket, SourceObject.key.in_(chunk))
                ).all()
                return [SourceObjectState(**row._asdict()) for row in rows]

            for state in self._run("look up source objects", fn):
                found[(state.key, state.etag)] = state
        return found

    def register_source_object(
        self,
        *,
        store_url: str,
        bucket: str,
        key: str,
        etag: str,
        size_bytes: int,
        prov: Provenance,
        status: SourceStatus = "registered",
        error: BaseException | str | None = None,
    ) -> tuple[SourceObjectState, bool]:
        """Register (bucket, key, etag) once; returns its row and whether this call created it.

        A new row starts in ``status`` (``processing`` claims it at once, counting attempt 1;
        ``quarantined`` with ``error`` records an object that can never be used, such as a bad key).
        The object's pending look, if any, is forgotten in the same transaction. When the row already
        exists nothing is changed and ``created`` is False, also when a concurrent insert won the race.
        """
        text = _error_text(error)

        def fn(s: Session) -> tuple[SourceObjectState, bool]:
            row = s.scalar(
                select(SourceObject).where(
                    SourceObject.bucket == bucket, SourceObject.key == key, SourceObject.etag == etag
                )
            )
            if row is not None:
                return _source_state(row), False
            row = SourceObject(
                store_url=store_url,
                bucket=bucket,
                key=key,
                etag=etag,
                size_bytes=size_bytes,
                status=status,
                error=text,
                attempts=1 if status == "processing" else 0,
                **prov.columns(),
            )
            s.add(row)
            s.flush()
            s.execute(delete(IngestLook).where(IngestLook.bucket == bucket, IngestLook.key == key))
            if status in _FINAL_SOURCE_STATUSES:
                s.add(_source_attempt(row, status, error, prov))
            return _source_state(row), True

        return self._upsert("register source object", fn)

    def claim_source_object(
        self, source_id: int, *, expected_status: str, expected_attempts: int, prov: Provenance
    ) -> bool:
        """Move a row read as (status, attempts) to ``processing`` and count an attempt, atomically.

        False when another scan changed the row since it was read (it claimed it first): a
        compare-and-set, so two scans retrying the same failed object never both process it.
        """

        def fn(s: Session) -> bool:
            result = s.execute(
                update(SourceObject)
                .where(
                    SourceObject.id == source_id,
                    SourceObject.status == expected_status,
                    SourceObject.attempts == expected_attempts,
                )
                .values(
                    status="processing",
                    attempts=SourceObject.attempts + 1,
                    error=None,
                    updated_at=utcnow(),
                    **prov.columns(),
                )
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

        return self._run("claim source object", fn)

    def mark_source_object(
        self,
        source_id: int,
        status: SourceStatus,
        *,
        prov: Provenance,
        error: BaseException | str | None = None,
        recording_id: int | None = None,
        sha256: str | None = None,
    ) -> None:
        """Set a source object's status (and error, recording link, content hash when given).

        ``done``, ``failed`` and ``quarantined`` also add an ``attempts`` row (subject ``source``), so
        every try at an object stays readable after a later one succeeds.
        """
        text = _error_text(error)

        def fn(s: Session) -> None:
            row = s.get_one(SourceObject, source_id)
            row.status, row.error, row.updated_at = status, text, utcnow()
            if recording_id is not None:
                row.recording_id = recording_id
            if sha256 is not None:
                row.sha256 = sha256
            elif row.sha256 is None and row.recording_id is not None:
                # The object's content is the recording's: a path that never hashed the download
                # itself (a dispatched process-recording run) still records the sha256 it had.
                row.sha256 = s.scalar(select(Recording.sha256).where(Recording.id == row.recording_id))
            if status in _FINAL_SOURCE_STATUSES:
                s.add(_source_attempt(row, status, error, prov))

        self._run("mark source object", fn)

    def previous_looks(
        self, bucket: str, keys: Iterable[str], *, batch_size: int = SOURCE_LOOKUP_BATCH
    ) -> dict[str, ObjectLook]:
        """The last look a scan saved for each of ``keys`` that has one; one query per batch."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, ObjectLook] = {}
        for start in range(0, len(unique), max(1, batch_size)):
            chunk = unique[start : start + max(1, batch_size)]

            def fn(s: Session, chunk: list[str] = chunk) -> list[ObjectLook]:
                rows = s.execute(
                    select(
                        IngestLook.key,
                        IngestLook.etag,
                        IngestLook.size_bytes,
                        IngestLook.last_modified,
                        IngestLook.first_seen_at,
                    ).where(IngestLook.bucket == bucket, IngestLook.key.in_(chunk))
                ).all()
                return [ObjectLook(**row._asdict()) for row in rows]

            for look in self._run("read looks", fn):
                found[look.key] = look
        return found

    def save_looks(self, bucket: str, looks: Sequence[ObjectLook]) -> None:
        """Remember these looks (one row per key, overwritten) for the next scan to compare with."""
        if not looks:
            return
        by_key = {look.key: look for look in looks}

        def fn(s: Session) -> None:
            now = utcnow()
            existing = {
                row.key: row
                for row in s.scalars(
                    select(IngestLook).where(IngestLook.bucket == bucket, IngestLook.key.in_(list(by_key)))
                )
            }
            for key, look in by_key.items():
                row = existing.get(key)
                if row is None:
                    row = IngestLook(bucket=bucket, key=key, first_seen_at=now)
                    s.add(row)
                row.etag, row.size_bytes = look.etag, look.size_bytes
                row.last_modified, row.seen_at = look.last_modified, now

        self._upsert("save looks", fn)

    def record_export(
        self,
        *,
        render_id: int,
        recording_id: int,
        source_object_id: int | None,
        uri: str,
        etag: str | None,
        size_bytes: int | None,
        prov: Provenance,
    ) -> int:
        """Record that a render was published at ``uri``; publishing it there again updates the row."""

        def fn(s: Session) -> int:
            row = s.scalar(select(Export).where(Export.render_id == render_id, Export.uri == uri))
            if row is None:
                row = Export(render_id=render_id, uri=uri, recording_id=recording_id)
                s.add(row)
            row.source_object_id, row.etag, row.size_bytes = source_object_id, etag, size_bytes
            row.created_at = utcnow()
            for k, v in prov.columns().items():
                setattr(row, k, v)
            s.flush()
            return row.id

        return self._upsert("record export", fn)

    def exports_for_recording(self, recording_id: int) -> list[dict[str, Any]]:
        def fn(s: Session) -> list[dict[str, Any]]:
            rows = s.scalars(select(Export).where(Export.recording_id == recording_id).order_by(Export.id))
            return [_row_dict(r) for r in rows]

        return self._run("read exports", fn)

    def find_export(self, ref: str) -> dict[str, Any] | None:
        """The latest export whose URI is ``ref`` or ends with it (``s3://exports/a/b.mp4``, ``b.mp4``)."""

        def fn(s: Session) -> dict[str, Any] | None:
            row = s.scalars(
                select(Export)
                .where((Export.uri == ref) | Export.uri.endswith(ref))
                .order_by(Export.id.desc())
            ).first()
            return _row_dict(row) if row else None

        return self._run("find export", fn)

    def source_objects_for_recording(self, recording_id: int) -> list[dict[str, Any]]:
        def fn(s: Session) -> list[dict[str, Any]]:
            rows = s.scalars(
                select(SourceObject)
                .where(SourceObject.recording_id == recording_id)
                .order_by(SourceObject.id)
            )
            return [_row_dict(r) for r in rows]

        return self._run("read source objects", fn)

    def find_source_object(self, ref: str) -> dict[str, Any] | None:
        """A source object by id, by ``s3://bucket/key`` / ``file:///path``, or by a key suffix."""

        def fn(s: Session) -> dict[str, Any] | None:
            q = select(SourceObject)
            if ref.isdigit():
                q = q.where(SourceObject.id == int(ref))
            else:
                bucket, key = _split_object_uri(ref)
                if bucket is not None:
                    q = q.where(SourceObject.bucket == bucket, SourceObject.key == key)
                else:
                    q = q.where(SourceObject.key.endswith(ref))
            row = s.scalars(q.order_by(SourceObject.id.desc())).first()
            return _row_dict(row) if row else None

        return self._run("find source object", fn)

    def source_objects(self, *, bucket: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Source objects (optionally of one bucket and/or status), oldest first; for reports and tests."""

        def fn(s: Session) -> list[dict[str, Any]]:
            q = select(SourceObject)
            if bucket is not None:
                q = q.where(SourceObject.bucket == bucket)
            if status is not None:
                q = q.where(SourceObject.status == status)
            return [_row_dict(r) for r in s.scalars(q.order_by(SourceObject.id))]

        return self._run("read source objects", fn)

    # render fan-out --------------------------------------------------------------------------

    def get_clip(self, clip_id: int) -> dict[str, Any] | None:
        return self._run("read clip", lambda s: _maybe_dict(s.get(Clip, clip_id)))

    def get_avatar(self, avatar_id: int) -> dict[str, Any] | None:
        return self._run("read avatar", lambda s: _maybe_dict(s.get(Avatar, avatar_id)))

    def get_recording(self, recording_id: int) -> dict[str, Any] | None:
        return self._run("read recording", lambda s: _maybe_dict(s.get(Recording, recording_id)))

    def get_render_row(self, render_id: int) -> dict[str, Any] | None:
        return self._run("read render", lambda s: _maybe_dict(s.get(Render, render_id)))

    def set_clip_audio(self, clip_id: int, *, audio_uri: str, audio48_uri: str) -> None:
        """Point a clip at its shared copies (work store), which render workers on any machine can read."""
        self._run(
            "update clip audio",
            lambda s: s.execute(
                update(Clip).where(Clip.id == clip_id).values(audio_uri=audio_uri, audio48_uri=audio48_uri)
            ),
        )

    def count_attempts(self, *, subject_kind: str, subject_ref: str, step: str, status: str) -> int:
        def fn(s: Session) -> int:
            q = select(func.count(Attempt.id)).where(
                Attempt.subject_kind == subject_kind,
                Attempt.subject_ref == subject_ref,
                Attempt.step == step,
                Attempt.status == status,
            )
            return int(s.scalar(q) or 0)

        return self._run("count attempts", fn)

    def annotate_render(self, render_id: int, extra: dict[str, Any]) -> None:
        """Merge ``extra`` (where and when it ran: worker, GPU, slot times) into the render's stats."""

        def fn(s: Session) -> None:
            row = s.get(Render, render_id)
            if row is not None:
                row.stats = {**(row.stats or {}), **extra}

        self._run("annotate render", fn)

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
        status=("interrupted" if isinstance(error, InterruptedRunError) else "failed")
        if error
        else "succeeded",
        error_type=type(error).__name__ if error else None,
        error=_describe(error) if error else None,
        started_at=started_at or utcnow(),
        finished_at=utcnow(),
        **prov.columns(),
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


_OWNER = "owner"
"""Key in a render's ``stats`` holding the process rendering it (``ProcessOwner``) while it runs."""


def render_owner(stats: dict[str, Any] | None) -> ProcessOwner | None:
    return ProcessOwner.from_dict((stats or {}).get(_OWNER))


def effective_render_status(status: str, stats: dict[str, Any] | None) -> str:
    """``interrupted`` for a ``running`` row whose process is gone (killed, rebooted), else ``status``.

    Only this host can tell; rows other hosts own keep their status (the zombie automation and the
    nightly plan handle those)."""
    if status != "running":
        return status
    owner = render_owner(stats)
    return "interrupted" if owner is not None and owner.is_gone() else status


def _render_state(row: Render) -> RenderState:
    return RenderState(
        id=row.id,
        render_key=row.render_key,
        status=effective_render_status(row.status, row.stats),
        attempts=row.attempts,
        output_uri=row.output_uri,
        error=row.error,
        encoder=row.encoder,
        duration_s=row.duration_s,
        wall_s=row.wall_s,
    )


def _row_dict(row: Any) -> dict[str, Any]:
    out = {c.key: getattr(row, c.key) for c in row.__table__.columns}
    if isinstance(row, Render):
        out["status"] = effective_render_status(row.status, row.stats)
    return out


def _maybe_dict(row: Any) -> dict[str, Any] | None:
    return _row_dict(row) if row is not None else None


# =============================================================================================
# source objects: value types and helpers
# =============================================================================================

SourceStatus = Literal["registered", "processing", "done", "failed", "quarantined"]
"""``failed`` may succeed on a later scan (it is retried); ``quarantined`` never will (bad key, not media)."""

_FINAL_SOURCE_STATUSES = frozenset({"done", "failed", "quarantined"})


@dataclass(frozen=True)
class SourceObjectState:
    """A source object row as the scan needs to see it."""

    id: int
    key: str
    etag: str
    size_bytes: int
    status: str
    attempts: int
    error: str | None
    recording_id: int | None
    sha256: str | None
    updated_at: datetime


_SOURCE_COLUMNS = (
    SourceObject.id,
    SourceObject.key,
    SourceObject.etag,
    SourceObject.size_bytes,
    SourceObject.status,
    SourceObject.attempts,
    SourceObject.error,
    SourceObject.recording_id,
    SourceObject.sha256,
    SourceObject.updated_at,
)


@dataclass(frozen=True)
class ObjectLook:
    """What a scan saw of an object it left waiting: compared with the next scan's look."""

    key: str
    etag: str
    size_bytes: int
    last_modified: datetime | None
    first_seen_at: datetime | None = None


def _source_state(row: SourceObject) -> SourceObjectState:
    return SourceObjectState(*(getattr(row, c.key) for c in _SOURCE_COLUMNS))


def _source_attempt(
    row: SourceObject, status: str, error: BaseException | str | None, prov: Provenance
) -> Attempt:
    return Attempt(
        subject_kind="source",
        subject_id=row.id,
        subject_ref=f"{row.bucket}/{row.key}",
        step="ingest",
        status="succeeded" if status == "done" else status,
        error_type=type(error).__name__ if isinstance(error, BaseException) else None,
        error=_error_text(error),
        started_at=utcnow(),
        finished_at=utcnow(),
        **prov.columns(),
    )


def _error_text(error: BaseException | str | None) -> str | None:
    if error is None or isinstance(error, str):
        return error
    return _describe(error)


def _split_object_uri(ref: str) -> tuple[str | None, str]:
    """``s3://bucket/key`` -> (bucket, key); ``file:///p`` -> ("file", "/p"); anything else (None, ref)."""
    if ref.startswith("s3://"):
        bucket, _, key = ref[len("s3://") :].partition("/")
        return bucket, key
    if ref.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return LOCAL_BUCKET, unquote(urlsplit(ref).path)
    return None, ref


LOCAL_BUCKET = "file"
"""The ``bucket`` of objects in local folders (drop folders); their ``key`` is the absolute path."""
