"""Lineage tables of live pushes: one row per push, one per attempt at it (migration 0006).

A push sends a playlist of files to one ingest URL. Only the masked URL (``rtmp://host:port/app/****``)
is stored: the stream key never reaches the database. Each attempt says where it started (``first_file``)
and how far it got, so the chain of retries after a dropped connection can be read back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from talkfactory.infra.lineage.tables import Base, Provenance, utcnow


class LivePush(Provenance, Base):
    """A playlist pushed live to one ingest URL."""

    __tablename__ = "live_pushes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(Text)
    """The ingest URL with its stream key masked."""
    channel: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    """``copy`` (the files as they are) or ``encode`` (re-encoded to the channel's live limits)."""
    reasons: Mapped[list[Any] | None] = mapped_column(JSON)
    """Why the files had to be re-encoded (empty for ``copy``)."""
    sources: Mapped[list[Any]] = mapped_column(JSON)
    """``[{"uri", "duration_s", "export_id"}, ...]`` in playing order."""
    total_s: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="running")
    """running -> done (every file sent whole) | partial (some file cut and skipped) | failed."""
    files_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped: Mapped[list[Any] | None] = mapped_column(JSON)
    """0-based indexes of files cut by a failure and not sent again (``resume="next"``)."""
    pushed_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PushAttempt(Provenance, Base):
    """One connection's try at the rest of a push's playlist."""

    __tablename__ = "push_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(ForeignKey("live_pushes.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    first_file: Mapped[int] = mapped_column(Integer)
    """0-based index in the playlist of the file this attempt started with."""
    files_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Files this attempt sent whole."""
    file_on_air: Mapped[int | None] = mapped_column(Integer)
    """Playlist index of the file being sent when it failed (None: nothing was being sent)."""
    status: Mapped[str] = mapped_column(String(16), default="running")
    """running -> succeeded | failed."""
    pushed_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error_type: Mapped[str | None] = mapped_column(String(64))
    permanent: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


__all__ = ["LivePush", "PushAttempt"]
