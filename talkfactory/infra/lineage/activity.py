"""What is happening now and what went wrong lately: renders running (with their frame progress) and
the newest failures, for the page's live view and ``factory status``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import Avatar, Clip, Recording, Render, SourceObject


@dataclass(frozen=True)
class RunningRender:
    id: int
    recording_id: int
    recording: str
    avatar: str
    clip_start_s: float | None
    clip_end_s: float | None
    started_at: datetime | None
    worker: str | None
    done_frames: int | None
    total_frames: int | None

    @property
    def percent(self) -> int | None:
        if self.done_frames is None or not self.total_frames:
            return None
        return min(100, round(100 * self.done_frames / self.total_frames))


def running_renders(repo: LineageRepository, limit: int = 200) -> list[RunningRender]:
    """Renders lineage says are running, oldest first, with their frame progress when recorded."""
    q = (
        select(
            Render.id,
            Render.recording_id,
            Recording.uri,
            Avatar.name,
            Clip.start_s,
            Clip.end_s,
            Render.started_at,
            Render.stats,
        )
        .join(Recording, Recording.id == Render.recording_id)
        .join(Avatar, Avatar.id == Render.avatar_id)
        .outerjoin(Clip, Clip.id == Render.clip_id)
        .where(Render.status == "running")
        .order_by(Render.started_at, Render.id)
        .limit(limit)
    )
    out = []
    with repo.session() as s:
        for rid, rec_id, uri, avatar, cs, ce, started, stats in s.execute(q):
            stats = stats or {}
            raw = stats.get("progress")
            p: dict[str, Any] = raw if isinstance(raw, dict) else {}
            worker = stats.get("worker")
            out.append(
                RunningRender(
                    rid,
                    rec_id,
                    uri,
                    avatar,
                    cs,
                    ce,
                    started,
                    str(worker) if worker else None,
                    p.get("done") if isinstance(p.get("done"), int) else None,
                    p.get("total") if isinstance(p.get("total"), int) else None,
                )
            )
    return out


@dataclass(frozen=True)
class FailureLine:
    """One recent failure: a render that failed, or an upload or recording quarantined."""

    at: datetime | None
    what: str
    """``render``, ``upload`` or ``recording``."""
    subject: str
    error: str | None


def recent_failures(repo: LineageRepository, limit: int = 5) -> list[FailureLine]:
    """The newest ``limit`` failures of each kind, newest first overall (three small queries)."""
    out: list[FailureLine] = []
    with repo.session() as s:
        for finished, avatar, uri, error in s.execute(
            select(Render.finished_at, Avatar.name, Recording.uri, Render.error)
            .join(Avatar, Avatar.id == Render.avatar_id)
            .join(Recording, Recording.id == Render.recording_id)
            .where(Render.status == "failed")
            .order_by(Render.finished_at.desc(), Render.id.desc())
            .limit(limit)
        ):
            out.append(FailureLine(finished, "render", f"{uri.rsplit('/', 1)[-1]} × {avatar}", error))
        for updated, key, error in s.execute(
            select(SourceObject.updated_at, SourceObject.key, SourceObject.error)
            .where(SourceObject.status == "quarantined")
            .order_by(SourceObject.updated_at.desc(), SourceObject.id.desc())
            .limit(limit)
        ):
            out.append(FailureLine(updated, "upload", key, error))
        for created, uri, error in s.execute(
            select(Recording.created_at, Recording.uri, Recording.error)
            .where(Recording.status == "failed")
            .order_by(Recording.created_at.desc(), Recording.id.desc())
            .limit(limit)
        ):
            out.append(FailureLine(created, "recording", uri, error))

    def when(f: FailureLine) -> float:
        return f.at.timestamp() if f.at else 0.0

    return sorted(out, key=when, reverse=True)[:limit]
