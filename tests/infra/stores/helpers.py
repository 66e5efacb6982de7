"""Shared bits of the store tests: store factories, test payloads, a slow stream."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from pathlib import Path

from talkfactory.infra.retry import RetryPolicy
from talkfactory.infra.stores.s3 import S3ObjectStore
from tests.fixtures.servers import WeedServer

MIB = 1024 * 1024
PART = 5 * MIB


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return sha256_bytes(data)


def s3_store(server: WeedServer, bucket: str, **options: object) -> S3ObjectStore:
    """A store on ``bucket`` under a fresh prefix, so tests sharing a bucket never see each other."""
    kwargs: dict[str, object] = {"part_size": PART, "retry": RetryPolicy(attempts=5, max_seconds=30)}
    kwargs.update(options)
    return S3ObjectStore(
        server.endpoint,
        server.access_key,
        server.secret_key,
        bucket,
        prefix=f"t-{uuid.uuid4().hex[:8]}/",
        **kwargs,  # type: ignore[arg-type]
    )


class SlowStream(io.RawIOBase):
    """A seekable in-memory stream that takes its time, and can run a callback once at a byte offset."""

    def __init__(
        self,
        data: bytes,
        *,
        delay: float = 0.0,
        chunk: int = 256 * 1024,
        at: int | None = None,
        on_offset: object = None,
    ) -> None:
        self._buf = io.BytesIO(data)
        self._delay = delay
        self._chunk = chunk
        self._at = at
        self._on_offset = on_offset
        self.fired = threading.Event()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buf.seek(offset, whence)

    def tell(self) -> int:
        return self._buf.tell()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._delay:
            time.sleep(self._delay)
        pos = self._buf.tell()
        if self._at is not None and pos >= self._at and not self.fired.is_set():
            self.fired.set()
            self._on_offset()  # type: ignore[operator]
        data = self._buf.read(min(len(buffer), self._chunk))
        buffer[: len(data)] = data
        return len(data)
