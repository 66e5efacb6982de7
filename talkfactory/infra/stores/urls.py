"""Store URLs: ``s3://bucket/prefix``, ``file:///abs/path`` or a plain path, to an ``ObjectStore``.

The URL says *where*; the endpoint and credentials come separately (settings, passed in as arguments), so
a URL can be logged and stored in lineage as is. ``parse_store_url`` is pure; ``open_store`` builds the
store and touches no network until the store is used.

Example::

    open_store("s3://recordings/live", endpoint="127.0.0.1:8333", access_key="k", secret_key="s")
    open_store("file:///srv/drop")          # same as open_store("/srv/drop")
    open_store("~/talkfactory/exports")     # ~ is expanded; relative paths are relative to the cwd
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

from minio.helpers import check_bucket_name

from talkfactory.errors import ConfigurationError, InvalidKeyError
from talkfactory.infra.retry import RetryPolicy
from talkfactory.infra.stores.base import ObjectStore, normalize_store_prefix
from talkfactory.infra.stores.local import LocalObjectStore
from talkfactory.infra.stores.s3 import DEFAULT_PART_SIZE, S3ObjectStore


class _Secret(Protocol):
    """pydantic's ``SecretStr`` and anything else that hides its value until asked."""

    def get_secret_value(self) -> str: ...


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A parsed store URL."""

    scheme: Literal["s3", "file"]
    bucket: str | None = None
    """S3 only."""
    prefix: str = ""
    """S3 only: ``""`` or ``"a/b/"``."""
    path: Path | None = None
    """Local only: the folder, ``~`` expanded, possibly relative."""

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return str(self.path)


def parse_store_url(url: str) -> StoreLocation:
    """Parse a store URL or path; ``ConfigurationError`` (naming the URL) for anything unusable.

    Refused: empty strings, credentials in the URL (``s3://key:secret@bucket``), queries and fragments,
    invalid bucket names, ``.``/``..``/empty segments in an S3 prefix, ``file://`` URLs naming a remote
    host, and any other scheme.
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ConfigurationError("the store URL is empty", subject=repr(url))
    lowered = text.lower()
    if lowered.startswith("s3://"):
        return _parse_s3(text)
    if lowered.startswith("file:"):
        return _parse_file(text)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigurationError(
            f"unsupported store scheme {scheme!r}; use s3://bucket/prefix, file:///path or a path",
            subject=text,
        )
    return StoreLocation(scheme="file", path=Path(text).expanduser())


def open_store(
    url: str,
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | _Secret | None = None,
    secure: bool = False,
    region: str | None = None,
    retry: RetryPolicy | None = None,
    part_size: int = DEFAULT_PART_SIZE,
) -> ObjectStore:
    """The store ``url`` names; S3 URLs need ``endpoint`` (and usually the two keys).

    Args:
        url: ``s3://bucket[/prefix]``, ``file:///path`` or a path.
        endpoint: ``host:port`` or ``http(s)://host:port`` (``TALKFACTORY_S3_ENDPOINT``).
        access_key, secret_key: ``TALKFACTORY_S3_ACCESS_KEY`` / ``_SECRET_KEY``; a ``SecretStr`` is fine.
        secure: HTTPS when the endpoint has no scheme (``TALKFACTORY_S3_SECURE``).
        region, retry, part_size: passed to ``S3ObjectStore``.
    """
    location = parse_store_url(url)
    if location.scheme == "file":
        assert location.path is not None
        return LocalObjectStore(location.path)
    if not endpoint:
        raise ConfigurationError("an s3:// store needs an endpoint (TALKFACTORY_S3_ENDPOINT)", subject=url)
    secret = (
        secret_key if secret_key is None or isinstance(secret_key, str) else secret_key.get_secret_value()
    )
    assert location.bucket is not None
    return S3ObjectStore(
        endpoint,
        access_key or None,
        secret or None,
        location.bucket,
        location.prefix,
        secure=secure,
        region=region,
        retry=retry,
        part_size=part_size,
    )


def _parse_s3(text: str) -> StoreLocation:
    parts = urlsplit(text)
    if "@" in parts.netloc:
        # Never echo the URL: the part before '@' is a secret.
        raise ConfigurationError(
            "credentials in a store URL are not allowed; use the access/secret key settings",
            subject="s3://***@" + parts.netloc.rsplit("@", 1)[1],
        )
    if parts.query or parts.fragment:
        raise ConfigurationError("a store URL may not have a query or fragment", subject=text)
    bucket = parts.netloc
    try:
        check_bucket_name(bucket, strict=True)
    except ValueError as exc:
        raise ConfigurationError(f"bad bucket name {bucket!r}: {exc}", subject=text) from None
    try:
        prefix = normalize_store_prefix(parts.path)
    except InvalidKeyError as exc:
        raise ConfigurationError(f"bad prefix: {exc.message}", subject=text) from None
    return StoreLocation(scheme="s3", bucket=bucket, prefix=prefix)


def _parse_file(text: str) -> StoreLocation:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(f"file URLs must be local, not on host {parts.netloc!r}", subject=text)
    if parts.query or parts.fragment:
        raise ConfigurationError("a store URL may not have a query or fragment", subject=text)
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigurationError("a file URL needs an absolute path (file:///abs/path)", subject=text)
    return StoreLocation(scheme="file", path=Path(path))


__all__ = ["StoreLocation", "open_store", "parse_store_url"]
