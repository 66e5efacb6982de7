"""S3 faults produced for real on SeaweedFS: wrong credentials, a dead endpoint, a restart mid-upload."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from talkfactory.errors import StoreAccessError, StoreUnavailableError
from talkfactory.infra.retry import RetryPolicy
from talkfactory.infra.stores import S3ObjectStore
from tests.fixtures.servers import WeedServer, free_port, s3_server  # noqa: F401
from tests.infra.stores.helpers import MIB, SlowStream, random_file, s3_store, sha256_bytes, sha256_file

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def bucket(s3_server: WeedServer) -> str:  # noqa: F811
    return s3_server.make_bucket()


@pytest.mark.parametrize("which", ["secret", "access key"])
def test_wrong_credentials_fail_fast_as_access_errors(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    tmp_path: Path,
    which: str,
) -> None:
    good = s3_store(s3_server, bucket)
    good.put_file(_small(tmp_path), "there.bin")
    access = s3_server.access_key if which == "secret" else "nobody-knows-me"
    secret = "definitely-wrong-secret-123"
    store = S3ObjectStore(s3_server.endpoint, access, secret, bucket, good.prefix)
    calls: list[Callable[[], object]] = [
        lambda: list(store.list()),
        lambda: store.stat("there.bin"),
        lambda: store.get_file("there.bin", tmp_path / "dl.bin"),
        lambda: store.put_file(_small(tmp_path), "new.bin"),
        lambda: store.delete("there.bin"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreAccessError) as info:
            call()
        assert time.monotonic() - started < 5, "a permanent error must not be retried"
        assert isinstance(info.value, PermissionError)
        assert secret not in str(info.value)
        assert f"s3://{bucket}/{good.prefix}" in str(info.value)  # names what it was doing
    assert good.exists("there.bin") and not good.exists("new.bin")


def test_unreachable_endpoint_fails_within_bounded_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there: connection refused
    store = S3ObjectStore(f"127.0.0.1:{port}", "k", "secret-value-1", "some-bucket")  # default retry policy
    caplog.set_level(logging.WARNING, logger="talkfactory.retry")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        store.get_file("rec/a.flv", tmp_path / "a.flv")
    elapsed = time.monotonic() - started
    assert elapsed < 30
    assert isinstance(info.value, ConnectionError)
    assert "s3://some-bucket/rec/a.flv" in str(info.value)
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying")]
    assert len(retries) == store.retry.attempts - 1
    assert all("s3://some-bucket/rec/a.flv" in line for line in retries)
    assert any(r.getMessage().startswith("giving up") for r in caplog.records)
    assert all("secret-value-1" not in r.getMessage() for r in caplog.records)
    assert elapsed > 0.5 + 1 + 2 + 4 - 0.5  # it did back off before giving up
    assert not (tmp_path / "a.flv").exists()


def test_server_down_at_first_attempt_then_back(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deterministic: the first attempt meets a stopped server; it is started once a retry is logged."""
    # Waits of 0.5 + 1 + 2 + 4 + 8 + 8 ... s: room for a slow start on a busy machine.
    store = s3_store(s3_server, bucket, retry=RetryPolicy(attempts=10, max_seconds=90))
    digest = random_file(tmp_path / "out.mp4", 12 * MIB)
    caplog.set_level(logging.WARNING, logger="talkfactory.retry")
    result: list[object] = []
    s3_server.stop()
    try:
        upload = threading.Thread(
            target=lambda: result.append(_try(store.put_file, tmp_path / "out.mp4", "o.mp4"))
        )
        upload.start()
        deadline = time.monotonic() + 20
        while not any("retrying" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        s3_server.start()
    upload.join(timeout=60)
    assert not upload.is_alive()
    assert not isinstance(result[0], BaseException), result[0]
    assert any("s3://" in r.getMessage() and "o.mp4" in r.getMessage() for r in caplog.records)
    assert [i.key for i in store.list()] == ["o.mp4"]
    store.get_file("o.mp4", tmp_path / "back.mp4")
    assert sha256_file(tmp_path / "back.mp4") == digest


def test_server_crash_in_the_middle_of_a_multipart_upload(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL the server while the first part is on the wire; the retry uploads again, one object results."""
    store = s3_store(s3_server, bucket)
    payload = os.urandom(16 * MIB)  # parts of 5 MiB: the crash comes when part 2 is being read

    def crash_and_restart() -> None:
        s3_server.kill()
        s3_server.start()

    stream = SlowStream(payload, at=5 * MIB + 1, on_offset=crash_and_restart)
    caplog.set_level(logging.WARNING, logger="talkfactory.retry")
    info = store.put_stream(cast(BinaryIO, stream), "final.mp4", size=len(payload))
    assert stream.fired.is_set()
    assert any(
        r.getMessage().startswith("retrying") and "final.mp4" in r.getMessage() for r in caplog.records
    )
    assert info.size == len(payload)
    assert [i.key for i in store.list()] == ["final.mp4"]  # exactly one object, no leftovers
    with store.open("final.mp4") as got:
        assert sha256_bytes(got.read()) == sha256_bytes(payload)


def _small(tmp_path: Path) -> Path:
    path = tmp_path / "small.bin"
    path.write_bytes(b"0123456789")
    return path


def _try(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except BaseException as exc:  # handed to the test thread
        return exc
