"""Building the job set of one recording: its clips x its avatars, each to its export name."""

from __future__ import annotations

from collections.abc import Sequence

from talkfactory.infra.lineage.repository import Provenance
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.pipeline.jobs.model import (
    AvatarSpec,
    ClipSpec,
    Destination,
    RenderJob,
    RenderParams,
    VideoEncoder,
)
from talkfactory.pipeline.jobs.naming import export_key


def destination(exports_url: str, key: str, settings: Settings) -> Destination:
    return Destination(location=exports_url, key=key, uri=store_from_settings(exports_url, settings).url(key))


def plan_jobs(
    *,
    recording_id: int,
    recording_sha256: str,
    recording_name: str,
    clips: Sequence[ClipSpec],
    avatars: Sequence[AvatarSpec],
    params: RenderParams,
    model_version: str,
    checkpoint: str | None,
    exports_url: str,
    settings: Settings,
    video_encoder: VideoEncoder | None = None,
    force: bool = False,
    qc_strict: bool = False,
    source_object_id: int | None = None,
    provenance: Provenance | None = None,
) -> list[RenderJob]:
    """Every clip x every avatar, avatar-major (one avatar's clips run back to back, which keeps its
    frames warm in the page cache), each published as ``export_key(recording, avatar, clip)``."""
    return [
        RenderJob(
            recording_id=recording_id,
            recording_sha256=recording_sha256,
            recording_name=recording_name,
            clip=clip,
            avatar=avatar,
            params=params,
            model_version=model_version,
            checkpoint=checkpoint,
            destination=destination(
                exports_url, export_key(recording_name, avatar.label, clip.number), settings
            ),
            video_encoder=video_encoder,
            force=force,
            qc_strict=qc_strict,
            source_object_id=source_object_id,
            provenance=provenance or Provenance(),
        )
        for avatar in avatars
        for clip in clips
    ]
