"""``LocalObjectStore``: a folder behaving like a bucket (drop folders, exports on a share, tests).

Writes go to a hidden temporary file in the destination's own folder and are published with
``os.replace``, which is atomic on POSIX within one filesystem: a reader sees the old file or the new one.
Temporary files are named ``.<name>.tfpart-<hex>`` (``temp_sibling``) and never listed.

The etag is ``<mtime_ns hex>-<size hex>`` of the file, not a content hash: listing a drop folder of
multi-gigabyte recordings must not read them. It changes whenever the file is rewritten or grows;
content identity is the sha256 the scan records.

Nothing here deletes or moves a file except ``delete(key)`` on that key: ``put_file`` copies its source.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import stat as stat_mod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from talkfactory.errors import ObjectNotFoundError, StoreAccessError, StoreUnavailableError
from talkfactory.infra.stores.base import (
    DEFAULT_PRESIGN_EXPIRY,
    ObjectInfo,
    StrPath,
    check_expected,
    is_temp_name,
    temp_sibling,
    validate_key,
    validate_prefix,
)

_COPY_CHUNK = 1024 * 1024


def local_etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalObjectStore:
    """An ``ObjectStore`` over the folder ``root``; keys are ``/``-separated paths below it.

    Args:
        root: the folder. It is created on the first write if missing; listing a missing root raises
            ``ObjectNotFoundError`` (a misspelt drop folder must not look like an empty one).
        fsync: flush written files to disk before publishing them (durable exports); downloads into the
            work area are not fsynced, they can be fetched again.
    """

    def __init__(self, root: StrPath, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self._fsync = fsync

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # -- reading ---------------------------------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)  # now, not at the first next()
        if not self.root.is_dir():
            raise ObjectNotFoundError("the store's folder does not exist", subject=str(self.root))
        return self._iter_listing(prefix)

    def _iter_listing(self, prefix: str) -> Iterator[ObjectInfo]:
        # Only the folder the prefix points into needs walking: "a/b/c" lists under a/b, names starting "c".
        folder, _, _ = prefix.rpartition("/")
        start = self.root / folder if folder else self.root
        if not start.is_dir():
            return
        keys: list[str] = []
        for dirpath, _, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if is_temp_name(name):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()  # code-point order == UTF-8 byte order == S3 listing order
        for key in keys:
            try:
                # Not _path(): names found on disk are listed even when no key may have them
                # ("a\nb.flv"), so the caller can record an InvalidKeyError against that file.
                info = self._info(key, (self.root / key).stat())
            except FileNotFoundError:
                continue  # deleted since the walk: it is not there any more, like on S3
            if info is not None:
                yield info

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFoundError("no such object", subject=self.url(key)) from None
        except NotADirectoryError:
            raise ObjectNotFoundError("no such object", subject=self.url(key)) from None
        except PermissionError as exc:
            raise StoreAccessError(str(exc), subject=self.url(key)) from exc
        info = self._info(key, st)
        if info is None:
            raise ObjectNotFoundError("not an object (a folder)", subject=self.url(key))
        return info

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def get_file(self, key: str, dest: StrPath, *, expected: ObjectInfo | None = None) -> ObjectInfo:
        dest_path = Path(dest)
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        with self._open_file(key) as src:
            before = self._info(key, os.fstat(src.fileno()))
            if before is None:
                raise ObjectNotFoundError("not an object (a folder)", subject=self.url(key))
            check_expected(before, expected, self.url(key))
            tmp = temp_sibling(dest_path)
            try:
                with open(tmp, "wb") as out:
                    copied = _copy(src, out)
                after = self._info(key, os.fstat(src.fileno()))
                if after != before or copied != before.size:
                    # Still being written (a drop folder mid-upload): try again once it has settled.
                    raise StoreUnavailableError(
                        f"changed while being read ({before.size} bytes listed, {copied} read)",
                        subject=self.url(key),
                    )
                os.replace(tmp, dest_path)
            finally:
                tmp.unlink(missing_ok=True)
        return before

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        with self._open_file(key) as stream:
            yield stream

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, length: int) -> Iterator[BinaryIO]:
        with self._open_file(key) as stream:
            stream.seek(start)
            # Bounded, so a reader never gets past the range it asked for.
            yield io.BufferedReader(_Bounded(stream, length))

    # -- writing ---------------------------------------------------------------------------------------

    def put_file(self, src: StrPath, key: str, *, content_type: str | None = None) -> ObjectInfo:
        validate_key(key)
        try:
            source = open(src, "rb")
        except FileNotFoundError:
            raise ObjectNotFoundError("the file to upload does not exist", subject=str(src)) from None
        with source:
            return self.put_stream(source, key, content_type=content_type)

    def put_stream(
        self, stream: BinaryIO, key: str, *, size: int = -1, content_type: str | None = None
    ) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(path)
        try:
            with open(tmp, "wb") as out:
                copied = _copy(stream, out)
                if size >= 0 and copied != size:
                    raise StoreUnavailableError(
                        f"the stream gave {copied} bytes, {size} were announced", subject=self.url(key)
                    )
                if self._fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return self.stat(key)

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        validate_key(dst_key)
        with self._open_file(src_key) as src:
            return self.put_stream(src, dst_key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            raise ObjectNotFoundError("not an object (a folder)", subject=self.url(key))
        path.unlink(missing_ok=True)

    # -- naming ----------------------------------------------------------------------------------------

    def presigned_get(self, key: str, expires: timedelta = DEFAULT_PRESIGN_EXPIRY) -> str:
        """The ``file://`` URL; a folder has no expiring links, so ``expires`` is ignored."""
        return self.url(key)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def path(self, key: str) -> Path:
        """The file behind ``key`` (for tools that need a path, such as ffmpeg reading in place)."""
        return self._path(key)

    # -- helpers ---------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo | None:
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=local_etag(st),
            last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
            content_type=mimetypes.guess_type(key)[0],
        )

    def _open_file(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError("no such object", subject=self.url(key)) from None
        except PermissionError as exc:
            raise StoreAccessError(str(exc), subject=self.url(key)) from exc


class _Bounded(io.RawIOBase):
    """At most ``length`` bytes of ``stream`` from where it stands."""

    def __init__(self, stream: BinaryIO, length: int) -> None:
        self._stream, self._left = stream, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        data = self._stream.read(len(view))
        n = len(data)
        view[:n] = data
        self._left -= n
        return n


def _copy(src: BinaryIO, dst: BinaryIO) -> int:
    total = 0
    while chunk := src.read(_COPY_CHUNK):
        dst.write(chunk)
        total += len(chunk)
    return total


__all__ = ["LocalObjectStore", "local_etag"]
