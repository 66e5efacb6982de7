"""What a render fan-out needs apart from Prefect: job identities, GPU slot names, moving clip audio.

A ``render-clip`` run may start on another machine than the ``process-recording`` run that asked for
it, so its parameters are lineage ids and URLs only, and clip audio travels through the work store.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from talkfactory.errors import ObjectNotFoundError
from talkfactory.infra.settings import Settings
from talkfactory.infra.stores.urls import parse_store_url
from talkfactory.pipeline.ingest import (
    AVATAR_SUFFIXES,
    cached_avatar,
    is_media_key,
    resolve_avatars,
    store_from_settings,
)


@dataclass(frozen=True)
class RenderJob:
    """One clip x one avatar, as a ``render-clip`` run receives it."""

    recording_id: int
    clip_id: int
    clip_number: int
    """1-based position of the clip in its recording's clip set; names the export."""
    avatar: str
    """Path or store URL of the avatar file, readable from the worker that takes the run."""
    avatar_id: int
    exports_url: str
    export_key: str
    source_object_id: int | None = None

    def identity(self, params_hash: str, backend_version: str) -> str:
        """Stable across retries of the parent: lineage ids, the render parameters and the backend
        version (a render that went stale with a backend upgrade is a new job, not the old run)."""
        version = hashlib.sha256(backend_version.encode()).hexdigest()[:12]
        return f"{self.recording_id}:{self.clip_id}:{self.avatar_id}:{params_hash[:16]}:{version}"

    def parameters(self) -> dict[str, object]:
        return asdict(self)


def idempotency_key(
    identity: str, resubmission: int, variant: str = "", force_token: str | None = None
) -> str:
    """Prefect creates one flow run per key: the same parent asking twice gets the same child.

    ``resubmission`` counts the earlier runs of this job that ended without a render (crashed or
    failed; lineage ``attempts``), so a job whose worker died, or a failed one that nightly-reprocess
    retries, gets a fresh run, while a parent retried after that still computes the same key.
    ``variant`` names what else the run's parameters decide (export location, encoder): asking for the
    same render published elsewhere is another run. ``force_token`` (the forcing parent's run id) makes
    a forced redo new once, yet stable if that parent is retried.
    """
    key = f"render-clip:{identity}:{resubmission}"
    if variant:
        key += f":{variant}"
    return key + (f":force-{force_token}" if force_token else "")


def job_variant(job: RenderJob, common: Mapping[str, object]) -> str:
    """A short hash of a job's parameters that its identity leaves out (see ``idempotency_key``)."""
    extra = {"exports_url": job.exports_url, "export_key": job.export_key, **common}
    extra.pop("force", None)
    return hashlib.sha256(repr(sorted(extra.items())).encode()).hexdigest()[:8]


def worker_name(settings: Settings) -> str:
    return settings.worker or f"{socket.gethostname()}:{os.getpid()}"


def gpu_name(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The device a render holds while it runs: ``TALKFACTORY_GPU``, else the first visible CUDA
    device, else ``cpu`` (a CPU-only worker still takes one slot per render)."""
    if settings.gpu:
        return settings.gpu
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "cpu"


def gpu_slot_name(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The Prefect concurrency limit guarding this worker's GPU; one per (host, device)."""
    return f"talkfactory-gpu:{socket.gethostname()}:{gpu_name(settings, environ)}"


def max_overlap(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The most intervals open at any one moment; an interval's end does not overlap the next start."""
    spans = list(intervals)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    # Ends sort before starts at the same instant (-1 < 1): back-to-back renders do not overlap.
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


def clip_audio_key(recording_sha: str, params_hash: str, file_name: str) -> str:
    return f"clips/{recording_sha[:2]}/{recording_sha}/{params_hash[:16]}/{file_name}"


def share_clip_audio(settings: Settings, recording_sha: str, params_hash: str, local: Path) -> str:
    """Put one clip WAV in the work store and return its URL (a path when the store is a folder)."""
    url = settings.resolved_work_url
    store = store_from_settings(url, settings)
    key = clip_audio_key(recording_sha, params_hash, local.name)
    if not store.exists(key):
        store.put_file(local, key, content_type="audio/wav")
    return store.url(key)


def local_copy(uri: str, settings: Settings) -> Path:
    """A local file for ``uri``: the path itself, or a cached download of a store URL.

    Downloads are cached under ``cache/fetched/<hash of the URL>/`` so a worker fetches each clip
    and avatar once, whatever the number of renders that use it.
    """
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" not in uri:
        return Path(uri)
    location = parse_store_url(uri)
    key = location.prefix.rstrip("/")
    folder, name = PurePosixPath(key).parent.as_posix(), PurePosixPath(key).name
    store = store_from_settings(f"s3://{location.bucket}/" + ("" if folder == "." else folder), settings)
    cached = settings.cache_dir / "fetched" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    try:
        info = store.stat(name)
    except ObjectNotFoundError:
        # Gone from the store since: the last copy fetched is still what lineage says was used.
        copies = sorted(cached.glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
        if copies:
            return copies[-1]
        raise
    # Keyed by etag too: an object replaced under the same key (a new avatar version) is fetched anew.
    dest = cached / ("".join(c for c in info.etag if c.isalnum())[:32] or "noetag") / name
    if not (dest.is_file() and dest.stat().st_size == info.size):
        store.get_file(name, dest, expected=info)
    return dest


def avatar_sources(avatars: Sequence[str], settings: Settings) -> list[tuple[Path, str]]:
    """(this machine's copy, URL for other machines) of each avatar.

    Entries are local paths, store URLs, or keys in ``TALKFACTORY_AVATARS_URL``; no entries means
    every image or video there (``resolve_avatars`` rules).
    """
    store = store_from_settings(settings.avatars_url, settings) if settings.avatars_url else None
    out: list[tuple[Path, str]] = []
    if not avatars and store is not None:
        # The whole library: its keys name objects in the store, never files here.
        infos = [i for i in store.list() if is_media_key(i.key, AVATAR_SUFFIXES)]
        if not infos:
            resolve_avatars([], store, settings.cache_dir)  # raises, saying the library is empty
        return [(cached_avatar(store, i, settings.cache_dir), store.url(i.key)) for i in infos]
    for entry in avatars:
        if "://" in entry:
            out.append((local_copy(entry, settings), entry))
            continue
        # resolve_avatars raises ConfigurationError naming an entry that is neither a file nor a key.
        (path,) = resolve_avatars([entry], store, settings.cache_dir)
        on_disk = Path(entry).expanduser()
        out.append((path, str(on_disk.resolve()) if on_disk.is_file() or store is None else store.url(entry)))
    if not out:
        resolve_avatars([], store, settings.cache_dir)  # raises: no avatars at all, and says why
    return out
