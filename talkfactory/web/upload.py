"""Recordings dropped in the browser: checked like a file dropped in the ingest location, then put there.

The checks: the name is cut to its last path component and must be a key every store accepts
(``validate_key``: no ``..``, no control characters) with a recording's extension; the size is capped by
``TALKFACTORY_WEB_MAX_UPLOAD_MB``; the content must probe as media through the ffprobe input whitelist
(a text file named ``.flv`` is refused with the reason). Only then is it put into the ingest store, in
one atomic write (readers see the whole object or none), where the next scan finds it.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from talkfactory.errors import InvalidKeyError, PermanentError, TalkfactoryError
from talkfactory.infra.media.probe import probe
from talkfactory.infra.stores import ObjectStore, validate_key
from talkfactory.pipeline.ingest import MEDIA_SUFFIXES

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UploadRefusedError(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class UploadResult:
    filename: str
    """As the browser sent it."""
    key: str | None
    """Where it went in the ingest store; None when refused."""
    size: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def sanitize_name(filename: str, suffixes: Iterable[str] = MEDIA_SUFFIXES) -> str:
    """The key an uploaded file goes to: its last path component, NFC, without control characters.

    ``UploadRefusedError`` for names that leave nothing usable or are not a recording's type."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", filename))[-1]
    base = _UNSAFE.sub("", base).strip().lstrip(".")
    if not base:
        raise UploadRefusedError("the file name is empty once cleaned", subject=repr(filename)[:80])
    suffix = PurePosixPath(base).suffix.lower()
    if suffix not in tuple(suffixes):
        raise UploadRefusedError(
            f"not a recording type ({suffix or 'no extension'}); accepted: {', '.join(suffixes)}",
            subject=base,
        )
    try:
        return validate_key(base)
    except InvalidKeyError as exc:
        raise UploadRefusedError(exc.message, subject=base) from exc


def free_key(store: ObjectStore, key: str) -> str:
    """``key``, or ``stem-2.ext``, ``stem-3.ext``... when an object already has that name."""
    if not store.exists(key):
        return key
    p = PurePosixPath(key)
    for n in range(2, 1000):
        candidate = f"{p.stem}-{n}{p.suffix}"
        if not store.exists(candidate):
            return candidate
    raise UploadRefusedError("too many files with this name already", subject=key)


def spool(stream: BinaryIO, dest: Path, limit_bytes: int) -> int:
    """Copy ``stream`` to ``dest``, refusing past ``limit_bytes``; returns the size."""
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
            if size > limit_bytes:
                raise UploadRefusedError(
                    f"larger than the upload limit ({limit_bytes / 2**20:.0f} MiB, "
                    "TALKFACTORY_WEB_MAX_UPLOAD_MB)",
                    subject=dest.name,
                )
            out.write(chunk)
    if size == 0:
        raise UploadRefusedError("the file is empty", subject=dest.name)
    return size


def accept_upload(
    filename: str, stream: BinaryIO, store: ObjectStore, work_dir: Path, *, limit_bytes: int
) -> UploadResult:
    """Check one uploaded file and put it into ``store``; a refusal is returned with its reason."""
    tmp = work_dir / "uploads" / f"{uuid.uuid4().hex}{PurePosixPath(filename).suffix.lower()[:8]}"
    size = 0
    try:
        key = sanitize_name(filename)
        size = spool(stream, tmp, limit_bytes)
        info = probe(tmp)  # through the ffprobe input whitelist: only real media is accepted
        if info.is_image or info.audio is None:
            raise UploadRefusedError("a recording needs an audio track (speech)", subject=key)
        key = free_key(store, key)
        store.put_file(tmp, key)
        return UploadResult(filename, key, size)
    except TalkfactoryError as exc:
        return UploadResult(filename, None, size, exc.message)
    finally:
        tmp.unlink(missing_ok=True)
