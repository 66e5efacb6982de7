"""Source objects: the ingest cursor (objects a scan registered), last looks at waiting uploads, exports.

A scan lists the ingest location page by page and asks ``known_source_objects`` about a whole page at
once (one SELECT per ``SOURCE_LOOKUP_BATCH`` keys), so 10,000 objects cost ~20 queries. Registration is
idempotent on (bucket, key, etag): of two scans racing on one object, one creates the row (and
processes it), the other is told it already exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from talkfactory.errors import PermanentError
from talkfactory.infra.lineage.base import Provenance, RepositoryBase, error_text
from talkfactory.infra.lineage.rows import (
    LOCAL_BUCKET,
    ExportDetails,
    ExportRow,
    SourceObjectRow,
    export_row,
    source_object_row,
)
from talkfactory.infra.lineage.tables import Attempt, Export, IngestLook, Recording, SourceObject, utcnow

SOURCE_LOOKUP_BATCH = 500
"""Keys per lookup query: far below SQLite's 32,766 bound parameters and cheap for Postgres to plan."""


class SourceObjectQueries(RepositoryBase):
    """The source-object, look and export queries of ``LineageRepository``."""

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
        text = error_text(error)

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
        text = error_text(error)

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
        details: ExportDetails | None = None,
    ) -> int:
        """Record that a render was published at ``uri`` (or, with ``details.status`` ``failed`` or
        ``skipped``, why it was not); making it there again updates the row."""

        def fn(s: Session) -> int:
            row = s.scalar(select(Export).where(Export.render_id == render_id, Export.uri == uri))
            if row is None:
                row = Export(render_id=render_id, uri=uri, recording_id=recording_id)
                s.add(row)
            row.source_object_id, row.etag, row.size_bytes = source_object_id, etag, size_bytes
            for name, value in dataclasses.asdict(details or ExportDetails()).items():
                setattr(row, name, value)
            row.created_at = utcnow()
            for k, v in prov.columns().items():
                setattr(row, k, v)
            s.flush()
            return row.id

        return self._upsert("record export", fn)

    def exports_for_recording(self, recording_id: int) -> list[ExportRow]:
        def fn(s: Session) -> list[ExportRow]:
            rows = s.scalars(select(Export).where(Export.recording_id == recording_id).order_by(Export.id))
            return [export_row(r) for r in rows]

        return self._run("read exports", fn)

    def exports_for_render(self, render_id: int) -> list[ExportRow]:
        def fn(s: Session) -> list[ExportRow]:
            rows = s.scalars(select(Export).where(Export.render_id == render_id).order_by(Export.id))
            return [export_row(r) for r in rows]

        return self._run("read exports", fn)

    def exports_under(self, uri_prefix: str) -> list[ExportRow]:
        """Every export whose URL starts with ``uri_prefix`` (a folder's or a bucket prefix's)."""

        def fn(s: Session) -> list[ExportRow]:
            # startswith with autoescape: ``_`` and ``%`` in folder names are literal.
            query = select(Export).where(Export.uri.startswith(uri_prefix, autoescape=True))
            return [export_row(r) for r in s.scalars(query.order_by(Export.id))]

        return self._run("read exports", fn)

    def find_export_by_id(self, export_id: int) -> ExportRow | None:
        def fn(s: Session) -> ExportRow | None:
            row = s.get(Export, export_id)
            return export_row(row) if row else None

        return self._run("read export", fn)

    def find_export(self, ref: str) -> ExportRow | None:
        """The latest export whose URI is ``ref`` or ends with it (``s3://exports/a/b.mp4``, ``b.mp4``)."""

        def fn(s: Session) -> ExportRow | None:
            row = s.scalars(
                select(Export)
                .where((Export.uri == ref) | Export.uri.endswith(ref))
                .order_by(Export.id.desc())
            ).first()
            return export_row(row) if row else None

        return self._run("find export", fn)

    def source_objects_for_recording(self, recording_id: int) -> list[SourceObjectRow]:
        def fn(s: Session) -> list[SourceObjectRow]:
            rows = s.scalars(
                select(SourceObject)
                .where(SourceObject.recording_id == recording_id)
                .order_by(SourceObject.id)
            )
            return [source_object_row(r) for r in rows]

        return self._run("read source objects", fn)

    def find_source_object(self, ref: str) -> SourceObjectRow | None:
        """A source object by id, by ``s3://bucket/key`` / ``file:///path``, or by a key suffix."""

        def fn(s: Session) -> SourceObjectRow | None:
            q = select(SourceObject)
            if ref.isdigit():
                q = q.where(SourceObject.id == int(ref))
            else:
                bucket, key = split_object_uri(ref)
                if bucket is not None:
                    q = q.where(SourceObject.bucket == bucket, SourceObject.key == key)
                else:
                    q = q.where(SourceObject.key.endswith(ref))
            row = s.scalars(q.order_by(SourceObject.id.desc())).first()
            return source_object_row(row) if row else None

        return self._run("find source object", fn)

    def source_objects(
        self, *, bucket: str | None = None, status: str | None = None
    ) -> list[SourceObjectRow]:
        """Source objects (optionally of one bucket and/or status), oldest first; for reports and tests."""

        def fn(s: Session) -> list[SourceObjectRow]:
            q = select(SourceObject)
            if bucket is not None:
                q = q.where(SourceObject.bucket == bucket)
            if status is not None:
                q = q.where(SourceObject.status == status)
            return [source_object_row(r) for r in s.scalars(q.order_by(SourceObject.id))]

        return self._run("read source objects", fn)


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
        permanent=isinstance(error, PermanentError) if isinstance(error, BaseException) else None,
        error=error_text(error),
        started_at=utcnow(),
        finished_at=utcnow(),
        **prov.columns(),
    )


def split_object_uri(ref: str) -> tuple[str | None, str]:
    """``s3://bucket/key`` -> (bucket, key); ``file:///p`` -> ("file", "/p"); anything else (None, ref)."""
    if ref.startswith("s3://"):
        bucket, _, key = ref[len("s3://") :].partition("/")
        return bucket, key
    if ref.startswith("file://"):
        return LOCAL_BUCKET, unquote(urlsplit(ref).path)
    return None, ref
