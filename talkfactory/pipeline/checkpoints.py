"""Checkpoints given as a local path or as an object URL (``s3://bucket/models/wav2lip.pth``).

Object checkpoints are downloaded once into the cache, named by their etag, so every worker
that renders with the same model reads it from local disk after the first render.
"""

from __future__ import annotations

import logging

from talkfactory.infra.settings import Settings
from talkfactory.infra.stores.urls import open_store

log = logging.getLogger(__name__)


def resolve_checkpoint(ref: str | None, settings: Settings) -> str | None:
    """A local path for ``ref``: unchanged when it is one, downloaded into the cache when it is an URL."""
    if ref is None or not ref.startswith("s3://"):
        return ref
    folder, _, name = ref.rstrip("/").rpartition("/")
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    store = open_store(
        folder,
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=secret,
        secure=settings.s3_secure,
    )
    info = store.stat(name)
    etag = info.etag.strip('"')
    target = settings.cache_dir / "checkpoints" / f"{etag}-{name}"
    if not target.exists() or target.stat().st_size != info.size:
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading checkpoint %s (%d bytes) to %s", store.url(name), info.size, target)
        store.get_file(name, target, expected=info)
    return str(target)
