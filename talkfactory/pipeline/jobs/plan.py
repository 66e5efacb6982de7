"""Building the job set of one recording: its clips x its avatars, each to its export name."""

from __future__ import annotations

from collections.abc import Sequence

from talkfactory.infra.lineage.repository import Provenance
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.exports.channels import ChannelRegistry, load_channels
from talkfactory.pipeline.exports.targets import ExportTarget, export_targets
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
    channels: Sequence[str] = (),
    burn_captions: bool = False,
) -> list[RenderJob]:
    """Every clip x every avatar, avatar-major (one avatar's clips run back to back, which keeps its
    frames warm in the page cache), each published as ``export_key(recording, avatar, clip)``, and
    to each of ``channels`` beside it (an unknown channel stops here, before anything runs)."""
    registry = load_channels(settings.channels_file) if channels else None
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
            exports=channel_targets(
                channels,
                registry,
                exports_url,
                export_key(recording_name, avatar.label, clip.number),
                burn_captions=burn_captions,
            ),
        )
        for avatar in avatars
        for clip in clips
    ]


def channel_targets(
    channels: Sequence[str],
    registry: ChannelRegistry | None,
    exports_url: str,
    key: str,
    *,
    burn_captions: bool = False,
) -> tuple[ExportTarget, ...]:
    if not channels or registry is None:
        return ()
    return export_targets(
        channels, registry=registry, location=exports_url, render_key=key, burn_captions=burn_captions
    )


def requested_channels(asked: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """The channels a run exports to: those asked for, else ``TALKFACTORY_CHANNELS``."""
    return tuple(asked) or tuple(settings.channels)
