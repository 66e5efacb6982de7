"""``S3ObjectStore``: MinIO, SeaweedFS or AWS S3 through the ``minio`` SDK, with bounded waits.

Every request has a connect and a read timeout, urllib3's own retries are off, and retries happen in one
place (``talkfactory.infra.retry``), on errors this module has already sorted into transient
(``StoreUnavailableError``: refused/reset connections, timeouts, 5xx, SlowDown) and permanent
(``ObjectNotFoundError``, ``StoreAccessError``, other ``StorePermanentError``). So an unreachable endpoint
fails within the retry policy's ``max_seconds`` plus one connect timeout instead of hanging.

Publishing. ``put_file``/``put_stream`` upload straight to the final key, and that is the atomic publish:
S3 makes an object visible only when its PutObject or CompleteMultipartUpload finishes, so a reader sees
the previous object or nothing, never part of the new one (measured on SeaweedFS 4.48 with a slow single
PUT and a multipart upload, and asserted by ``tests/infra/stores``). A temporary key plus server-side
copy would add nothing to that guarantee, but it would write every byte twice, and temporary objects
would show up in listings of the same prefix. A failed attempt leaves no object. minio-py aborts its
multipart upload on error, and parts that outlive an abort are not objects: listings never show them,
and bucket lifecycle rules reap them. A retry uploads from the start to the same key, so a restart in
the middle of an upload still ends with exactly one object.

Credentials go to the SDK's signer and nowhere else: not into ``repr``, ``url()``, log lines or errors.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.datatypes import Object
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import check_bucket_name

from talkfactory.errors import (
    ConfigurationError,
    ObjectNotFoundError,
    StoreAccessError,
    StorePermanentError,
    StoreUnavailableError,
    TalkfactoryError,
)
from talkfactory.infra.retry import NO_RETRY, RetryPolicy
from talkfactory.infra.stores.base import (
    DEFAULT_PRESIGN_EXPIRY,
    MAX_KEY_BYTES,
    ObjectInfo,
    StrPath,
    check_expected,
    normalize_store_prefix,
    temp_sibling,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 5 * MIB
"""S3's minimum, and the SDK's own default. Memory per upload is about (parallel_uploads + 2) parts. Larger
parts were no faster against SeaweedFS (which stores 4 MiB chunks anyway) but cost more memory; see
bench/bench_store.py. Files too big for 10,000 parts of this size get larger parts automatically."""
MAX_PARTS = 10_000
_DOWNLOAD_CHUNK = 1 * MIB

NOT_FOUND_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "NoSuchUpload", "NoSuchVersion", "ResourceNotFound"}
)
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidToken",
        "ExpiredToken",
        "InvalidSecurity",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeTooSkewed",  # clock steps after NTP sync; a later signature usually passes
        "OperationAborted",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
    }
)


def translate_error(exc: BaseException, subject: str) -> BaseException:
    """Sort an SDK/transport exception into the talkfactory tree; unknown ones come back unchanged.

    Pure, so the table is tested without a server. Messages carry the S3 code and text, never the
    request's headers (which hold the access key and signature).
    """
    if isinstance(exc, TalkfactoryError):
        return exc
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        text = f"{exc.code}: {exc.message}"
        if exc.code in NOT_FOUND_CODES:
            return ObjectNotFoundError(text, subject=subject)
        if exc.code in ACCESS_CODES:
            return StoreAccessError(text, subject=subject)
        if exc.code in TRANSIENT_CODES or status >= 500 or status == 429:
            return StoreUnavailableError(text, subject=subject)
        return StorePermanentError(text, subject=subject)
    if isinstance(exc, ServerError | InvalidResponseError):
        status = exc.status_code if isinstance(exc, ServerError) else int(getattr(exc, "_code", 0) or 0)
        text = f"HTTP {status} from the server"
        if status >= 500 or status == 429:
            return StoreUnavailableError(text, subject=subject)
        if status == 404:
            return ObjectNotFoundError(text, subject=subject)
        if status in (401, 403):
            return StoreAccessError(text, subject=subject)
        return StorePermanentError(text, subject=subject)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return translate_error(exc.reason, subject)
    if isinstance(exc, urllib3.exceptions.SSLError | ssl.SSLError):
        return StorePermanentError(f"TLS failed: {exc}", subject=subject)
    if isinstance(
        exc, urllib3.exceptions.HTTPError | http.client.HTTPException | ConnectionError | TimeoutError
    ):
        return StoreUnavailableError(f"{type(exc).__name__}: {_short(exc)}", subject=subject)
    return exc


def part_size_for(size: int, part_size: int) -> int:
    """``part_size``, or the smallest whole-MiB size that fits ``size`` bytes into S3's 10,000 parts.

    An unknown size (``-1``) keeps ``part_size``, which caps a streamed upload at 10,000 parts of it.
    """
    if size <= part_size * MAX_PARTS:
        return part_size
    return -(-size // (MAX_PARTS * MIB)) * MIB


def parse_endpoint(endpoint: str, secure: bool = False) -> tuple[str, bool]:
    """``"host:port"`` or ``"http(s)://host:port"`` → (``host:port``, secure). A scheme overrides ``secure``.

    Credentials, paths and queries are refused (``ConfigurationError``): the endpoint is logged and
    recorded, so it must never carry a secret, and the SDK cannot use a path.
    """
    text = endpoint.strip()
    if not text:
        raise ConfigurationError("the S3 endpoint is empty", subject="s3 endpoint")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise ConfigurationError(f"unsupported scheme {parts.scheme!r}", subject="s3 endpoint")
        secure = parts.scheme == "https"
        if parts.username or parts.password:
            raise ConfigurationError(
                "credentials in the endpoint URL; use the access/secret key settings", subject="s3 endpoint"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError(
                f"the endpoint may not have a path or query: {text!r}", subject="s3 endpoint"
            )
        netloc = parts.netloc
    else:
        netloc = text
    if not netloc or "@" in netloc or "/" in netloc or any(c.isspace() for c in netloc):
        raise ConfigurationError(f"not a host[:port]: {netloc!r}", subject="s3 endpoint")
    return netloc, secure


class S3ObjectStore:
    """An ``ObjectStore`` over ``bucket`` (optionally below ``prefix``) on an S3-compatible endpoint.

    Args:
        endpoint: ``host:port`` or ``http(s)://host:port``.
        access_key, secret_key: static credentials; both ``None`` for anonymous access.
        bucket: the bucket; it must exist (a missing bucket is ``ObjectNotFoundError``, never created).
        prefix: keys are relative to it (``"live/"`` and ``"live"`` are the same).
        secure: HTTPS; a scheme in ``endpoint`` wins.
        region: skips the GetBucketLocation request when given.
        part_size: multipart part size in bytes (at least 5 MiB); files up to one part go in a single PUT,
            streams of unknown length can be at most 10,000 parts long.
        parallel_uploads: parts in flight at once.
        connect_timeout, read_timeout: seconds, per connection attempt and per socket read.
        retry: bounds of the retry loop around each request.
        list_batch: listing entries fetched per retried unit (at most 1000 come in one S3 page).
        http_client: a ready urllib3 ``PoolManager`` (tests, proxies); replaces the timeouts above.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        prefix: str = "",
        *,
        secure: bool = False,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        parallel_uploads: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        list_batch: int = 1000,
        http_client: urllib3.PoolManager | None = None,
    ) -> None:
        netloc, secure = parse_endpoint(endpoint, secure)
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise ConfigurationError(str(exc), subject=f"bucket {bucket!r}") from None
        if part_size < 5 * MIB:
            raise ConfigurationError(f"part_size {part_size} is below S3's 5 MiB minimum", subject="s3 store")
        if (access_key is None) != (secret_key is None):
            raise ConfigurationError(
                "give both the access key and the secret key, or neither", subject="s3 store"
            )
        self.endpoint = netloc
        self.secure = secure
        self.bucket = bucket
        self.prefix = normalize_store_prefix(prefix)
        self.part_size = part_size
        self.parallel_uploads = max(1, parallel_uploads)
        self.retry = retry or RetryPolicy()
        self.list_batch = max(1, list_batch)
        if http_client is None:
            http_client = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                # Each parallel part upload holds a connection; more than that just idles.
                maxsize=max(10, self.parallel_uploads + 2),
                # Off: one retry loop (ours) with known bounds, not urllib3's hidden one inside it.
                retries=False,
                cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
                ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            )
        self._client = Minio(
            netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"S3ObjectStore({scheme}://{self.endpoint}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- reading ---------------------------------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)  # now, not at the first next()
        return self._iter_listing(self.prefix + prefix)

    def _iter_listing(self, full_prefix: str) -> Iterator[ObjectInfo]:
        after: str | None = None
        while True:
            batch = self._list_batch(full_prefix, after)
            for obj in batch:
                info = self._info_from_listing(obj)
                if info is not None:
                    yield info
            if len(batch) < self.list_batch:
                return
            after = batch[-1].object_name

    def _list_batch(self, full_prefix: str, after: str | None) -> Sequence[Object]:
        """Up to ``list_batch`` entries after the key ``after``; one retried unit of a listing.

        A fresh listing that starts after the last key seen is what makes a retry in the middle of a long
        listing resume instead of starting over (a continuation token may not survive a server restart).
        """

        def attempt() -> Sequence[Object]:
            entries = self._client.list_objects(
                self.bucket, prefix=full_prefix, recursive=True, start_after=after
            )
            return [*islice(entries, self.list_batch)]

        return self._call("list", f"s3://{self.bucket}/{full_prefix}", attempt)

    def stat(self, key: str) -> ObjectInfo:
        full = self._full(key)

        def attempt() -> ObjectInfo:
            obj = self._client.stat_object(self.bucket, full)
            return ObjectInfo(
                key=key,
                size=int(obj.size or 0),
                etag=_etag(obj.etag),
                last_modified=obj.last_modified or datetime.now(UTC),
                content_type=obj.content_type,
            )

        return self._call("stat", self.url(key), attempt)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def get_file(self, key: str, dest: StrPath, *, expected: ObjectInfo | None = None) -> ObjectInfo:
        full = self._full(key)
        subject = self.url(key)
        dest_path = Path(dest)
        dest_path.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> ObjectInfo:
            tmp = temp_sibling(dest_path)
            try:
                response = self._client.get_object(self.bucket, full)
                try:
                    info = _info_from_headers(key, response.headers)
                    check_expected(info, expected, subject)
                    received = 0
                    with open(tmp, "wb") as out:
                        for chunk in response.stream(_DOWNLOAD_CHUNK):
                            out.write(chunk)
                            received += len(chunk)
                finally:
                    response.close()
                    response.release_conn()
                if received != info.size:
                    raise StoreUnavailableError(
                        f"download ended after {received} of {info.size} bytes", subject=subject
                    )
                os.replace(tmp, dest_path)
                return info
            finally:
                tmp.unlink(missing_ok=True)

        return self._call("get_file", subject, attempt)

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        full = self._full(key)
        subject = self.url(key)
        response = self._call("open", subject, lambda: self._client.get_object(self.bucket, full))
        try:
            yield io.BufferedReader(_ResponseReader(response, subject), buffer_size=_DOWNLOAD_CHUNK)
        finally:
            response.close()
            response.release_conn()

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, length: int) -> Iterator[BinaryIO]:
        full = self._full(key)
        subject = self.url(key)
        response = self._call(
            "open_range",
            subject,
            lambda: self._client.get_object(self.bucket, full, offset=start, length=length),
        )
        try:
            yield io.BufferedReader(_ResponseReader(response, subject), buffer_size=_DOWNLOAD_CHUNK)
        finally:
            response.close()
            response.release_conn()

    # -- writing ---------------------------------------------------------------------------------------

    def put_file(self, src: StrPath, key: str, *, content_type: str | None = None) -> ObjectInfo:
        full = self._full(key)
        subject = self.url(key)
        if not os.path.isfile(src):
            raise ObjectNotFoundError("the file to upload does not exist", subject=str(src))

        def attempt() -> int:
            # Reopened on every attempt: a retry starts from byte 0 with the file's current size.
            size = os.stat(src).st_size
            with open(src, "rb") as stream:
                self._put(full, stream, size, content_type)
            return size

        size = self._call("put_file", subject, attempt)
        return self._check_uploaded(key, size)

    def put_stream(
        self, stream: BinaryIO, key: str, *, size: int = -1, content_type: str | None = None
    ) -> ObjectInfo:
        full = self._full(key)
        subject = self.url(key)
        start = stream.tell() if _seekable(stream) else None

        def attempt() -> int:
            if start is not None:
                stream.seek(start)
            counted = _CountingReader(stream)
            self._put(full, cast(BinaryIO, counted), size, content_type)
            return counted.count

        # A one-shot stream cannot be replayed, so it gets exactly one attempt.
        retry = self.retry if start is not None else NO_RETRY
        sent = self._call("put_stream", subject, attempt, retry=retry)
        if size >= 0 and sent != size:
            raise StoreUnavailableError(f"sent {sent} bytes, {size} were announced", subject=subject)
        return self._check_uploaded(key, sent)

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        src_full = self._full(src_key)
        dst_full = self._full(dst_key)
        # Server-side: CopyObject, or a multipart copy above 5 GiB; retried from scratch like a PUT.
        self._call(
            "copy",
            self.url(dst_key),
            lambda: self._client.copy_object(self.bucket, dst_full, CopySource(self.bucket, src_full)),
        )
        return self.stat(dst_key)

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._call("delete", self.url(key), lambda: self._client.remove_object(self.bucket, full))

    # -- naming ----------------------------------------------------------------------------------------

    def presigned_get(self, key: str, expires: timedelta = DEFAULT_PRESIGN_EXPIRY) -> str:
        full = self._full(key)
        return self._call(
            "presigned_get",
            self.url(key),
            lambda: self._client.presigned_get_object(self.bucket, full, expires=expires),
        )

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    # -- helpers ---------------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        full = self.prefix + validate_key(key)
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            validate_key(full)  # raises InvalidKeyError with the length in the message
        return full

    def _call(self, op: str, subject: str, fn: Callable[[], T], *, retry: RetryPolicy | None = None) -> T:
        """Run ``fn`` under the retry policy, with SDK errors translated (retries key off the result)."""

        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                translated = translate_error(exc, subject)
                if translated is exc:
                    raise
                raise translated from exc

        attempt.__qualname__ = f"S3ObjectStore.{op}"  # what the retry log lines call it
        return (retry or self.retry).decorator()(attempt)()

    def _put(self, full: str, stream: BinaryIO, size: int, content_type: str | None) -> None:
        self._client.put_object(
            self.bucket,
            full,
            stream,
            size,
            content_type=content_type or "application/octet-stream",
            part_size=part_size_for(size, self.part_size),
            num_parallel_uploads=self.parallel_uploads,
        )

    def _check_uploaded(self, key: str, size: int) -> ObjectInfo:
        info = self.stat(key)
        if info.size != size:
            # Someone else wrote the key in between, or the server lost bytes: do not report success.
            raise StoreUnavailableError(
                f"uploaded {size} bytes but the object has {info.size}", subject=self.url(key)
            )
        return info

    def _info_from_listing(self, obj: Object) -> ObjectInfo | None:
        name = obj.object_name
        if obj.is_dir or name is None or not name.startswith(self.prefix):
            return None
        # Keys are yielded as stored, even unusable ones ("a//b", "x\ny"): the caller records an
        # InvalidKeyError against that object when it tries to fetch it, and goes on with the rest.
        return ObjectInfo(
            key=name[len(self.prefix) :],
            size=int(obj.size or 0),
            etag=_etag(obj.etag),
            last_modified=obj.last_modified or datetime.now(UTC),
            content_type=obj.content_type,
        )


class _CountingReader(io.RawIOBase):
    """Counts what the SDK reads, to check the stored size against what was actually sent."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read(-1 if size is None else size)
        self.count += len(data)
        return data


class _ResponseReader(io.RawIOBase):
    """A urllib3 response as a raw stream whose transport errors are ``StoreUnavailableError``."""

    def __init__(self, response: Any, subject: str) -> None:
        self._response = response
        self._subject = subject

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._response.read(len(buffer))
        except Exception as exc:
            translated = translate_error(exc, self._subject)
            if translated is exc:
                raise
            raise translated from exc
        n = len(data)
        buffer[:n] = data
        return n


def _info_from_headers(key: str, headers: Any) -> ObjectInfo:
    modified = headers.get("last-modified")
    return ObjectInfo(
        key=key,
        size=int(headers.get("content-length", 0)),
        etag=_etag(headers.get("etag")),
        last_modified=parsedate_to_datetime(modified) if modified else datetime.now(UTC),
        content_type=headers.get("content-type"),
    )


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


__all__ = ["DEFAULT_PART_SIZE", "S3ObjectStore", "parse_endpoint", "part_size_for", "translate_error"]
