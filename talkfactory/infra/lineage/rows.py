"""Lineage rows as typed, frozen values: what the repository's reads return.

One dataclass per table, built from the ORM row by one function each, field by field, so strict mypy
checks both the build and every caller (a dict keyed by column name checks nothing). The ORM objects
never leave the repository: they are tied to a session, these are not.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from talkfactory.infra.children import ProcessOwner
from talkfactory.infra.lineage.tables import Attempt, Avatar, Clip, Export, Recording, Render, SourceObject

LOCAL_BUCKET = "file"
"""The ``bucket`` of objects in local folders (drop folders); their ``key`` is the absolute path."""


@dataclass(frozen=True)
class RecordingRow:
    """A source recording (``recordings``); ``status`` ``failed`` quarantines it, ``error`` says why."""

    id: int
    sha256: str | None
    uri: str
    size_bytes: int | None
    duration_s: float | None
    probe: dict[str, Any] | None
    status: str
    error: str | None
    warnings: tuple[str, ...]
    """Empty when none were stored."""
    created_at: datetime
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None


@dataclass(frozen=True)
class AvatarRow:
    """One avatar version (``avatars``)."""

    id: int
    content_hash: str
    name: str
    uri: str
    kind: str
    width: int | None
    height: int | None
    fps: float | None
    num_frames: int | None
    face_ratio: float | None
    track_uri: str | None
    status: str
    error: str | None
    created_at: datetime
    active: bool
    superseded_by: int | None
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None


@dataclass(frozen=True)
class ClipRecord:
    """A stored clip (``clips``); ``ClipRow`` is the value written, this the row read back."""

    id: int
    recording_id: int
    start_s: float
    end_s: float
    speaker: str | None
    denoiser: str | None
    denoiser_version: str | None
    params_hash: str
    params: dict[str, Any] | None
    loudness_lufs: float | None
    snr_db: float | None
    audio_uri: str | None
    audio48_uri: str | None
    created_at: datetime
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None


@dataclass(frozen=True)
class RenderRow:
    """One render (``renders``)."""

    id: int
    render_key: str
    content_key: str | None
    recording_id: int
    clip_id: int | None
    avatar_id: int
    backend: str
    backend_version: str
    params_hash: str
    params: dict[str, Any] | None
    status: str
    attempts: int
    error: str | None
    output_uri: str | None
    encoder: str | None
    duration_s: float | None
    wall_s: float | None
    stats: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None


@dataclass(frozen=True)
class RenderOverview:
    """A render with what a person reading lineage wants beside it: its avatar's name, its clip's span."""

    render: RenderRow
    avatar_name: str
    clip_start_s: float | None
    """None (with ``clip_end_s``) for a render of the whole recording."""
    clip_end_s: float | None

    @property
    def clip_span(self) -> str:
        """``12.0-15.5 s``, or ``whole`` for a render of the whole recording."""
        if self.clip_start_s is None or self.clip_end_s is None:
            return "whole"
        return f"{self.clip_start_s:.1f}-{self.clip_end_s:.1f} s"


@dataclass(frozen=True)
class ExportDetails:
    """What a channel export is, beyond where it went: recorded with it (``record_export``)."""

    channel: str = "master"
    spec_version: str | None = None
    part: int | None = None
    variant: dict[str, Any] | None = None
    sha256: str | None = None
    duration_s: float | None = None
    loudness_lufs: float | None = None
    true_peak_db: float | None = None
    validation: dict[str, Any] | None = None
    status: str = "published"
    """``published``, ``failed`` (nothing published) or ``skipped`` (the channel cannot take it)."""
    error: str | None = None
    destination: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExportRow(ExportDetails):
    """A render published under its final name (``exports``): where, plus what it is (``ExportDetails``)."""

    id: int
    render_id: int
    recording_id: int
    source_object_id: int | None
    uri: str
    etag: str | None
    size_bytes: int | None
    created_at: datetime
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None


@dataclass(frozen=True)
class SourceObjectRow:
    """An object seen in an ingest location (``source_objects``), every column."""

    id: int
    store_url: str
    bucket: str
    key: str
    etag: str
    size_bytes: int
    sha256: str | None
    status: str
    error: str | None
    recording_id: int | None
    attempts: int
    first_seen_at: datetime
    updated_at: datetime
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None

    @property
    def uri(self) -> str:
        """``s3://bucket/key`` for bucket objects, ``file:///path`` for drop-folder files."""
        if self.bucket == LOCAL_BUCKET:
            return f"file://{self.key}"
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class AttemptRow:
    """One try at one step (``attempts``).

    ``permanent`` is whether the error could never succeed on retry, decided when the attempt was
    written; None for a success and for rows older than that column (judge those by ``error_type``).
    """

    id: int
    subject_kind: str
    subject_id: int | None
    subject_ref: str
    step: str
    status: str
    error_type: str | None
    permanent: bool | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    flow_run_id: str | None
    task_run_id: str | None
    code_version: str | None


def recording_row(r: Recording) -> RecordingRow:
    return RecordingRow(
        id=r.id,
        sha256=r.sha256,
        uri=r.uri,
        size_bytes=r.size_bytes,
        duration_s=r.duration_s,
        probe=r.probe,
        status=r.status,
        error=r.error,
        warnings=tuple(r.warnings or ()),
        created_at=r.created_at,
        flow_run_id=r.flow_run_id,
        task_run_id=r.task_run_id,
        code_version=r.code_version,
    )


def avatar_row(a: Avatar) -> AvatarRow:
    return AvatarRow(
        id=a.id,
        content_hash=a.content_hash,
        name=a.name,
        uri=a.uri,
        kind=a.kind,
        width=a.width,
        height=a.height,
        fps=a.fps,
        num_frames=a.num_frames,
        face_ratio=a.face_ratio,
        track_uri=a.track_uri,
        status=a.status,
        error=a.error,
        created_at=a.created_at,
        active=a.active,
        superseded_by=a.superseded_by,
        flow_run_id=a.flow_run_id,
        task_run_id=a.task_run_id,
        code_version=a.code_version,
    )


def clip_record(c: Clip) -> ClipRecord:
    return ClipRecord(
        id=c.id,
        recording_id=c.recording_id,
        start_s=c.start_s,
        end_s=c.end_s,
        speaker=c.speaker,
        denoiser=c.denoiser,
        denoiser_version=c.denoiser_version,
        params_hash=c.params_hash,
        params=c.params,
        loudness_lufs=c.loudness_lufs,
        snr_db=c.snr_db,
        audio_uri=c.audio_uri,
        audio48_uri=c.audio48_uri,
        created_at=c.created_at,
        flow_run_id=c.flow_run_id,
        task_run_id=c.task_run_id,
        code_version=c.code_version,
    )


OWNER_KEY = "owner"
"""Key in a render's ``stats`` holding the process rendering it (``ProcessOwner``) while it runs."""


def render_owner(stats: dict[str, Any] | None) -> ProcessOwner | None:
    return ProcessOwner.from_dict((stats or {}).get(OWNER_KEY))


def effective_render_status(status: str, stats: dict[str, Any] | None) -> str:
    """``interrupted`` for a ``running`` row whose process is gone (killed, rebooted), else ``status``.

    Only this host can tell; rows other hosts own keep their status (the zombie automation and the
    nightly plan handle those)."""
    if status != "running":
        return status
    owner = render_owner(stats)
    return "interrupted" if owner is not None and owner.is_gone() else status


def render_row(r: Render) -> RenderRow:
    return RenderRow(
        id=r.id,
        render_key=r.render_key,
        content_key=r.content_key,
        recording_id=r.recording_id,
        clip_id=r.clip_id,
        avatar_id=r.avatar_id,
        backend=r.backend,
        backend_version=r.backend_version,
        params_hash=r.params_hash,
        params=r.params,
        status=effective_render_status(r.status, r.stats),
        attempts=r.attempts,
        error=r.error,
        output_uri=r.output_uri,
        encoder=r.encoder,
        duration_s=r.duration_s,
        wall_s=r.wall_s,
        stats=r.stats,
        started_at=r.started_at,
        finished_at=r.finished_at,
        flow_run_id=r.flow_run_id,
        task_run_id=r.task_run_id,
        code_version=r.code_version,
    )


def render_overview(
    r: Render, avatar_name: str, clip_start_s: float | None, clip_end_s: float | None
) -> RenderOverview:
    return RenderOverview(render_row(r), avatar_name, clip_start_s, clip_end_s)


def export_row(e: Export) -> ExportRow:
    details = {f.name: getattr(e, f.name) for f in fields(ExportDetails)}
    return ExportRow(
        id=e.id,
        render_id=e.render_id,
        recording_id=e.recording_id,
        source_object_id=e.source_object_id,
        uri=e.uri,
        etag=e.etag,
        size_bytes=e.size_bytes,
        created_at=e.created_at,
        flow_run_id=e.flow_run_id,
        task_run_id=e.task_run_id,
        code_version=e.code_version,
        **details | {"channel": e.channel or "master", "status": e.status or "published"},
    )


def source_object_row(o: SourceObject) -> SourceObjectRow:
    return SourceObjectRow(
        id=o.id,
        store_url=o.store_url,
        bucket=o.bucket,
        key=o.key,
        etag=o.etag,
        size_bytes=o.size_bytes,
        sha256=o.sha256,
        status=o.status,
        error=o.error,
        recording_id=o.recording_id,
        attempts=o.attempts,
        first_seen_at=o.first_seen_at,
        updated_at=o.updated_at,
        flow_run_id=o.flow_run_id,
        task_run_id=o.task_run_id,
        code_version=o.code_version,
    )


def attempt_row(a: Attempt) -> AttemptRow:
    return AttemptRow(
        id=a.id,
        subject_kind=a.subject_kind,
        subject_id=a.subject_id,
        subject_ref=a.subject_ref,
        step=a.step,
        status=a.status,
        error_type=a.error_type,
        permanent=a.permanent,
        error=a.error,
        started_at=a.started_at,
        finished_at=a.finished_at,
        flow_run_id=a.flow_run_id,
        task_run_id=a.task_run_id,
        code_version=a.code_version,
    )
