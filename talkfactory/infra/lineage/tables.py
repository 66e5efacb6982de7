"""Lineage tables: where every recording, avatar, clip and render came from, and each attempt.

Unique constraints carry idempotency: a source object is registered once per (bucket, key, etag),
a recording once per content hash, an avatar once per content hash, a render once per
``render_key`` (recording x clip x avatar x backend version x parameters).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit names so Alembic migrations are identical on SQLite and Postgres.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


RENDER_DONE = ("succeeded", "needs_review")
"""Render statuses whose output is published: ``needs_review`` failed its sync check but stands."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Provenance:
    """What produced a row: filled from the Prefect run context when there is one."""

    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    task_run_id: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))


class SourceObject(Provenance, Base):
    """An object seen in an ingest location (S3 bucket or drop folder)."""

    __tablename__ = "source_objects"
    __table_args__ = (UniqueConstraint("bucket", "key", "etag", name="uq_source_objects_bucket_key_etag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_url: Mapped[str] = mapped_column(Text)
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32), default="registered")
    """registered -> processing -> done | failed (retried by a later scan) | quarantined (never retried)."""
    error: Mapped[str | None] = mapped_column(Text)
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Processing attempts started (claims), so a flaky object is quarantined after a few."""
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Recording(Provenance, Base):
    """A source recording, identified by content."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)
    probe: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32), default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Avatar(Provenance, Base):
    """An avatar template (video or portrait), identified by content; its face track is cached.

    In the library an avatar is its ``name`` (the file stem) and each row is one version of it (its
    ``content_hash``). Renders are planned for the active version of each name only; a replaced
    version is kept, inactive, pointing at the version that replaced it.
    """

    __tablename__ = "avatars"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    uri: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    num_frames: Mapped[int | None] = mapped_column(Integer)
    face_ratio: Mapped[float | None] = mapped_column(Float)
    track_uri: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """False for a version another one replaced, and for every version of a retired name."""
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("avatars.id"))
    """The version registered in this one's place; None for the one in use (or last used, if retired)."""


class Clip(Provenance, Base):
    """A stretch of one speaker's speech cut from a recording."""

    __tablename__ = "clips"
    __table_args__ = (
        UniqueConstraint("recording_id", "params_hash", "start_s", "end_s", name="uq_clips_span"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    speaker: Mapped[str | None] = mapped_column(String(64))
    denoiser: Mapped[str | None] = mapped_column(String(32))
    denoiser_version: Mapped[str | None] = mapped_column(String(128))
    params_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    snr_db: Mapped[float | None] = mapped_column(Float)
    audio_uri: Mapped[str | None] = mapped_column(Text)
    audio48_uri: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Render(Provenance, Base):
    """One lip-sync render: (recording or clip) x avatar x backend version x parameters."""

    __tablename__ = "renders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    render_key: Mapped[str] = mapped_column(String(64), unique=True)
    """Identity: content and destination (``RenderJob.render_key``)."""
    content_key: Mapped[str | None] = mapped_column(String(64), index=True)
    """The pixels alone (inputs, model version, parameters): renders to reuse by copying."""
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    clip_id: Mapped[int | None] = mapped_column(ForeignKey("clips.id"))
    avatar_id: Mapped[int] = mapped_column(ForeignKey("avatars.id"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    backend_version: Mapped[str] = mapped_column(String(128))
    params_hash: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """running -> succeeded | failed | interrupted."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    output_uri: Mapped[str | None] = mapped_column(Text)
    encoder: Mapped[str | None] = mapped_column(String(32))
    duration_s: Mapped[float | None] = mapped_column(Float)
    wall_s: Mapped[float | None] = mapped_column(Float)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Attempt(Provenance, Base):
    """Every try at every step, successful or not, with its error text."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int | None] = mapped_column(Integer)
    subject_ref: Mapped[str] = mapped_column(Text)
    step: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(64))
    permanent: Mapped[bool | None] = mapped_column(Boolean)
    """Whether the error could never succeed on retry, decided when it was written (not by class name)."""
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IngestLook(Base):
    """The last look a scan took at an object it left waiting because it may still be uploading.

    One row per (bucket, key), overwritten by each scan that sees the object unsettled, deleted when the
    object is registered. A size or etag that differs from this look means the upload is still going.
    """

    __tablename__ = "ingest_looks"
    __table_args__ = (UniqueConstraint("bucket", "key", name="uq_ingest_looks_bucket_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    last_modified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Export(Provenance, Base):
    """A render published to an exports location (bucket or folder), under its final key.

    Separate from ``renders.output_uri`` (the file the render wrote, which the render task's reuse check
    looks at): one render can be published to several places, and re-publishing is idempotent.
    """

    __tablename__ = "exports"
    __table_args__ = (UniqueConstraint("render_id", "uri", name="uq_exports_render_uri"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    render_id: Mapped[int] = mapped_column(ForeignKey("renders.id"), index=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    source_object_id: Mapped[int | None] = mapped_column(ForeignKey("source_objects.id"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(128))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    channel: Mapped[str] = mapped_column(String(64), default="master", server_default="master", index=True)
    """The publishing channel preset that made this file (``master``: the render at its native size)."""
    spec_version: Mapped[str | None] = mapped_column(String(64))
    """The channel spec's version when it was made; nightly re-exports files made with an older one."""
    part: Mapped[int | None] = mapped_column(Integer)
    """1-based part of a clip split at pauses to fit the channel's length limit (None: not split)."""
    variant: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """How the file was made: size, reframing, loudness target, clip span, captions, cover."""
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)
    """Integrated loudness measured on the published file."""
    true_peak_db: Mapped[float | None] = mapped_column(Float)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The channel checks run on the file before publishing: ``{"ok": bool, "violations": [...]}``."""
    status: Mapped[str] = mapped_column(String(16), default="published", server_default="published")
    """``published``, ``failed`` (a check or the encode failed: nothing published) or ``skipped``."""
    error: Mapped[str | None] = mapped_column(Text)
    destination: Mapped[str | None] = mapped_column(Text)
    """The channel's publishing location (folder or ``s3://bucket/prefix``)."""


class Transcript(Base):
    """Speech recognised in one clip's audio by one model, with word timings: made once per clip."""

    __tablename__ = "transcripts"
    __table_args__ = (UniqueConstraint("audio_key", "model", name="uq_transcripts_audio_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audio_key: Mapped[str] = mapped_column(String(64))
    """The clip's audio identity (recording content, clip span, speech parameters)."""
    model: Mapped[str] = mapped_column(String(128))
    """The recogniser and its weights' version."""
    clip_id: Mapped[int | None] = mapped_column(ForeignKey("clips.id"), index=True)
    language: Mapped[str | None] = mapped_column(String(16))
    words: Mapped[list[Any]] = mapped_column(JSON)
    """``[[start_s, end_s, word], ...]`` in the clip's own time."""
    text: Mapped[str] = mapped_column(Text)
    wall_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
