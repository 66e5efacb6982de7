"""The render job, defined once: one clip (or whole track) x one avatar, published to one place.

Every way of running renders (``talkfactory run``, ``scan``, ``process-recording``,
``nightly-reprocess``) builds these values and hands them to an executor (in this process, or a
resident Ray actor); nothing else decides a render's identity, name, reuse or settlement. Jobs are
plain frozen values (ids, hashes, URLs): they pickle to another machine, and they carry no
credentials (stores are opened with the executor's own settings).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from talkfactory.infra.lineage.repository import Provenance
from talkfactory.models.lipsync.liveliness import LIVELINESS_VERSION
from talkfactory.pipeline.exports.targets import ExportTarget

VideoEncoder = Literal["libx264", "h264_nvenc"]
JobStatus = Literal["succeeded", "needs_review", "failed", "interrupted"]
ExportStatus = Literal["published", "failed", "skipped"]
Liveliness = Literal["auto", "off", "subtle", "lively"]


class RenderParams(BaseModel):
    """Everything that decides a render's pixels apart from its inputs and model version.

    Hashed into the render's identity. Where the checkpoint lives is not in here: the model version
    (the checkpoint's sha256) is, so moving an identical checkpoint changes nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = "weightless"
    crf: int = Field(default=20, ge=0, le=51)
    preset: str = "veryfast"
    liveliness: Liveliness = "auto"
    """Blinks, brows and head motion added to stills (``auto``: stills subtle, template videos off);
    resolved per avatar from its content, which is part of the identity too."""
    liveliness_version: str = LIVELINESS_VERSION

    def params_hash(self) -> str:
        return stable_hash(self.model_dump())


@dataclass(frozen=True)
class ClipSpec:
    """What a render speaks: a clip from lineage, or (``clip_id`` None) the recording's whole track."""

    clip_id: int | None
    number: int | None
    """1-based position of the clip in its recording's clip set; names the export."""
    start_s: float
    end_s: float | None
    params_hash: str
    """The speech parameters that cut the clip ("" for a whole track)."""
    audio16_uri: str
    """16 kHz mono WAV the backend reads (or, for a whole track, the recording itself)."""
    audio48_uri: str
    """48 kHz WAV muxed into the MP4 (for a whole track, the recording itself)."""
    audio_stream: int | None = None
    """For a whole track: the recording's audio stream to mux (None: the first)."""

    @property
    def whole_track(self) -> bool:
        return self.clip_id is None


@dataclass(frozen=True)
class AvatarSpec:
    """An avatar version: its lineage id, its content, where an executor can read it, its name."""

    avatar_id: int
    content_hash: str
    uri: str
    """A local path (one machine) or a store URL (any machine)."""
    label: str
    """The avatar's name in export names; unique among the avatars of one job set."""


@dataclass(frozen=True)
class Destination:
    """Where the MP4 is published: a store location (folder or ``s3://bucket/prefix``) and a key."""

    location: str
    key: str
    uri: str
    """The object's URL as its store names it (``s3://…`` or ``file:///…``); what lineage records."""


@dataclass(frozen=True)
class RenderJob:
    """One render, complete: what a local thread or a remote actor needs, and nothing secret."""

    recording_id: int
    recording_sha256: str
    recording_name: str
    """How users know the recording (its ingest key or file name); in rows and messages."""
    clip: ClipSpec
    avatar: AvatarSpec
    params: RenderParams
    model_version: str
    """The backend's version: code version plus the checkpoint's sha256 for weight-bearing ones."""
    checkpoint: str | None
    """Where the checkpoint lives (path or URL); read, never hashed."""
    destination: Destination
    video_encoder: VideoEncoder | None = None
    force: bool = False
    qc_strict: bool = False
    """A render that fails its sync check is not published (else it is, marked ``needs_review``)."""
    source_object_id: int | None = None
    provenance: Provenance = Provenance()
    """The Prefect flow/task run that asked for it; recorded on its lineage rows, not part of its identity."""
    exports: tuple[ExportTarget, ...] = ()
    """The channels this render is published to besides itself (``master`` first when any); files
    hang off the render, so they are not part of its identity."""

    def content_key(self) -> str:
        """Same inputs, model and parameters -> same pixels, wherever the file is published."""
        clip = self.clip
        return stable_hash(
            {
                "recording": self.recording_sha256,
                "avatar": self.avatar.content_hash,
                "model": self.model_version,
                "params": self.params.model_dump(),
                "clip": [clip.params_hash, round(clip.start_s, 3), _round(clip.end_s)],
            }
        )

    def render_key(self) -> str:
        """The render's identity in lineage: its content and where it is published.

        Two destinations are two renders, so a failure publishing to one never touches the other's row.
        """
        return stable_hash({"content": self.content_key(), "destination": self.destination.uri})

    @property
    def label(self) -> str:
        """``show.flv: anna clip 3`` — how logs and task runs name the job."""
        what = "whole track" if self.clip.whole_track else f"clip {self.clip.number}"
        return f"{self.recording_name}: {self.avatar.label} {what}"

    def parameters(self) -> dict[str, Any]:
        return asdict(self) | {"params": self.params.model_dump()}


@dataclass(frozen=True)
class ExportOutcome:
    """One channel file of one job, as runners report it."""

    channel: str
    status: ExportStatus
    uri: str
    part: int | None = None
    parts: int = 1
    error: str | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    loudness_lufs: float | None = None
    true_peak_db: float | None = None


@dataclass(frozen=True)
class JobResult:
    """A finished job, the one row shape every runner reports (CLI table, artifacts, return values)."""

    render_key: str
    recording_name: str
    avatar: str
    clip_number: int | None
    clip_start_s: float
    clip_end_s: float | None
    destination: str
    status: JobStatus
    render_id: int | None = None
    output: str | None = None
    reused: Literal["", "same", "copied"] = ""
    """``same``: already published there; ``copied``: the same render published elsewhere was copied."""
    duration_s: float | None = None
    wall_s: float | None = None
    encoder: str | None = None
    attempts: int = 0
    error: str | None = None
    bad_input: bool = False
    """The failure is about this job's own input (no face...): recorded, never retried."""
    worker: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    exports: tuple[ExportOutcome, ...] = ()
    """The channel files made for this render in this run (already made ones are not listed)."""

    @classmethod
    def of(cls, job: RenderJob, status: JobStatus, **fields: Any) -> JobResult:
        """A row for ``job``: what identifies it comes from the job, the outcome from ``fields``."""
        return cls(
            render_key=job.render_key(),
            recording_name=job.recording_name,
            avatar=job.avatar.label,
            clip_number=job.clip.number,
            clip_start_s=job.clip.start_s,
            clip_end_s=job.clip.end_s,
            destination=job.destination.uri,
            status=status,
            **fields,
        )

    @property
    def rtf(self) -> float | None:
        return self.wall_s / self.duration_s if self.wall_s and self.duration_s else None

    @property
    def ok(self) -> bool:
        """Published: ``needs_review`` renders are published too, flagged for a person to look at."""
        return self.status in ("succeeded", "needs_review")


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class RenderOptions(BaseModel):
    """How a caller wants renders made; a flow parameter, checked by Prefect when the run is created.

    ``None`` fields fall back to settings (``TALKFACTORY_BACKEND`` ...) where the flow runs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str | None = None
    checkpoint: str | None = None
    """Path or ``s3://`` URL of a weight-bearing backend's checkpoint."""
    video_encoder: VideoEncoder | None = None
    force: bool = False
    """Redo renders lineage says are done."""
    whole_track: bool = False
    """Render the recording's audio as it is, start to end, instead of speech clips."""
    liveliness: Liveliness = "auto"
    qc_strict: bool = False
    """Do not publish a render that fails its sync check (it is published as ``needs_review`` else)."""
    channels: tuple[str, ...] = ()
    """Publishing channels to export each render to (``talkfactory channels`` lists them); empty:
    ``TALKFACTORY_CHANNELS``, and with that unset only the render itself."""
    burn_captions: bool = False
    """Burn captions into the channel files (every channel; some presets ask for it themselves)."""
