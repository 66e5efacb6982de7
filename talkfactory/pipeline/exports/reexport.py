"""Channel exports of renders already made: ``talkfactory export REF --channel ... --out DIR``.

The jobs are rebuilt from lineage alone (the render row, its clip, its avatar version), so the
exports come from the stored master with the same reuse rule as a run: a channel file already made
with the current channel spec is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from talkfactory.errors import ConfigurationError
from talkfactory.infra.lineage.repository import LineageRepository, Provenance
from talkfactory.infra.lineage.rows import RenderRow
from talkfactory.infra.lineage.tables import RENDER_DONE
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.exports.channels import load_channels
from talkfactory.pipeline.exports.targets import ExportTarget, export_targets
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.pipeline.jobs.files import split_uri
from talkfactory.pipeline.jobs.model import (
    AvatarSpec,
    ClipSpec,
    Destination,
    RenderJob,
    RenderParams,
)


@dataclass(frozen=True)
class ReexportPlan:
    jobs: tuple[tuple[int, RenderJob], ...]
    """``(render id, job)`` for each finished render to export."""
    skipped: tuple[str, ...]
    """Renders that cannot be exported, and why (not finished, their clip or avatar gone...)."""


def reexport_jobs(
    repo: LineageRepository,
    *,
    recording_id: int,
    render_id: int | None,
    channels: Sequence[str],
    out: str,
    settings: Settings,
    burn_captions: bool = False,
    provenance: Provenance | None = None,
) -> ReexportPlan:
    """Jobs exporting the finished renders of a recording (or the one render ``render_id``) to
    ``channels`` under ``out``."""
    if not channels:
        raise ConfigurationError(
            "name at least one channel (talkfactory channels lists them)", subject="--channel"
        )
    registry = load_channels(settings.channels_file)
    for name in channels:
        registry.get(name)
    recording = repo.get_recording(recording_id)
    if recording is None or not recording.sha256:
        raise ConfigurationError("no such recording in lineage", subject=str(recording_id))
    overviews = repo.renders_for_recording(recording_id)
    clip_numbers = _clip_numbers(overviews_clips=[(o.render.clip_id, o.clip_start_s) for o in overviews])
    out_root = store_from_settings(out, settings).url("x").rsplit("/", 1)[0] + "/"
    jobs: list[tuple[int, RenderJob]] = []
    skipped: list[str] = []
    for o in overviews:
        r = o.render
        if render_id is not None and r.id != render_id:
            continue
        if r.status not in RENDER_DONE or not r.output_uri:
            skipped.append(f"render {r.id} ({o.avatar_name}, {o.clip_span}) is {r.status}, not exported")
            continue
        job = _job(repo, r, recording.sha256, recording.uri, clip_numbers, settings, provenance)
        if job is None:
            skipped.append(
                f"render {r.id} ({o.avatar_name}, {o.clip_span}): its clip or avatar is gone from lineage"
            )
            continue
        key = _channel_key(r.output_uri, out_root)
        targets = export_targets(
            channels, registry=registry, location=out, render_key=key, burn_captions=burn_captions
        )
        jobs.append((r.id, _with_targets(job, targets, out_root)))
    return ReexportPlan(tuple(jobs), tuple(skipped))


def _with_targets(job: RenderJob, targets: tuple[ExportTarget, ...], out_root: str) -> RenderJob:
    from dataclasses import replace

    fixed = []
    for t in targets:
        if t.is_master:
            # The master stays where the render published it; its sidecars go beside it, and only
            # when that is under ``out`` (whose manifest lists it).
            if not job.destination.uri.startswith(out_root):
                continue
            t = replace(t, key=job.destination.uri[len(out_root) :])
        fixed.append(t)
    return replace(job, exports=tuple(fixed))


def _channel_key(output_uri: str, out_root: str) -> str:
    """The render's name under ``out``: its path there when it lives under ``out``, else its
    recording folder and file name (``show/anna__clip003.mp4``)."""
    if output_uri.startswith(out_root):
        return output_uri[len(out_root) :]
    parts = PurePosixPath(output_uri.split("://", 1)[-1]).parts
    return "/".join(parts[-2:])


def _clip_numbers(overviews_clips: list[tuple[int | None, float | None]]) -> dict[int, int]:
    starts = sorted({(s or 0.0, c) for c, s in overviews_clips if c is not None})
    return {clip_id: n for n, (_, clip_id) in enumerate(starts, start=1)}


def _job(
    repo: LineageRepository,
    r: RenderRow,
    recording_sha: str,
    recording_uri: str,
    clip_numbers: dict[int, int],
    settings: Settings,
    provenance: Provenance | None,
) -> RenderJob | None:
    avatar = repo.get_avatar(r.avatar_id)
    if avatar is None or r.output_uri is None:
        return None
    if r.clip_id is None:
        # Exports of a whole track read the master's own audio (execute._master_speech).
        end = round(r.duration_s, 3) if r.duration_s else None
        clip = ClipSpec(None, None, 0.0, end, "", recording_uri, recording_uri, None)
    else:
        c = repo.get_clip(r.clip_id)
        if c is None:
            return None
        clip = ClipSpec(
            clip_id=c.id,
            number=clip_numbers.get(c.id),
            start_s=c.start_s,
            end_s=c.end_s,
            params_hash=c.params_hash,
            # Not read: re-exports take the speech from the master itself.
            audio16_uri=c.audio_uri or "",
            audio48_uri=c.audio48_uri or "",
        )
    params = RenderParams.model_validate(r.params or {})
    location, _ = split_uri(r.output_uri)
    key = r.output_uri[len(location) + 1 :]
    return RenderJob(
        recording_id=r.recording_id,
        recording_sha256=recording_sha,
        recording_name=PurePosixPath(recording_uri).name,
        clip=clip,
        avatar=AvatarSpec(avatar.id, avatar.content_hash, avatar.uri, avatar.name),
        params=params,
        model_version=r.backend_version,
        checkpoint=None,
        destination=Destination(location=_location_of(location), key=key, uri=r.output_uri),
        source_object_id=None,
        provenance=provenance or Provenance(),
    )


def _location_of(location_uri: str) -> str:
    """A store location as stores take it: a folder path for ``file://`` URLs."""
    if location_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(location_uri).path)
    return location_uri
