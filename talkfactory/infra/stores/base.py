"""The object-store port: one small protocol, a value type, and the key rules every store enforces.

Two adapters implement it, ``LocalObjectStore`` (a folder) and ``S3ObjectStore`` (MinIO, SeaweedFS,
AWS through the ``minio`` SDK); ``open_store(url, ...)`` picks one from a URL. Flows and pipeline steps
only ever see an ``ObjectStore``, so tests swap a temporary folder for the bucket.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from os import PathLike
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from talkfactory.errors import InvalidKeyError, ObjectNotFoundError

MAX_KEY_BYTES = 1024
"""S3's limit on a whole key (prefix included), in UTF-8 bytes; the local store keeps the same rule."""

DEFAULT_PRESIGN_EXPIRY = timedelta(hours=1)

StrPath = str | PathLike[str]

_TEMP_NAME = re.compile(r"^\..+\.tfpart-[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a stat says about one object.

    ``etag`` is an opaque change token: equal etags mean the same bytes. On S3 it is the server's ETag
    without quotes (the MD5 for single-part uploads, ``md5-of-md5s-N`` for multipart); on a local folder
    it is derived from the modification time and size (see ``LocalObjectStore``), not from the content.
    """

    key: str
    """Relative to the store's prefix (or root folder), ``/``-separated."""
    size: int
    etag: str
    last_modified: datetime
    """Timezone-aware (UTC)."""
    content_type: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-once-written objects under ``/``-separated keys.

    Every method validates its keys with ``validate_key`` first and raises ``InvalidKeyError`` (a
    ``StorePermanentError``) for traversal (``../x``), dot or empty segments, absolute keys, control
    characters and keys over 1024 bytes. Failures come out of the ``talkfactory.errors`` tree, so callers
    decide on retries by type, never by parsing messages:

    * ``ObjectNotFoundError`` (also ``FileNotFoundError``): no such key, no such bucket or folder, or the
      object changed since it was listed (the listed version is gone).
    * ``StoreAccessError`` (also ``PermissionError``): wrong credentials, missing permission.
    * ``StoreUnavailableError`` (a ``TransientError``, also ``ConnectionError``): the endpoint could not
      be reached or answered 5xx/SlowDown, after the store's own bounded retries.

    Writes are atomic for readers: during ``put_file`` a concurrent ``stat``/``get_file`` of the key sees
    the previous object or nothing, never a prefix of the new bytes. Nothing is buffered whole in memory:
    uploads go in parts, downloads stream to a temporary file beside the destination that is renamed into
    place only once its size has been checked.

    Example, moving a recording from the ingest bucket to the work area and a result back::

        from talkfactory.infra.stores import open_store

        ingest = open_store("s3://recordings/live/", endpoint="127.0.0.1:8333",
                            access_key="...", secret_key="...")
        exports = open_store("/srv/exports")           # a plain folder works the same way

        for info in ingest.list("2024-06-"):           # keys relative to the store's prefix
            local = work_dir / info.key
            ingest.get_file(info.key, local, expected=info)   # ObjectNotFoundError if it changed
            ...
            out = exports.put_file(result_mp4, f"{info.key}.mp4", content_type="video/mp4")
            lineage.record(source=ingest.url(info.key), output=exports.url(out.key))

        with ingest.open("2024-06-01/a.flv") as stream:      # a context-managed binary stream
            header = stream.read(9)

        link = exports.presigned_get("2024-06-01/a.mp4", timedelta(hours=6))

    ``url(key)`` is the stable, credential-free name of an object for lineage (``s3://bucket/prefix/key``
    or ``file:///abs/path``); ``presigned_get`` is a time-limited link for people and players.
    """

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a plain string prefix, not only folders), in key order.

        The whole subtree is listed (no delimiter). The iterator pages lazily; a transient failure in the
        middle resumes after the last key yielded, so nothing is repeated or skipped.
        """
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag and modification time of ``key``; ``ObjectNotFoundError`` when it is absent."""
        ...

    def exists(self, key: str) -> bool:
        """True when ``key`` is an object (a "folder" prefix is not)."""
        ...

    def get_file(self, key: str, dest: StrPath, *, expected: ObjectInfo | None = None) -> ObjectInfo:
        """Download ``key`` to ``dest`` atomically; returns what was downloaded.

        The bytes stream to a temporary file beside ``dest``; it replaces ``dest`` only when the byte count
        matches the object's size (and, if given, ``expected``'s size and etag: pass the listing entry so an
        object replaced since the listing raises ``ObjectNotFoundError`` instead of handing back other
        bytes). Parent folders are created. A truncated transfer is retried.
        """
        ...

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A readable binary stream over ``key``, closed (and its connection released) on exit."""
        ...

    def open_range(self, key: str, start: int, length: int) -> AbstractContextManager[BinaryIO]:
        """Like ``open``, over ``length`` bytes from byte ``start`` (an HTTP range request's bytes)."""
        ...

    def put_file(self, src: StrPath, key: str, *, content_type: str | None = None) -> ObjectInfo:
        """Upload the file ``src`` to ``key`` (replacing it), streaming in parts; ``src`` is left alone."""
        ...

    def put_stream(
        self, stream: BinaryIO, key: str, *, size: int = -1, content_type: str | None = None
    ) -> ObjectInfo:
        """Upload from a readable binary stream; ``size=-1`` when unknown.

        Retried after a transient failure only when the stream is seekable (it is rewound to where it
        started); a one-shot stream fails with the first ``StoreUnavailableError``.
        """
        ...

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Server-side copy within the store (no bytes through this process on S3)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``. Removing an absent key is not an error (S3 semantics, so retries are safe)."""
        ...

    def presigned_get(self, key: str, expires: timedelta = DEFAULT_PRESIGN_EXPIRY) -> str:
        """A URL that fetches ``key`` without credentials until ``expires`` (``file://`` for folders)."""
        ...

    def url(self, key: str) -> str:
        """The object's stable name for lineage and messages; never contains credentials."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if every store can use it safely; raise ``InvalidKeyError`` naming it.

    Rejected: empty keys, absolute keys (leading ``/``), empty segments (``a//b``, trailing ``/``), ``.`` and
    ``..`` segments, control characters (newline, tab, NUL, DEL, C1), keys that are not valid UTF-8
    (lone surrogates) and keys over 1024 bytes. Anything else (spaces, unicode, ``:``) is allowed.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"a key must be a str, not {type(key).__name__}", subject=repr(key)[:80])
    _check_text(key, what="key")
    if key == "":
        raise InvalidKeyError("the key is empty", subject="''")
    if key.startswith("/"):
        raise InvalidKeyError("the key is absolute (starts with '/')", subject=describe_key(key))
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKeyError(
                "the key has an empty segment ('//' or a trailing '/')", subject=describe_key(key)
            )
        if segment in (".", ".."):
            raise InvalidKeyError(f"the key has a {segment!r} segment", subject=describe_key(key))
    return key


def validate_prefix(prefix: str) -> str:
    """Return a listing prefix unchanged if it is safe: like a key, but may be empty or end with ``/``."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(
            f"a prefix must be a str, not {type(prefix).__name__}", subject=repr(prefix)[:80]
        )
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def normalize_store_prefix(prefix: str) -> str:
    """A store's own prefix as ``a/b/`` (or ``""``): surrounding slashes trimmed, then validated."""
    trimmed = prefix.strip("/")
    if not trimmed:
        return ""
    validate_key(trimmed)
    return trimmed + "/"


def check_expected(actual: ObjectInfo, expected: ObjectInfo | None, subject: str) -> None:
    """Raise ``ObjectNotFoundError`` when ``actual`` is no longer the version ``expected`` (a listing) saw.

    The listed version is gone for good, so this is permanent for that listing entry; the next scan sees
    the new version as a new object.
    """
    if expected is None:
        return
    if actual.size != expected.size or actual.etag != expected.etag:
        raise ObjectNotFoundError(
            f"changed since it was listed (size {expected.size} -> {actual.size}, "
            f"etag {expected.etag} -> {actual.etag})",
            subject=subject,
        )


def temp_sibling(path: Path) -> Path:
    """A unique hidden name in ``path``'s folder, so the final ``os.replace`` stays on one filesystem.

    The name part is cut so the whole stays within 255 bytes: a legal final name always gets a
    legal temporary one.
    """
    tail = f".tfpart-{uuid.uuid4().hex}"
    head = path.name.encode("utf-8")[: 255 - 1 - len(tail)].decode("utf-8", errors="ignore")
    return path.with_name(f".{head}{tail}")


def is_temp_name(name: str) -> bool:
    """True for names made by ``temp_sibling``: half-written files that listings skip."""
    return _TEMP_NAME.match(name) is not None


def describe_key(key: str) -> str:
    """``repr(key)``, shortened for keys too long to read, for error subjects and log lines."""
    shown = repr(key)
    if len(shown) <= 120:
        return shown
    return f"{shown[:100]}... ({len(key.encode('utf-8', 'surrogatepass'))} bytes)"


def _check_text(key: str, *, what: str) -> None:
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(f"the {what} is not valid UTF-8", subject=describe_key(key)) from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"the {what} is {len(encoded)} bytes; at most {MAX_KEY_BYTES} are allowed",
            subject=describe_key(key),
        )
    for ch in key:
        if unicodedata.category(ch) == "Cc":
            raise InvalidKeyError(
                f"the {what} contains the control character {ch!r}", subject=describe_key(key)
            )


__all__ = [
    "DEFAULT_PRESIGN_EXPIRY",
    "MAX_KEY_BYTES",
    "ObjectInfo",
    "ObjectStore",
    "StrPath",
    "check_expected",
    "describe_key",
    "is_temp_name",
    "normalize_store_prefix",
    "temp_sibling",
    "validate_key",
    "validate_prefix",
]
