"""Read-only lineage queries for re-processing plans: what exists for a slice of the archive.

One call reads a whole slice (recordings in a date range and/or under a key prefix) in a fixed
number of statements, whatever the number of recordings: every query filters through the same
recording subquery instead of one query per recording or render, and no id lists are bound as
parameters (SQLite caps those and Postgres plans them badly).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session, aliased

from talkfactory.infra.lineage.avatars import AVATAR_VERSION_COLUMNS, AvatarVersion
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import Attempt, Avatar, Clip, Export, Recording, Render, SourceObject


@dataclass(frozen=True)
class RecordingFacts:
    """A usable recording (status ``ok``) in the slice."""

    id: int
    uri: str
    sha256: str | None
    created_at: datetime
    source_key: str | None
    """Key of the source object it was ingested from (the first matching the prefix), if any."""


@dataclass(frozen=True)
class ClipFacts:
    """A clip of a recording's current clip set (its newest speech pass)."""

    id: int
    recording_id: int
    number: int
    """1-based position in the set, ordered by start time."""
    start_s: float
    end_s: float
    params_hash: str
    audio_uri: str | None
    audio48_uri: str | None


@dataclass(frozen=True)
class RenderFacts:
    """A render row of a current clip, with the exception class of its last failed attempt."""

    id: int
    clip_id: int
    avatar_id: int
    backend: str
    backend_version: str
    params_hash: str
    status: str
    attempts: int
    error: str | None
    error_type: str | None
    """``attempts.error_type`` of the newest failed attempt; None when it never failed."""
    permanent: bool | None = None
    """``attempts.permanent`` of that attempt: decided when it failed; None for rows written before
    the column existed (and when it never failed), which are judged by ``error_type``."""
    exports: frozenset[tuple[str, str | None]] = frozenset()
    """``(channel, spec_version)`` of the channel files made from it (published or knowingly skipped)."""


@dataclass(frozen=True)
class PlanningSnapshot:
    """Everything a plan needs about one slice of the archive, read in one transaction."""

    recordings: list[RecordingFacts]
    clips: dict[int, list[ClipFacts]]
    """Recording id -> its current clip set by start time; recordings without clips are absent."""
    avatars: list[AvatarVersion]
    """Every avatar version (active or not), oldest first: the library is small."""
    renders: dict[int, list[RenderFacts]]
    """Clip id -> its renders, oldest first."""


def load_planning_snapshot(
    repo: LineageRepository,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    prefix: str = "",
    backend: str | None = None,
) -> PlanningSnapshot:
    """Read the recordings created in [since, until) whose source key or URI starts with ``prefix``.

    Naive datetimes are taken as UTC. The prefix match is case-sensitive on every database (SQLite's
    LIKE is not, so it is not used). ``backend`` restricts the renders read to that backend.
    Six statements in all.
    """
    ids = _recording_ids(_utc(since), _utc(until), prefix)
    with repo.session() as s:
        recording_rows = s.execute(
            select(Recording.id, Recording.uri, Recording.sha256, Recording.created_at)
            .where(Recording.id.in_(ids))
            .order_by(Recording.id)
        ).all()
        source_rows = s.execute(
            select(SourceObject.recording_id, SourceObject.key)
            .where(SourceObject.recording_id.in_(ids))
            .order_by(SourceObject.id)
        ).all()
        clip_rows = s.execute(
            _current_clips(
                ids,
                Clip.id,
                Clip.recording_id,
                Clip.start_s,
                Clip.end_s,
                Clip.params_hash,
                Clip.audio_uri,
                Clip.audio48_uri,
            ).order_by(Clip.recording_id, Clip.start_s, Clip.id)
        ).all()
        avatars = [
            AvatarVersion(**row._asdict())
            for row in s.execute(select(*AVATAR_VERSION_COLUMNS).order_by(Avatar.id))
        ]
        in_slice: list[ColumnElement[bool]] = [
            Render.recording_id.in_(ids),
            Render.clip_id.in_(_current_clips(ids, Clip.id)),
        ]
        if backend is not None:
            in_slice.append(Render.backend == backend)
        render_rows = s.execute(select(*_RENDER_COLUMNS).where(*in_slice).order_by(Render.id)).all()
        failures = _last_failures(s, in_slice)
        made: dict[int, set[tuple[str, str | None]]] = defaultdict(set)
        export_rows = s.execute(
            select(Export.render_id, Export.channel, Export.spec_version)
            .join(Render, Render.id == Export.render_id)
            .where(*in_slice, Export.status.in_(("published", "skipped")))
        ).all()
        for render_id, channel, spec_version in export_rows:
            made[render_id].add((channel, spec_version))

    keys: dict[int, list[str]] = defaultdict(list)
    for rec_id, key in source_rows:
        if rec_id is not None:
            keys[rec_id].append(key)
    recordings = [
        RecordingFacts(
            id=r.id, uri=r.uri, sha256=r.sha256, created_at=r.created_at, source_key=_pick(keys[r.id], prefix)
        )
        for r in recording_rows
    ]
    clips: dict[int, list[ClipFacts]] = defaultdict(list)
    for c in clip_rows:
        clips[c.recording_id].append(ClipFacts(number=len(clips[c.recording_id]) + 1, **c._asdict()))
    renders: dict[int, list[RenderFacts]] = defaultdict(list)
    for r in render_rows:
        error_type, permanent = failures.get(r.id, (None, None))
        renders[r.clip_id].append(
            RenderFacts(
                error_type=error_type, permanent=permanent, exports=frozenset(made[r.id]), **r._asdict()
            )
        )
    return PlanningSnapshot(recordings=recordings, clips=dict(clips), avatars=avatars, renders=dict(renders))


_RENDER_COLUMNS = (
    Render.id,
    Render.clip_id,
    Render.avatar_id,
    Render.backend,
    Render.backend_version,
    Render.params_hash,
    Render.status,
    Render.attempts,
    Render.error,
)


def _recording_ids(since: datetime | None, until: datetime | None, prefix: str) -> Select[Any]:
    q = select(Recording.id).where(Recording.status == "ok")
    if since is not None:
        q = q.where(Recording.created_at >= since)
    if until is not None:
        q = q.where(Recording.created_at < until)
    if prefix:
        from_source = (
            select(SourceObject.id)
            .where(SourceObject.recording_id == Recording.id, _starts_with(SourceObject.key, prefix))
            .exists()
        )
        q = q.where(or_(_starts_with(Recording.uri, prefix), from_source))
    return q


def _current_clips(ids: Select[Any], *columns: Any) -> Select[Any]:
    """The clips of each recording's newest speech pass: the ``params_hash`` of its newest clip."""
    newest_id = (
        select(Clip.recording_id.label("recording_id"), func.max(Clip.id).label("clip_id"))
        .where(Clip.recording_id.in_(ids))
        .group_by(Clip.recording_id)
        .subquery("newest_id")
    )
    newest = aliased(Clip, name="newest")
    return (
        select(*columns)
        .join(newest_id, newest_id.c.recording_id == Clip.recording_id)
        .join(newest, newest.id == newest_id.c.clip_id)
        .where(Clip.params_hash == newest.params_hash)
    )


def _last_failures(
    s: Session, in_slice: list[ColumnElement[bool]]
) -> dict[int, tuple[str | None, bool | None]]:
    """Render id -> (error_type, permanent) of its newest failed attempt, for the failed renders."""
    failed = select(Render.id).where(*in_slice, Render.status == "failed")
    newest_failure = (
        select(func.max(Attempt.id))
        .where(
            Attempt.subject_kind == "render",
            Attempt.status == "failed",
            Attempt.subject_id.in_(failed),
        )
        .group_by(Attempt.subject_id)
    )
    rows = s.execute(
        select(Attempt.subject_id, Attempt.error_type, Attempt.permanent).where(
            Attempt.id.in_(newest_failure)
        )
    )
    return {sid: (error_type, permanent) for sid, error_type, permanent in rows if sid is not None}


def _starts_with(column: Any, prefix: str) -> ColumnElement[bool]:
    return func.substr(column, 1, len(prefix)) == prefix


def _pick(keys: list[str], prefix: str) -> str | None:
    return next((k for k in keys if k.startswith(prefix)), keys[0] if keys else None)


def _utc(when: datetime | None) -> datetime | None:
    # SQLite stores the UTC wall time without an offset, so the bound value must be UTC too.
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
