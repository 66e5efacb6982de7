"""The queries the pipeline and flows need, each one its own short transaction.

Every method is a complete unit of work, so retrying one after a dropped connection
(Postgres restarting between steps) cannot half-apply it (``base.RepositoryBase``). Callers pass
``Provenance`` in; this module never asks Prefect for it. Reads return the frozen rows of
``lineage.rows``; the source-object, look and export queries live in ``lineage.sources``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from talkfactory.errors import InterruptedRunError, PermanentError, RenderBusyError
from talkfactory.infra.children import ProcessOwner
from talkfactory.infra.lineage.base import Provenance, describe
from talkfactory.infra.lineage.pushes import PushQueries
from talkfactory.infra.lineage.rows import (
    LOCAL_BUCKET,
    OWNER_KEY,
    AttemptRow,
    AvatarRow,
    ClipRecord,
    RecordingRow,
    RenderOverview,
    RenderRow,
    attempt_row,
    avatar_row,
    clip_record,
    effective_render_status,
    recording_row,
    render_overview,
    render_owner,
    render_row,
)
from talkfactory.infra.lineage.sources import (
    SOURCE_LOOKUP_BATCH,
    ObjectLook,
    SourceObjectQueries,
    SourceObjectState,
    SourceStatus,
)
from talkfactory.infra.lineage.tables import RENDER_DONE, Attempt, Avatar, Clip, Recording, Render, utcnow
from talkfactory.infra.lineage.transcripts import TranscriptQueries

__all__ = [
    "LOCAL_BUCKET",
    "SOURCE_LOOKUP_BATCH",
    "ClipRow",
    "LineageRepository",
    "ObjectLook",
    "Provenance",
    "RenderState",
    "SourceObjectState",
    "SourceStatus",
]


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


class LineageRepository(TranscriptQueries, PushQueries, SourceObjectQueries):
    """Reads and writes lineage rows (source-object, transcript and live-push queries are inherited
    from ``sources``, ``transcripts`` and ``pushes``)."""

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
            row.status, row.error = "failed", describe(error)
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
                row.status, row.error = "failed", describe(error)
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
        content_key: str | None = None,
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
                # host may be long dead (its executor crashed); the zombie automation handles those.
                if owner is not None and owner.pid != me.pid and owner.is_running_here():
                    raise RenderBusyError(
                        f"render {row.id} is being rendered by process {owner.pid} on {owner.host}",
                        subject=render_key,
                    )
            if row is None:
                row = Render(
                    render_key=render_key,
                    content_key=content_key,
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
            row.stats = {**(row.stats or {}), OWNER_KEY: me.to_dict()}
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
        status: str = "succeeded",
    ) -> None:
        """Record a published render: ``succeeded``, or ``needs_review`` when its sync check failed."""

        def fn(s: Session) -> None:
            row = s.get_one(Render, render_id)
            row.status, row.output_uri, row.encoder = status, output_uri, encoder
            row.duration_s, row.wall_s, row.stats, row.finished_at = duration_s, wall_s, stats, utcnow()
            s.add(_attempt_row("render", render_id, row.render_key, "render", None, prov, row.started_at))

        self._run("finish render", fn)

    def fail_render(
        self, render_id: int, *, error: BaseException, prov: Provenance, interrupted: bool = False
    ) -> None:
        """Record a render that ended without output: ``failed``, or ``interrupted`` (stopped by the
        user or its executor shutting down; planned again, never counted as bad input)."""

        interrupted = interrupted or isinstance(error, InterruptedRunError)

        def fn(s: Session) -> None:
            row = s.get_one(Render, render_id)
            row.status = "interrupted" if interrupted else "failed"
            row.error = describe(error) if str(error) or not interrupted else "interrupted"
            row.finished_at = utcnow()
            s.add(_attempt_row("render", render_id, row.render_key, "render", error, prov, row.started_at))

        self._run("fail render", fn)

    def succeeded_renders_with_content(self, content_key: str) -> list[RenderState]:
        """Finished renders of the same pixels (``RenderJob.content_key``), newest first, any destination."""

        def fn(s: Session) -> list[RenderState]:
            rows = s.scalars(
                select(Render)
                .where(Render.content_key == content_key, Render.status.in_(RENDER_DONE))
                .order_by(Render.id.desc())
            )
            return [_render_state(r) for r in rows]

        return self._run("read renders by content", fn)

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

    def renders_for_recording(self, recording_id: int) -> list[RenderOverview]:
        """The recording's renders, oldest first, each with its avatar's name and clip span."""

        def fn(s: Session) -> list[RenderOverview]:
            rows = s.execute(
                select(Render, Avatar.name, Clip.start_s, Clip.end_s)
                .join(Avatar, Avatar.id == Render.avatar_id)
                .outerjoin(Clip, Clip.id == Render.clip_id)
                .where(Render.recording_id == recording_id)
                .order_by(Render.id)
            ).all()
            return [render_overview(r, name, cs, ce) for r, name, cs, ce in rows]

        return self._run("read renders", fn)

    def attempts_for(self, subject_kind: str, subject_id: int) -> list[AttemptRow]:
        def fn(s: Session) -> list[AttemptRow]:
            rows = s.scalars(
                select(Attempt)
                .where(Attempt.subject_kind == subject_kind, Attempt.subject_id == subject_id)
                .order_by(Attempt.id)
            ).all()
            return [attempt_row(r) for r in rows]

        return self._run("read attempts", fn)

    def find_recording(self, ref: str) -> RecordingRow | None:
        """A recording by id, sha256 (or a prefix of 8+ characters), or uri."""

        def fn(s: Session) -> RecordingRow | None:
            q = select(Recording)
            if ref.isdigit():
                q = q.where(Recording.id == int(ref))
            elif len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
                q = q.where(Recording.sha256.startswith(ref))
            else:
                q = q.where(Recording.uri.endswith(ref))
            row = s.scalars(q.order_by(Recording.id.desc())).first()
            return recording_row(row) if row else None

        return self._run("find recording", fn)

    def find_render_by_output(self, ref: str) -> RenderRow | None:
        def fn(s: Session) -> RenderRow | None:
            row = s.scalars(
                select(Render).where(Render.output_uri.endswith(ref)).order_by(Render.id.desc())
            ).first()
            return render_row(row) if row else None

        return self._run("find render", fn)

    # render fan-out --------------------------------------------------------------------------

    def get_clip(self, clip_id: int) -> ClipRecord | None:
        def fn(s: Session) -> ClipRecord | None:
            row = s.get(Clip, clip_id)
            return clip_record(row) if row else None

        return self._run("read clip", fn)

    def get_avatar(self, avatar_id: int) -> AvatarRow | None:
        def fn(s: Session) -> AvatarRow | None:
            row = s.get(Avatar, avatar_id)
            return avatar_row(row) if row else None

        return self._run("read avatar", fn)

    def get_recording(self, recording_id: int) -> RecordingRow | None:
        def fn(s: Session) -> RecordingRow | None:
            row = s.get(Recording, recording_id)
            return recording_row(row) if row else None

        return self._run("read recording", fn)

    def get_render_row(self, render_id: int) -> RenderRow | None:
        def fn(s: Session) -> RenderRow | None:
            row = s.get(Render, render_id)
            return render_row(row) if row else None

        return self._run("read render", fn)

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
        status=_attempt_status(error),
        error_type=type(error).__name__ if error else None,
        permanent=None if error is None else isinstance(error, PermanentError),
        error=describe(error) if error else None,
        started_at=started_at or utcnow(),
        finished_at=utcnow(),
        **prov.columns(),
    )


def _attempt_status(error: BaseException | None) -> str:
    if error is None:
        return "succeeded"
    stopped = isinstance(error, KeyboardInterrupt | SystemExit | InterruptedRunError)
    return "interrupted" if stopped else "failed"


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
