"""Store URL and endpoint parsing (pure), part sizing, and open_store's choice of adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from talkfactory.errors import ConfigurationError
from talkfactory.infra.stores import (
    LocalObjectStore,
    S3ObjectStore,
    StoreLocation,
    open_store,
    parse_store_url,
)
from talkfactory.infra.stores.s3 import parse_endpoint, part_size_for


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://recordings", "recordings", ""),
        ("s3://recordings/", "recordings", ""),
        ("s3://recordings/live", "recordings", "live/"),
        ("s3://recordings/live/rooms/", "recordings", "live/rooms/"),
        ("  S3://exports/out  ", "exports", "out/"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str) -> None:
    assert parse_store_url(url) == StoreLocation(scheme="s3", bucket=bucket, prefix=prefix)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:///srv/drop", Path("/srv/drop")),
        ("file://localhost/srv/drop", Path("/srv/drop")),
        ("file:/srv/drop", Path("/srv/drop")),
        ("file:///srv/with%20space", Path("/srv/with space")),
        ("/srv/drop", Path("/srv/drop")),
        ("relative/dir", Path("relative/dir")),
        ("~/exports", Path("~/exports").expanduser()),
    ],
)
def test_local_urls(url: str, path: Path) -> None:
    assert parse_store_url(url) == StoreLocation(scheme="file", path=path)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("gs://bucket/x", "unsupported"),
        ("http://host/bucket", "unsupported"),
        ("s3://ab", "bucket"),
        ("s3://Bad_Bucket", "bucket"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/a//b", "prefix"),
        ("s3://bucket/x?versionId=1", "query"),
        ("file://otherhost/srv", "local"),
        ("file:relative", "absolute"),
    ],
)
def test_bad_urls(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        parse_store_url(url)


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_store_url("s3://AKIAXXX:topsecret@bucket/prefix")
    assert "topsecret" not in str(info.value) and "AKIAXXX" not in str(info.value)


def test_open_store_picks_the_adapter(tmp_path: Path) -> None:
    local = open_store(str(tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path
    assert isinstance(open_store(tmp_path.as_uri()), LocalObjectStore)
    s3 = open_store(
        "s3://recordings/live",
        endpoint="http://127.0.0.1:8333",
        access_key="ak",
        secret_key=SecretStr("very-secret-value"),
    )
    assert isinstance(s3, S3ObjectStore)
    assert (s3.endpoint, s3.secure, s3.bucket, s3.prefix) == ("127.0.0.1:8333", False, "recordings", "live/")
    assert s3.url("a/b.flv") == "s3://recordings/live/a/b.flv"
    assert "very-secret-value" not in repr(s3) and "ak" not in s3.url("x")
    with pytest.raises(ConfigurationError, match="TALKFACTORY_S3_ENDPOINT"):
        open_store("s3://recordings/live")


@pytest.mark.parametrize(
    ("endpoint", "secure", "expected"),
    [
        ("127.0.0.1:8333", False, ("127.0.0.1:8333", False)),
        ("minio.internal:9000", True, ("minio.internal:9000", True)),
        ("http://127.0.0.1:8333", True, ("127.0.0.1:8333", False)),
        ("https://s3.example.com/", False, ("s3.example.com", True)),
    ],
)
def test_endpoints(endpoint: str, secure: bool, expected: tuple[str, bool]) -> None:
    assert parse_endpoint(endpoint, secure) == expected


@pytest.mark.parametrize(
    "endpoint", ["", "ftp://host", "http://user:pw@host:1", "http://host/path", "host/path", "a b:1"]
)
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_endpoint(endpoint)
    assert "pw" not in str(info.value)


def test_s3_store_refuses_impossible_settings() -> None:
    with pytest.raises(ConfigurationError):
        S3ObjectStore("127.0.0.1:1", "a", "b", "x")  # bucket name too short
    with pytest.raises(ConfigurationError):
        S3ObjectStore("127.0.0.1:1", "a", None, "bucket")
    with pytest.raises(ConfigurationError):
        S3ObjectStore("127.0.0.1:1", "a", "b", "bucket", part_size=1024)


def test_part_size_grows_only_when_10000_parts_would_not_fit() -> None:
    mib = 1024 * 1024
    assert part_size_for(-1, 5 * mib) == 5 * mib
    assert part_size_for(200 * mib, 5 * mib) == 5 * mib
    assert part_size_for(50_000 * mib, 5 * mib) == 5 * mib
    big = 80 * 1024 * mib  # 80 GiB needs parts of at least 8.2 MiB
    size = part_size_for(big, 5 * mib)
    assert size % mib == 0 and size * 10_000 >= big and (size - mib) * 10_000 < big
