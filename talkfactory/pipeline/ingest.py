"""Find new recordings in an ingest location (a bucket or a drop folder) and fetch them to the work area.

The cursor is the ``source_objects`` table, not a timestamp: every listed object whose (bucket, key,
etag) is not registered yet is a candidate, so nothing listed is skipped and nothing registered is
taken twice. The listing is looked up in pages (one query per ``batch_size`` keys).

An object may still be uploading. It is left *waiting* for a later scan when

* it was modified less than ``settle_seconds`` ago (by the store's clock: S3's Last-Modified, a
  file's mtime, which a growing file keeps moving), or
* its size or etag differ from the look the previous scan saved for it (``ingest_looks``; only objects
  a scan left waiting have a look, so the table stays as small as the set of uploads in flight), or
* ``confirm_looks`` is on and no scan has seen it before: then every object needs two scans that see
  it unchanged (for drop folders fed by tools that set an old mtime before the last byte is written,
  such as ``cp -p``).

Objects whose key no store may use (``../x.flv``, control characters, over 1024 bytes) and empty
objects are *rejected*: the caller records them once, as quarantined, with the reason. Files are never
moved or deleted; a drop folder is just a ``LocalObjectStore`` over the folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from talkfactory.errors import ConfigurationError, InvalidKeyError
from talkfactory.infra.files import sha256_file
from talkfactory.infra.lineage.repository import (
    LOCAL_BUCKET,
    SOURCE_LOOKUP_BATCH,
    LineageRepository,
    ObjectLook,
    SourceObjectState,
)
from talkfactory.infra.settings import Settings
from talkfactory.infra.stores import LocalObjectStore, ObjectInfo, ObjectStore, S3ObjectStore, open_store

log = logging.getLogger(__name__)

MEDIA_SUFFIXES: tuple[str, ...] = (".flv", ".mp4", ".mov", ".mkv", ".m4a", ".wav", ".mp3", ".aac")
"""Extensions a scan looks at (case-insensitive); everything else in the location is ignored."""
DEFAULT_SETTLE_SECONDS = 30.0
DEFAULT_MAX_ATTEMPTS = 3
"""Processing attempts per object before a transient failure is quarantined for good."""
DEFAULT_STALE_AFTER = timedelta(hours=6)
"""A row left ``registered``/``processing`` this long belongs to a scan that died: it is taken again."""
_MAX_WORK_NAME = 120


@dataclass(frozen=True)
class IngestLocation:
    """Where lineage files the objects of one store: ``bucket`` plus ``key_prefix + key``.

    S3: the bucket and the store's prefix. A folder: the pseudo-bucket ``file`` and the folder's absolute
    path, so two drop folders never share keys. ``store_url`` never carries credentials.
    """

    store_url: str
    bucket: str
    key_prefix: str

    def full_key(self, key: str) -> str:
        return self.key_prefix + key


def ingest_location(store: ObjectStore) -> IngestLocation:
    """The lineage address of ``store``; ``ConfigurationError`` for a store type it cannot name."""
    if isinstance(store, S3ObjectStore):
        return IngestLocation(f"s3://{store.bucket}/{store.prefix}", store.bucket, store.prefix)
    if isinstance(store, LocalObjectStore):
        root = store.root.as_posix().rstrip("/") + "/"
        return IngestLocation(store.root.as_uri().rstrip("/") + "/", LOCAL_BUCKET, root)
    raise ConfigurationError(f"cannot scan a {type(store).__name__}", subject=repr(store))


@dataclass
class ScanPlan:
    """What one look at the ingest location found; nothing has been registered or downloaded yet."""

    location: IngestLocation
    new: list[ObjectInfo] = field(default_factory=list)
    """Settled objects never registered: register each (it is then this scan's) and process it."""
    retry: list[tuple[ObjectInfo, SourceObjectState]] = field(default_factory=list)
    """Registered objects to process again: failed transiently, or abandoned by a scan that died."""
    waiting: list[tuple[ObjectInfo, str]] = field(default_factory=list)
    """Objects that may still be uploading, with why; a later scan looks again."""
    rejected: list[tuple[ObjectInfo, str]] = field(default_factory=list)
    """Objects that can never be used (bad key, empty), with why; record them once as quarantined."""
    known: int = 0
    """Registered objects with nothing left to do (done, quarantined, or being processed now)."""
    ignored: int = 0
    """Listed objects without a media extension."""
    listed: int = 0
    list_s: float = 0.0
    """Seconds spent waiting on the listing."""
    lookup_s: float = 0.0
    """Seconds spent in lineage lookups (and saving looks)."""

    @property
    def has_work(self) -> bool:
        return bool(self.new or self.retry or self.rejected)


def is_media_key(key: str, suffixes: Sequence[str] = MEDIA_SUFFIXES) -> bool:
    return key.lower().endswith(tuple(s.lower() for s in suffixes))


def plan_scan(
    store: ObjectStore,
    prefix: str,
    repo: LineageRepository,
    *,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    suffixes: Sequence[str] = MEDIA_SUFFIXES,
    confirm_looks: bool = False,
    save_looks: bool = True,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    batch_size: int = SOURCE_LOOKUP_BATCH,
    now: datetime | None = None,
) -> ScanPlan:
    """List ``store`` under ``prefix`` and sort every media-looking object into the plan's lists.

    Args:
        store: the ingest location (``S3ObjectStore`` or ``LocalObjectStore``).
        prefix: listing prefix relative to the store (``""`` for all of it).
        repo: lineage; read in batches, and written only to save looks (see ``save_looks``).
        settle_seconds: an object modified more recently than this waits for a later scan.
        suffixes: media extensions to consider.
        confirm_looks: take an object only once two scans saw it unchanged.
        save_looks: remember waiting objects' looks for the next scan (off for a dry run).
        max_attempts: a ``failed`` object is retried while it has had fewer attempts than this.
        stale_after: a ``registered``/``processing`` row untouched this long is taken again.
        batch_size: keys per lineage query.
        now: the current time (tests); UTC now by default.

    Raises the store's errors for the listing itself (missing bucket or folder, bad credentials,
    unreachable endpoint): nothing can be planned without it.
    """
    location = ingest_location(store)
    plan = ScanPlan(location=location)
    rules = _Rules(
        settle_seconds=settle_seconds,
        confirm_looks=confirm_looks,
        save_looks=save_looks,
        max_attempts=max_attempts,
        stale_after=stale_after,
        batch_size=max(1, batch_size),
        now=now or datetime.now(UTC),
    )
    page: list[ObjectInfo] = []
    unknown: list[ObjectInfo] = []
    for info in _timed_listing(store.list(prefix), plan):
        plan.listed += 1
        if not is_media_key(info.key, suffixes):
            plan.ignored += 1
            continue
        page.append(info)
        if len(page) >= rules.batch_size:
            unknown += _sort_known(page, plan, store, repo, rules)
            page = []
    if page:
        unknown += _sort_known(page, plan, store, repo, rules)
    # After the listing, so the few unknown objects of a mostly-known bucket cost one query, not one a page.
    for start in range(0, len(unknown), rules.batch_size):
        _sort_unknown(unknown[start : start + rules.batch_size], plan, repo, rules)
    log.info(
        "scanned %s: %d listed, %d new, %d to retry, %d waiting, %d rejected, %d known, %d ignored",
        location.store_url, plan.listed, len(plan.new), len(plan.retry), len(plan.waiting),
        len(plan.rejected), plan.known, plan.ignored,
    )  # fmt: skip
    return plan


def _timed_listing(listing: Iterator[ObjectInfo], plan: ScanPlan) -> Iterator[ObjectInfo]:
    while True:
        t0 = time.perf_counter()
        try:
            info = next(listing)
        except StopIteration:
            plan.list_s += time.perf_counter() - t0
            return
        plan.list_s += time.perf_counter() - t0
        yield info


@dataclass(frozen=True)
class _Rules:
    settle_seconds: float
    confirm_looks: bool
    save_looks: bool
    max_attempts: int
    stale_after: timedelta
    batch_size: int
    now: datetime


def _sort_known(
    page: list[ObjectInfo], plan: ScanPlan, store: ObjectStore, repo: LineageRepository, rules: _Rules
) -> list[ObjectInfo]:
    """Count (or queue for retry) the registered objects of a page, reject unusable ones; return the rest."""
    loc, now = plan.location, rules.now
    t0 = time.perf_counter()
    known = repo.known_source_objects(
        loc.bucket, [loc.full_key(i.key) for i in page], batch_size=rules.batch_size
    )
    plan.lookup_s += time.perf_counter() - t0

    candidates: list[ObjectInfo] = []
    for info in page:
        state = known.get((loc.full_key(info.key), info.etag))
        if state is not None:
            if _should_retry(state, now, rules.max_attempts, rules.stale_after):
                plan.retry.append((info, state))
            else:
                plan.known += 1
            continue
        reason = rejection(store, info)
        if reason is not None:
            age = _age_s(info, now)
            if info.size == 0 and age < rules.settle_seconds:
                plan.waiting.append((info, _young(age, rules.settle_seconds)))  # an empty file just created
            else:
                plan.rejected.append((info, reason))
            continue
        candidates.append(info)
    return candidates


def _sort_unknown(
    candidates: list[ObjectInfo], plan: ScanPlan, repo: LineageRepository, rules: _Rules
) -> None:
    """New or still settling: compare each with its last look, and save the looks of those left waiting."""
    loc = plan.location
    t0 = time.perf_counter()
    looks = repo.previous_looks(
        loc.bucket, [loc.full_key(i.key) for i in candidates], batch_size=rules.batch_size
    )
    to_save: list[ObjectLook] = []
    for info in candidates:
        why = _unsettled(info, looks.get(loc.full_key(info.key)), rules)
        if why is None:
            plan.new.append(info)
        else:
            plan.waiting.append((info, why))
            to_save.append(ObjectLook(loc.full_key(info.key), info.etag, info.size, info.last_modified))
    if to_save and rules.save_looks:
        repo.save_looks(loc.bucket, to_save)
    plan.lookup_s += time.perf_counter() - t0


def rejection(store: ObjectStore, info: ObjectInfo) -> str | None:
    """Why ``info`` can never be processed (unusable key, empty object), or None."""
    try:
        store.url(info.key)  # validates the key, and the prefix + key length on S3
    except InvalidKeyError as exc:
        return str(exc)
    if info.size == 0:
        return "the object is empty (0 bytes)"
    return None


def _unsettled(info: ObjectInfo, look: ObjectLook | None, rules: _Rules) -> str | None:
    age = _age_s(info, rules.now)
    if age < rules.settle_seconds:
        return _young(age, rules.settle_seconds)
    if look is not None and (look.size_bytes, look.etag) != (info.size, info.etag):
        return f"still changing: {look.size_bytes} -> {info.size} bytes since the last scan"
    if look is None and rules.confirm_looks:
        return "first look; taken when the next scan sees it unchanged"
    return None


def _young(age: float, settle_seconds: float) -> str:
    if age < 0:
        return (
            f"modified {-age:.0f} s in the future (clock skew); waiting until it is {settle_seconds:g} s old"
        )
    return f"modified {age:.0f} s ago; taken once unchanged for {settle_seconds:g} s"


def _age_s(info: ObjectInfo, now: datetime) -> float:
    return (now - _aware(info.last_modified)).total_seconds()


def _should_retry(state: SourceObjectState, now: datetime, max_attempts: int, stale_after: timedelta) -> bool:
    if state.status == "failed":
        return state.attempts < max_attempts
    if state.status in ("registered", "processing"):
        return now - _aware(state.updated_at) > stale_after
    return False


def _aware(moment: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; everything here is stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- fetching and publishing --------------------------------------------------------------------------


def work_name(key: str) -> str:
    """A local file name for ``key``: its last segment, shortened (file systems allow 255 bytes)."""
    name = PurePosixPath(key).name
    suffix = PurePosixPath(name).suffix[:16]
    stem = name[: len(name) - len(suffix)] if suffix else name
    while len(stem.encode("utf-8")) > _MAX_WORK_NAME:
        stem = stem[:-1]
    return (stem or "recording") + suffix


def fetch_to_work(store: ObjectStore, info: ObjectInfo, work_dir: Path) -> Path:
    """Download ``info`` into ``work_dir`` (streamed, size-checked, atomic) and return the file.

    ``ObjectNotFoundError`` when the object was deleted or replaced since it was listed; the store
    retries truncated and interrupted transfers itself.
    """
    dest = work_dir / work_name(info.key)
    store.get_file(info.key, dest, expected=info)
    return dest


def fetch_and_hash(store: ObjectStore, info: ObjectInfo, work_dir: Path) -> tuple[Path, str]:
    """``fetch_to_work`` plus the file's sha256 (read back from the local disk, not the network)."""
    path = fetch_to_work(store, info, work_dir)
    return path, sha256_file(path)


def export_key(source_key: str, avatar_file: str) -> str:
    """``<source key minus extension>/<avatar_file>``: ``live/show.flv``, ``a.mp4`` -> ``live/show/a.mp4``."""
    stem = PurePosixPath(source_key)
    return f"{stem.with_suffix('').as_posix() if stem.suffix else stem.as_posix()}/{avatar_file}"


def avatar_file_name(output_name: str, recording_stem: str) -> str:
    """The avatar part of a render's ``<recording>__<avatar>.mp4`` name (``<avatar>.mp4``)."""
    head = f"{recording_stem}__"
    return output_name[len(head) :] if output_name.startswith(head) else output_name


def store_from_settings(url: str, settings: Settings) -> ObjectStore:
    """Open ``url`` with the S3 endpoint and credentials from ``settings`` (folders need none)."""
    return open_store(
        url,
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
    )


AVATAR_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".mp4", ".mov", ".mkv", ".webm")
"""What counts as an avatar template when a whole avatars location is used."""


def resolve_avatars(avatars: Sequence[str], store: ObjectStore | None, cache_dir: Path) -> list[Path]:
    """Local files for ``avatars``: each entry is a local path, or else a key in the avatars ``store``.

    With no entries, every image or video in ``store`` is used. Store objects are downloaded once into
    ``cache_dir/avatars/<etag>/`` and reused while their etag stays the same. Raises
    ``ConfigurationError`` when an entry is neither a file nor (with no store) fetchable, and the store's
    ``ObjectNotFoundError`` when a key is missing: a scan must not start with avatars it cannot render.
    """
    if not avatars:
        if store is None:
            raise ConfigurationError("no avatars given and no avatars location configured", subject="avatars")
        infos = [i for i in store.list() if is_media_key(i.key, AVATAR_SUFFIXES)]
        if not infos:
            raise ConfigurationError("the avatars location holds no images or videos", subject=_url(store))
        return [cached_avatar(store, info, cache_dir) for info in infos]
    paths: list[Path] = []
    for entry in avatars:
        local = Path(entry).expanduser()
        if local.is_file():
            paths.append(local.resolve())
        elif store is not None:
            paths.append(cached_avatar(store, store.stat(entry), cache_dir))
        else:
            raise ConfigurationError(
                "not a file, and no avatars location is configured to look it up in", subject=entry
            )
    return paths


def cached_avatar(store: ObjectStore, info: ObjectInfo, cache_dir: Path) -> Path:
    """The local copy of avatar ``info``, downloaded once per etag into ``cache_dir/avatars/``."""
    tag = "".join(c for c in info.etag if c.isalnum())[:32] or "noetag"
    dest = cache_dir / "avatars" / tag / work_name(info.key)
    if not (dest.is_file() and dest.stat().st_size == info.size):
        store.get_file(info.key, dest, expected=info)
    return dest


def _url(store: ObjectStore) -> str:
    try:
        return ingest_location(store).store_url
    except ConfigurationError:
        return repr(store)


__all__ = [
    "AVATAR_SUFFIXES",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_SETTLE_SECONDS",
    "DEFAULT_STALE_AFTER",
    "MEDIA_SUFFIXES",
    "IngestLocation",
    "ScanPlan",
    "avatar_file_name",
    "cached_avatar",
    "export_key",
    "fetch_and_hash",
    "fetch_to_work",
    "ingest_location",
    "is_media_key",
    "plan_scan",
    "resolve_avatars",
    "rejection",
    "store_from_settings",
    "work_name",
]
