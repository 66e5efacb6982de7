"""Tasks that open a recording and prepare avatars, recording success or the reason for failure."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from talkfactory.errors import PermanentError
from talkfactory.infra.files import sha256_file
from talkfactory.pipeline.avatar import PreparedAvatar, prepare_avatar
from talkfactory.pipeline.recording import PreparedRecording, prepare_recording
from talkfactory.tasks.context import provenance, repository, retry_transient

_RETRY = dict(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)


@task(name="prepare-recording", task_run_name="prepare {path}", **_RETRY)  # type: ignore[call-overload,untyped-decorator]
def prepare_recording_task(path: str, work_dir: str, database_url: str) -> tuple[PreparedRecording, int]:
    """Hash, probe and extract speech; returns the recording and its lineage id."""
    repo, prov = repository(database_url), provenance()
    try:
        rec = prepare_recording(path, Path(work_dir))
    except Exception as exc:
        sha = _sha_or_none(path)
        repo.record_recording_failure(uri=str(path), sha256=sha, error=exc, prov=prov)
        raise
    rec_id = repo.register_recording(
        uri=str(Path(path).resolve()),
        sha256=rec.sha256,
        size_bytes=rec.size_bytes,
        duration_s=rec.duration_s,
        probe=rec.probe_dict(),
        warnings=rec.warnings,
        prov=prov,
    )
    return rec, rec_id


@task(name="prepare-avatar", task_run_name="prepare avatar {path}", **_RETRY)  # type: ignore[call-overload,untyped-decorator]
def prepare_avatar_task(
    path: str, cache_dir: str, database_url: str, uri: str | None = None, name: str | None = None
) -> tuple[PreparedAvatar, int]:
    """Track the avatar's face (cached by content hash); returns it and its lineage id.

    ``uri`` is what lineage records as the avatar's location (a store URL that executors on other
    machines can read) when ``path`` is only this machine's copy of it; ``name`` is its name in the
    library and in export names (``pipeline.jobs.naming``; the file stem when None).
    """
    repo, prov = repository(database_url), provenance()
    try:
        av = prepare_avatar(path, Path(cache_dir))
    except Exception as exc:
        repo.record_avatar_failure(
            content_hash=_sha_or_none(path),
            name=name or Path(path).stem,
            uri=uri or str(path),
            error=exc,
            prov=prov,
        )
        raise
    av_id = repo.register_avatar(
        content_hash=av.content_hash,
        name=name or av.name,
        uri=uri or str(Path(path).resolve()),
        kind=av.kind,
        width=av.track.width,
        height=av.track.height,
        fps=av.fps,
        num_frames=av.track.num_frames,
        face_ratio=av.track.face_ratio,
        track_uri=str(av.track_path.resolve()),
        prov=prov,
    )
    return av, av_id


def _sha_or_none(path: str) -> str | None:
    try:
        return sha256_file(path)
    except PermanentError:
        return None
