"""Live-push queries of ``LineageRepository``: a push, its attempts, and the exports a push can play.

Nothing written here can hold a stream key: the caller passes the masked URL, and every text column is
passed through ``urls.redact`` once more on the way in (any ``rtmp://host/app/...`` loses what follows
the application), so a key that slipped into an error message still never reaches the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from talkfactory.errors import PermanentError
from talkfactory.infra.lineage.base import Provenance, RepositoryBase, describe
from talkfactory.infra.lineage.push_tables import LivePush, PushAttempt
from talkfactory.infra.lineage.tables import Clip, Export, Recording, Render, utcnow
from talkfactory.infra.live.urls import redact


@dataclass(frozen=True)
class PushRow:
    """A push (``live_pushes``)."""

    id: int
    target: str
    channel: str | None
    mode: str
    reasons: tuple[str, ...]
    sources: tuple[dict[str, Any], ...]
    total_s: float
    status: str
    files_done: int
    skipped: tuple[int, ...]
    pushed_s: float
    bytes_sent: int
    attempts: int
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    flow_run_id: str | None


@dataclass(frozen=True)
class PushAttemptRow:
    """One attempt at a push (``push_attempts``)."""

    id: int
    push_id: int
    number: int
    first_file: int
    files_done: int
    file_on_air: int | None
    status: str
    pushed_s: float
    bytes_sent: int
    error_type: str | None
    permanent: bool | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class PushableExport:
    """A published export a push can play, in the order its recording's clips were spoken."""

    export_id: int
    recording_id: int
    uri: str
    channel: str
    clip_start_s: float | None
    part: int | None


class PushQueries(RepositoryBase):
    """The live-push queries (a mixin of ``LineageRepository``)."""

    def start_push(
        self,
        *,
        target: str,
        channel: str | None,
        mode: str,
        reasons: list[str],
        sources: list[dict[str, Any]],
        total_s: float,
        prov: Provenance,
    ) -> int:
        """A new push row (status ``running``); returns its id. ``target`` must be the masked URL."""

        def fn(s: Session) -> int:
            row = LivePush(
                target=redact(target),
                channel=channel,
                mode=mode,
                reasons=[redact(r) for r in reasons],
                sources=sources,
                total_s=total_s,
                status="running",
                **prov.columns(),
            )
            s.add(row)
            s.flush()
            return row.id

        return self._run("start push", fn)

    def begin_push_attempt(self, push_id: int, *, number: int, first_file: int, prov: Provenance) -> int:
        def fn(s: Session) -> int:
            row = PushAttempt(
                push_id=push_id, number=number, first_file=first_file, status="running", **prov.columns()
            )
            s.add(row)
            push = s.get(LivePush, push_id)
            if push is not None:
                push.attempts = max(push.attempts, number)
            s.flush()
            return row.id

        return self._run("begin push attempt", fn)

    def finish_push_attempt(
        self,
        attempt_id: int,
        *,
        files_done: int,
        pushed_s: float,
        bytes_sent: int,
        file_on_air: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Close an attempt: ``succeeded`` without ``error``, else ``failed`` with its (redacted) text."""

        def fn(s: Session) -> None:
            row = s.get(PushAttempt, attempt_id)
            if row is None:
                return
            row.files_done = files_done
            row.file_on_air = file_on_air
            row.pushed_s = pushed_s
            row.bytes_sent = bytes_sent
            row.status = "failed" if error is not None else "succeeded"
            if error is not None:
                row.error_type = type(error).__name__
                row.permanent = isinstance(error, PermanentError)
                row.error = redact(describe(error))
            row.finished_at = utcnow()

        self._run("finish push attempt", fn)

    def finish_push(
        self,
        push_id: int,
        *,
        status: str,
        files_done: int,
        skipped: list[int],
        pushed_s: float,
        bytes_sent: int,
        error: BaseException | str | None = None,
    ) -> None:
        text = error if isinstance(error, str) or error is None else describe(error)

        def fn(s: Session) -> None:
            row = s.get(LivePush, push_id)
            if row is None:
                return
            row.status = status
            row.files_done = files_done
            row.skipped = skipped
            row.pushed_s = pushed_s
            row.bytes_sent = bytes_sent
            row.error = None if text is None else redact(text)
            row.finished_at = utcnow()

        self._run("finish push", fn)

    def get_push(self, push_id: int) -> PushRow | None:
        def fn(s: Session) -> PushRow | None:
            row = s.get(LivePush, push_id)
            return None if row is None else _push_row(row)

        return self._run("read push", fn)

    def recent_pushes(self, limit: int = 20) -> list[PushRow]:
        def fn(s: Session) -> list[PushRow]:
            rows = s.scalars(select(LivePush).order_by(LivePush.id.desc()).limit(limit)).all()
            return [_push_row(r) for r in rows]

        return self._run("read pushes", fn)

    def push_attempts(self, push_id: int) -> list[PushAttemptRow]:
        def fn(s: Session) -> list[PushAttemptRow]:
            rows = s.scalars(
                select(PushAttempt).where(PushAttempt.push_id == push_id).order_by(PushAttempt.number)
            ).all()
            return [_attempt_row(r) for r in rows]

        return self._run("read push attempts", fn)

    def pushable_exports(self, ref: str, channel: str | None = None) -> list[PushableExport]:
        """Published exports of the recording ``ref`` names, in speaking order (clip start, then part).

        ``ref``: a recording id, a sha256 (or 8+ character prefix), a recording URI or its tail, or an
        export URI or its tail (then its recording's exports). ``channel`` keeps one channel's files
        (``master`` when None and the recording has several channels' files, so nothing plays twice).
        """

        def fn(s: Session) -> list[PushableExport]:
            recording_ids = _recordings_for(s, ref)
            if not recording_ids:
                return []
            q = (
                select(Export, Clip.start_s)
                .join(Render, Render.id == Export.render_id)
                .outerjoin(Clip, Clip.id == Render.clip_id)
                .where(Export.recording_id.in_(recording_ids), Export.status == "published")
            )
            rows = s.execute(q).all()
            channels = {e.channel for e, _ in rows}
            wanted = channel or ("master" if len(channels) > 1 else None)
            found = [
                PushableExport(
                    export_id=e.id,
                    recording_id=e.recording_id,
                    uri=e.uri,
                    channel=e.channel,
                    clip_start_s=start,
                    part=e.part,
                )
                for e, start in rows
                if wanted is None or e.channel == wanted
            ]
            found.sort(
                key=lambda x: (
                    x.recording_id,
                    x.clip_start_s if x.clip_start_s is not None else -1.0,
                    x.part or 0,
                    x.export_id,
                )
            )
            return found

        return self._run("find pushable exports", fn)


def _recordings_for(s: Session, ref: str) -> list[int]:
    if ref.isdigit():
        return [int(ref)] if s.get(Recording, int(ref)) is not None else []
    exports = s.scalars(
        select(Export.recording_id).where((Export.uri == ref) | Export.uri.endswith("/" + ref)).distinct()
    ).all()
    if exports:
        return list(exports)
    q = select(Recording.id)
    if len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
        q = q.where(Recording.sha256.startswith(ref))
    else:
        q = q.where((Recording.uri == ref) | Recording.uri.endswith("/" + ref))
    return list(s.scalars(q.order_by(Recording.id.desc()).limit(1)).all())


def _push_row(r: LivePush) -> PushRow:
    return PushRow(
        id=r.id,
        target=r.target,
        channel=r.channel,
        mode=r.mode,
        reasons=tuple(r.reasons or ()),
        sources=tuple(r.sources or ()),
        total_s=r.total_s,
        status=r.status,
        files_done=r.files_done,
        skipped=tuple(r.skipped or ()),
        pushed_s=r.pushed_s,
        bytes_sent=r.bytes_sent,
        attempts=r.attempts,
        error=r.error,
        started_at=r.started_at,
        finished_at=r.finished_at,
        flow_run_id=r.flow_run_id,
    )


def _attempt_row(r: PushAttempt) -> PushAttemptRow:
    return PushAttemptRow(
        id=r.id,
        push_id=r.push_id,
        number=r.number,
        first_file=r.first_file,
        files_done=r.files_done,
        file_on_air=r.file_on_air,
        status=r.status,
        pushed_s=r.pushed_s,
        bytes_sent=r.bytes_sent,
        error_type=r.error_type,
        permanent=r.permanent,
        error=r.error,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


__all__ = ["PushAttemptRow", "PushQueries", "PushRow", "PushableExport"]
