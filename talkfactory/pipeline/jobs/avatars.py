"""Which avatars a job set uses: local files, keys in the avatars library, or store URLs.

Each comes back with this machine's copy (to track its face), the URL an executor on another
machine reads it from, and its name in export names (``naming``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from talkfactory.errors import ConfigurationError, ObjectNotFoundError
from talkfactory.infra.settings import Settings
from talkfactory.infra.stores.urls import parse_store_url
from talkfactory.pipeline.ingest import (
    AVATAR_SUFFIXES,
    cached_avatar,
    is_media_key,
    store_from_settings,
)
from talkfactory.pipeline.jobs.files import local_copy
from talkfactory.pipeline.jobs.naming import library_label, library_labels, local_labels


@dataclass(frozen=True)
class AvatarSource:
    local: Path
    uri: str
    label: str


def avatar_sources(entries: Sequence[str], settings: Settings) -> list[AvatarSource]:
    """Resolve ``entries`` (no entries: the whole library at ``TALKFACTORY_AVATARS_URL``).

    An entry is a local file, a store URL, or a key in the library. Raises ``ConfigurationError``
    when there is nothing to render with, or an entry is none of these: that is the setup, not an
    avatar, and it stops the job before any recording is touched.
    """
    store = store_from_settings(settings.avatars_url, settings) if settings.avatars_url else None
    if not entries:
        if store is None:
            raise ConfigurationError("no avatars given and no avatars location configured", subject="avatars")
        infos = [i for i in store.list() if is_media_key(i.key, AVATAR_SUFFIXES)]
        if not infos:
            raise ConfigurationError(
                "the avatars location holds no images or videos", subject=settings.avatars_url
            )
        labels = library_labels([i.key for i in infos])
        return [
            AvatarSource(cached_avatar(store, i, settings.cache_dir), store.url(i.key), label)
            for i, label in zip(infos, labels, strict=True)
        ]
    local_entries = [e for e in entries if "://" not in e and Path(e).expanduser().is_file()]
    local_names = dict(zip(local_entries, local_labels(local_entries), strict=True))
    out: list[AvatarSource] = []
    for entry in entries:
        if entry in local_names:
            path = Path(entry).expanduser().resolve()
            out.append(AvatarSource(path, str(path), local_names[entry]))
        elif "://" in entry:
            label = library_label(_key_of(entry, settings.avatars_url))
            out.append(AvatarSource(local_copy(entry, settings), entry, label))
        elif store is not None:
            try:
                info = store.stat(entry)
            except ObjectNotFoundError as exc:
                raise ConfigurationError(f"no such avatar in {settings.avatars_url}", subject=entry) from exc
            out.append(
                AvatarSource(
                    cached_avatar(store, info, settings.cache_dir), store.url(entry), library_label(entry)
                )
            )
        else:
            raise ConfigurationError(
                "not a file, and no avatars location is configured to look it up in", subject=entry
            )
    labels = [a.label for a in out]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"two avatars would share a name: {', '.join(labels)}", subject="avatars")
    return out


def _key_of(url: str, library: str | None) -> str:
    """The key that names an avatar given by URL: relative to the library when it is in it."""
    if library and url.startswith(library.rstrip("/") + "/"):
        return url[len(library.rstrip("/")) + 1 :]
    if url.startswith("s3://"):
        return parse_store_url(url).prefix.rstrip("/")
    return Path(unquote(urlparse(url).path)).name
