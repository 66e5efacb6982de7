"""The whole chain of one recording: where it came from, its warnings, clips, renders, exports.

One function builds it (``recording_chain``) for both ``talkfactory lineage --json`` and the web page's
recording view, so the two never disagree. ``resolve_ref`` turns what a person types (an export name,
a source key, a recording path, id or hash) into recordings, and says when a name matches several.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.rows import (
    AttemptRow,
    ClipRecord,
    ExportRow,
    RecordingRow,
    RenderOverview,
    SourceObjectRow,
    attempt_row,
    clip_record,
    export_row,
)
from talkfactory.infra.lineage.tables import Attempt, Clip, Export, Transcript

MASTER_CHANNEL = "master"
"""The render itself, at its native size; exports made before channels existed are all ``master``."""


def channel_of(export: ExportRow) -> str:
    """The publishing channel an export was made for (``master``: the render itself)."""
    return export.channel or MASTER_CHANNEL


@dataclass(frozen=True)
class RenderLink:
    """A render with what a reader wants beside it."""

    overview: RenderOverview
    exports: tuple[ExportRow, ...]
    attempts: tuple[AttemptRow, ...]

    @property
    def rtf(self) -> float | None:
        r = self.overview.render
        return r.wall_s / r.duration_s if r.wall_s and r.duration_s else None

    @property
    def worker(self) -> str | None:
        stats = self.overview.render.stats or {}
        worker = stats.get("worker")
        return str(worker) if worker else None

    @property
    def qc(self) -> dict[str, Any] | None:
        qc = (self.overview.render.stats or {}).get("qc")
        return qc if isinstance(qc, dict) else None

    @property
    def progress(self) -> tuple[int, int] | None:
        """(frames done, frames total) while it runs, when the render path recorded them."""
        p = (self.overview.render.stats or {}).get("progress")
        if isinstance(p, dict) and isinstance(p.get("done"), int) and isinstance(p.get("total"), int):
            return p["done"], p["total"]
        return None


@dataclass(frozen=True)
class RecordingChain:
    recording: RecordingRow
    sources: tuple[SourceObjectRow, ...]
    clips: tuple[ClipRecord, ...]
    renders: tuple[RenderLink, ...]
    attempts: tuple[AttemptRow, ...]
    """The recording's own attempts (ingest)."""
    transcripts: dict[int, str] = field(default_factory=dict)
    """Clip id -> what was said in it (the captions' transcript), for clips transcribed so far."""

    @property
    def exports(self) -> tuple[ExportRow, ...]:
        return tuple(e for r in self.renders for e in r.exports)

    def exports_by_channel(self, *, published_only: bool = False) -> dict[str, list[ExportRow]]:
        """Exports per channel, ``master`` first; ``published_only`` leaves out failed and skipped ones
        (what a channel's ZIP holds)."""
        out: dict[str, list[ExportRow]] = {}
        for e in sorted(self.exports, key=lambda e: (channel_of(e) != MASTER_CHANNEL, channel_of(e), e.id)):
            if published_only and e.status != "published":
                continue
            out.setdefault(channel_of(e), []).append(e)
        return out

    def flow_run_ids(self) -> list[str]:
        ids = [self.recording.flow_run_id, *(r.overview.render.flow_run_id for r in self.renders)]
        return sorted({i for i in ids if i})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (datetimes as ISO 8601)."""
        doc: dict[str, Any] = _jsonable(
            {
                "recording": asdict(self.recording),
                "sources": [asdict(s) for s in self.sources],
                "warnings": list(self.recording.warnings),
                "clips": [asdict(c) | {"transcript": self.transcripts.get(c.id)} for c in self.clips],
                "renders": [
                    {
                        **asdict(r.overview.render),
                        "avatar": r.overview.avatar_name,
                        "clip_span": r.overview.clip_span,
                        "rtf": r.rtf,
                        "worker": r.worker,
                        "qc": r.qc,
                        "exports": [{**asdict(e), "channel": channel_of(e)} for e in r.exports],
                        "attempts_log": [asdict(a) for a in r.attempts],
                    }
                    for r in self.renders
                ],
                "attempts": [asdict(a) for a in self.attempts],
                "flow_run_ids": self.flow_run_ids(),
            }
        )
        return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def recording_chain(repo: LineageRepository, recording_id: int) -> RecordingChain | None:
    """Everything lineage holds about one recording (a fixed handful of queries, whatever its size)."""
    rec = repo.get_recording(recording_id)
    if rec is None:
        return None
    renders = repo.renders_for_recording(recording_id)
    with repo.session() as s:
        clip_rows = tuple(
            clip_record(c)
            for c in s.scalars(select(Clip).where(Clip.recording_id == recording_id).order_by(Clip.start_s))
        )
        exports = [
            export_row(e)
            for e in s.scalars(select(Export).where(Export.recording_id == recording_id).order_by(Export.id))
        ]
        clip_ids = [c.id for c in clip_rows]
        transcripts = {
            int(clip_id): text
            for clip_id, text in s.execute(
                select(Transcript.clip_id, Transcript.text)
                .where(Transcript.clip_id.in_(clip_ids))
                .order_by(Transcript.id)
            )
            if clip_id is not None
        }
    attempts_by_render = _render_attempts(repo, [o.render.id for o in renders])
    links = tuple(
        RenderLink(
            o,
            tuple(e for e in exports if e.render_id == o.render.id),
            tuple(attempts_by_render.get(o.render.id, ())),
        )
        for o in renders
    )
    return RecordingChain(
        recording=rec,
        sources=tuple(repo.source_objects_for_recording(recording_id)),
        clips=clip_rows,
        renders=links,
        attempts=tuple(repo.attempts_for("recording", recording_id)),
        transcripts=transcripts,
    )


def _render_attempts(repo: LineageRepository, render_ids: list[int]) -> dict[int, list[AttemptRow]]:
    out: dict[int, list[AttemptRow]] = {}
    if not render_ids:
        return out
    with repo.session() as s:
        for a in s.scalars(
            select(Attempt)
            .where(Attempt.subject_kind == "render", Attempt.subject_id.in_(render_ids))
            .order_by(Attempt.id)
        ):
            out.setdefault(a.subject_id or 0, []).append(attempt_row(a))
    return out


@dataclass(frozen=True)
class RefMatch:
    """What a reference names: one recording (and maybe one render), or several candidates."""

    recording_ids: tuple[int, ...]
    render_id: int | None = None
    matches: tuple[str, ...] = ()
    """For an ambiguous name: the export URIs it matches, one per recording."""

    @property
    def ambiguous(self) -> bool:
        return len(self.recording_ids) > 1


def resolve_ref(repo: LineageRepository, ref: str) -> RefMatch:
    """Recordings ``ref`` names: an export URI or its tail, a recording id / hash prefix / path tail.

    An export name such as ``astronaut__clip001.mp4`` exists once per recording: when it matches
    exports of several recordings the answer lists them all instead of picking the newest.
    """
    if not ref.isdigit():
        with repo.session() as s:
            exports = [
                export_row(e)
                for e in s.scalars(
                    select(Export)
                    .where((Export.uri == ref) | Export.uri.endswith(ref))
                    .order_by(Export.id.desc())
                )
            ]
        if exports:
            by_recording: dict[int, ExportRow] = {}
            for e in exports:
                by_recording.setdefault(e.recording_id, e)
            ids = tuple(by_recording)
            render = exports[0].render_id if len(ids) == 1 else None
            return RefMatch(ids, render, tuple(e.uri for e in by_recording.values()))
        render_row = repo.find_render_by_output(ref)
        if render_row is not None:
            return RefMatch((render_row.recording_id,), render_row.id)
    rec = repo.find_recording(ref)
    return RefMatch((rec.id,) if rec else ())
