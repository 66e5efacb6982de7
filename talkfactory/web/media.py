"""Serving what lineage points at: the file behind a URI, byte ranges of it, a thumbnail, a ZIP.

The page never opens a path a request names. It serves objects lineage recorded (renders, exports,
avatars), and only when their URI lies inside one of the configured stores (exports, work, avatars,
ingest, and the extra roots the app was given); a key is checked with the stores' ``validate_key``
(no ``..``, no absolute keys, no control characters). S3 objects stream through this server with
ranged GETs, so seeking works the same on both kinds of store and no presigned link leaves it.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from talkfactory.errors import InvalidKeyError, ObjectNotFoundError, PermanentError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.runner import run_ffmpeg
from talkfactory.infra.settings import Settings
from talkfactory.infra.stores import LocalObjectStore, ObjectInfo, ObjectStore, open_store, validate_key
from talkfactory.infra.stores.urls import parse_store_url

CHUNK = 256 * 1024


class OutsideStoresError(PermanentError, PermissionError):
    """A URI or key that no configured store holds (or that tries to climb out of one)."""


class RangeNotSatisfiableError(PermanentError, ValueError):
    pass


@dataclass(frozen=True)
class Located:
    store: ObjectStore
    key: str

    def stat(self) -> ObjectInfo:
        return self.store.stat(self.key)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name


class StoreResolver:
    """Maps lineage URIs to (store, key) for the stores the page may read, and nothing else."""

    def __init__(self, settings: Settings, extra_roots: Iterable[str] = ()) -> None:
        self._settings = settings
        urls = [
            settings.exports_url,
            settings.resolved_work_url,
            settings.avatars_url,
            settings.ingest_url,
            *extra_roots,
        ]
        self.urls = [u for u in urls if u]
        self._stores: dict[str, ObjectStore] = {}

    def store(self, url: str) -> ObjectStore:
        if url not in self._stores:
            s = self._settings
            self._stores[url] = open_store(
                url,
                endpoint=s.s3_endpoint,
                access_key=s.s3_access_key,
                secret_key=s.s3_secret_key,
                secure=s.s3_secure,
            )
        return self._stores[url]

    def locate(self, uri: str) -> Located:
        """The store and key of ``uri`` (``file:///abs``, a plain absolute path, or ``s3://bucket/key``)."""
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            bucket, key = parts.netloc, unquote(parts.path).lstrip("/")
            for url in self.urls:
                loc = parse_store_url(url)
                if loc.scheme == "s3" and loc.bucket == bucket and key.startswith(loc.prefix):
                    return self._checked(url, key[len(loc.prefix) :])
        elif parts.scheme in ("file", ""):
            path = Path(unquote(parts.path))
            if path.is_absolute():
                for url in self.urls:
                    loc = parse_store_url(url)
                    if loc.scheme != "file" or loc.path is None:
                        continue
                    root = loc.path.expanduser().absolute()
                    rel = _relative(path, root)
                    if rel is not None:
                        return self._checked(url, rel)
        raise OutsideStoresError("not inside any store this page serves", subject=uri)

    def in_store(self, url: str, key: str) -> Located:
        """``key`` in the store at ``url``; ``OutsideStoresError`` for keys like ``../x``."""
        return self._checked(url, key)

    def _checked(self, url: str, key: str) -> Located:
        try:
            validate_key(key)
        except InvalidKeyError as exc:
            raise OutsideStoresError(exc.message, subject=key) from exc
        store = self.store(url)
        if isinstance(store, LocalObjectStore):
            # A symlink inside the folder must not lead out of it either.
            real, root = store.path(key).resolve(), store.root.resolve()
            if not real.is_relative_to(root):
                raise OutsideStoresError("leads outside its store", subject=key)
        return Located(store, key)


def _relative(path: Path, root: Path) -> str | None:
    # Compare normalised paths (no ``..``) so /exports/../etc/passwd is not "inside" /exports.
    norm = Path(os.path.normpath(path))
    if norm != path and ".." in path.parts:
        return None
    try:
        return norm.relative_to(root).as_posix()
    except ValueError:
        return None


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for one ``Range: bytes=a-b`` header, None for no (or a multi-) range.

    ``RangeNotSatisfiableError`` for a range that starts past the end (HTTP 416)."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None:
        return None  # several ranges or another unit: answer with the whole object, as HTTP allows
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiableError("empty suffix range", subject=header)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiableError(f"range starts past the end ({size} bytes)", subject=header)
    return start, end


def iter_range(loc: Located, start: int, end: int) -> Iterator[bytes]:
    with loc.store.open_range(loc.key, start, end - start + 1) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def iter_whole(loc: Located) -> Iterator[bytes]:
    with loc.store.open(loc.key) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


# ------------------------------------------------------------------------------------ thumbnails


def thumbnail_args(src: Path, dest: Path, *, at_s: float, width: int) -> a.Argv:
    """One frame of ``src`` at ``at_s`` scaled to ``width`` (height kept even), as a JPEG."""
    return a.concat(
        a.global_options(),
        a.input_file(src, start=at_s),
        a.video_filter(f"scale={width}:-2"),
        ["-frames:v", "1", "-update", "1", "-q:v", "4", "-f", "image2", a.file_url(dest)],
    )


def thumbnail(loc: Located, cache_dir: Path, *, at_s: float = 0.5, width: int = 240) -> Path:
    """A cached JPEG of one frame of ``loc`` (a video or an image), keyed by the object's etag."""
    info = loc.stat()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{loc.key}-{info.etag}")[-150:]
    dest = cache_dir / "thumbs" / f"{safe}-{width}.jpg"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_src: Path | None = None
    store = loc.store
    if isinstance(store, LocalObjectStore):
        src = store.path(loc.key)
    else:
        tmp_src = dest.with_name(f".{dest.stem}.src{PurePosixPath(loc.key).suffix}")
        store.get_file(loc.key, tmp_src)
        src = tmp_src
    tmp = dest.with_name(f".{dest.stem}.part.jpg")
    try:
        is_image = src.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp")
        run_ffmpeg(
            thumbnail_args(src, tmp, at_s=0.0 if is_image else at_s, width=width),
            timeout=60,
            subject=loc.key,
            inputs=[src],
        )
        if not tmp.exists():
            # A clip shorter than ``at_s``: its first frame.
            run_ffmpeg(
                thumbnail_args(src, tmp, at_s=0.0, width=width), timeout=60, subject=loc.key, inputs=[src]
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        if tmp_src is not None:
            tmp_src.unlink(missing_ok=True)
    return dest


# ------------------------------------------------------------------------------------------ zip


class _Pipe:
    """A write-only, unseekable file: ``zipfile`` writes into it, the response drains it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def zip_stream(files: list[Located]) -> Iterator[bytes]:
    """A ZIP (stored, not deflated: MP4s do not shrink) of ``files``, streamed as it is written.

    Names inside are the objects' file names, made unique (``a.mp4``, ``a (2).mp4``)."""
    pipe = _Pipe()
    used: set[str] = set()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as zf:  # type: ignore[call-overload]
        for loc in files:
            name = _unique(loc.name, used)
            with zf.open(name, "w", force_zip64=True) as entry:
                for chunk in iter_whole(loc):
                    entry.write(chunk)
                    if pipe.written and len(pipe.parts) > 16:
                        yield pipe.drain()
            yield pipe.drain()
    yield pipe.drain()


def _unique(name: str, used: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{stem} ({n}){suffix}"
    used.add(candidate)
    return candidate


__all__ = [
    "Located",
    "ObjectNotFoundError",
    "OutsideStoresError",
    "RangeNotSatisfiableError",
    "StoreResolver",
    "iter_range",
    "iter_whole",
    "parse_range",
    "thumbnail",
    "zip_stream",
]
