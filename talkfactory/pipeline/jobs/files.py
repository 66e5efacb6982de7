"""Getting a job's inputs onto the machine that runs it, and its output to where it is published.

A job names its inputs by path (one machine) or store URL (any machine); ``local_copy`` gives the
executor a local file either way, downloading once per etag into the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from talkfactory.errors import ObjectNotFoundError
from talkfactory.infra.settings import Settings
from talkfactory.infra.stores.base import ObjectInfo
from talkfactory.infra.stores.urls import parse_store_url
from talkfactory.pipeline.ingest import store_from_settings


def local_copy(uri: str, settings: Settings) -> Path:
    """A local file for ``uri``: the path itself, or a cached download of a store URL.

    Downloads are cached under ``cache/fetched/<hash of the URL>/<etag>/`` so an executor fetches each
    clip and avatar once, whatever the number of renders that use it, and an object replaced under the
    same key (a new avatar version) is fetched anew.
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
    dest = cached / ("".join(c for c in info.etag if c.isalnum())[:32] or "noetag") / name
    if not (dest.is_file() and dest.stat().st_size == info.size):
        store.get_file(name, dest, expected=info)
    return dest


def split_uri(uri: str) -> tuple[str, str]:
    """``(location, key)`` of a published object: ``s3://b/p/x.mp4`` -> ``("s3://b/p", "x.mp4")``."""
    head, _, name = uri.rstrip("/").rpartition("/")
    return head, name


def publish_file(local: Path, location: str, key: str, settings: Settings) -> ObjectInfo:
    """Put ``local`` at ``key`` in ``location``; readers see the old object or the whole new one."""
    return store_from_settings(location, settings).put_file(local, key, content_type="video/mp4")


def published(location: str, key: str, settings: Settings) -> bool:
    return store_from_settings(location, settings).exists(key)


def clip_audio_key(recording_sha: str, params_hash: str, file_name: str) -> str:
    return f"clips/{recording_sha[:2]}/{recording_sha}/{params_hash[:16]}/{file_name}"


def share_clip_audio(settings: Settings, recording_sha: str, params_hash: str, local: Path) -> str:
    """Put one clip WAV in the work store and return its URL (a path when the store is a folder)."""
    store = store_from_settings(settings.resolved_work_url, settings)
    key = clip_audio_key(recording_sha, params_hash, local.name)
    if not store.exists(key):
        store.put_file(local, key, content_type="audio/wav")
    return store.url(key)
