"""One contract, two stores: every test here runs on a local folder and on SeaweedFS S3 (no mocks)."""

from __future__ import annotations

import io
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from talkfactory.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorePermanentError,
)
from talkfactory.infra.stores import LocalObjectStore, ObjectStore, S3ObjectStore
from talkfactory.infra.stores.base import ObjectInfo
from tests.fixtures.servers import WeedServer, s3_server  # noqa: F401
from tests.infra.stores.helpers import MIB, SlowStream, random_file, s3_store, sha256_bytes, sha256_file

BAD_KEYS = [
    "../../x.flv",
    "a/./b",
    "a/../b",
    "..",
    "line\nbreak.flv",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "x" * 1025,
    "é" * 513,  # 1026 bytes in UTF-8
    "",
    "/abs/key",
    "a//b",
    "a/",
    "lone\udc80surrogate",
]


@pytest.fixture(scope="module")
def s3_bucket(s3_server: WeedServer) -> str:  # noqa: F811
    return s3_server.make_bucket()


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.servers)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., ObjectStore]:
    """Stores of the parametrized kind; each call gives a fresh, empty namespace."""
    counter = iter(range(1000))

    def make(**options: object) -> ObjectStore:
        if kind == "local":
            return LocalObjectStore(tmp_path / f"store{next(counter)}")
        server: WeedServer = request.getfixturevalue("s3_server")
        return s3_store(server, request.getfixturevalue("s3_bucket"), **options)

    return make


@pytest.fixture
def store(make_store: Callable[..., ObjectStore]) -> ObjectStore:
    return make_store()


def test_both_satisfy_the_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_multipart_roundtrip_by_sha256(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    digest = random_file(src, 12 * MIB)  # three 5 MiB parts on S3
    put = store.put_file(src, "rec/2024-06-01/big.flv", content_type="video/x-flv")
    assert put.key == "rec/2024-06-01/big.flv" and put.size == 12 * MIB
    stat = store.stat("rec/2024-06-01/big.flv")
    assert (stat.size, stat.etag) == (put.size, put.etag)
    assert stat.last_modified.tzinfo is not None
    if isinstance(store, S3ObjectStore):
        assert stat.etag.endswith("-3")  # it really went up in parts
        assert stat.content_type == "video/x-flv"
    (listed,) = store.list("rec/")
    assert (listed.key, listed.size, listed.etag) == (put.key, put.size, put.etag)  # listing agrees with GET
    dest = tmp_path / "out" / "deep" / "big.flv"
    got = store.get_file("rec/2024-06-01/big.flv", dest, expected=listed)
    assert got.size == 12 * MIB and got.etag == stat.etag
    assert sha256_file(dest) == digest
    assert src.exists() and sha256_file(src) == digest  # the source is never moved or deleted
    assert [p.name for p in dest.parent.iterdir()] == ["big.flv"]  # no temp file left behind


def test_zero_byte_object(store: ObjectStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty.flv"
    empty.write_bytes(b"")
    info = store.put_file(empty, "empty.flv")
    assert info.size == 0
    assert [i.key for i in store.list()] == ["empty.flv"]
    assert store.list().__next__().size == 0
    dest = tmp_path / "dl" / "empty.flv"
    store.get_file("empty.flv", dest)
    assert dest.exists() and dest.stat().st_size == 0
    with store.open("empty.flv") as stream:
        assert stream.read() == b""


def test_list_prefix_order_and_pagination(make_store: Callable[..., ObjectStore], kind: str) -> None:
    # list_batch=7: a 25-key listing takes four resumed batches on S3 (the local store ignores it).
    store = make_store(list_batch=7) if kind == "s3" else make_store()
    keys = [f"live/{i:03d}.flv" for i in range(25)] + ["live2/x.flv", "other/y.flv", "livez.flv"]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: store.put_stream(io.BytesIO(k.encode()), k, size=len(k)), keys))
    assert [i.key for i in store.list("live/")] == sorted(keys[:25])
    assert [i.key for i in store.list("live")] == sorted(keys[:25] + ["live2/x.flv", "livez.flv"])
    assert [i.key for i in store.list("live/01")] == [f"live/{i:03d}.flv" for i in range(10, 20)]
    everything = list(store.list())
    assert [i.key for i in everything] == sorted(keys)
    assert all(i.size == len(i.key) for i in everything)
    assert list(store.list("nothing-here/")) == []


@pytest.mark.servers
def test_listing_more_than_one_server_page(s3_server: WeedServer, s3_bucket: str) -> None:  # noqa: F811
    store = s3_store(s3_server, s3_bucket)
    client = s3_server.client()
    keys = [f"many/{i:05d}" for i in range(1100)]  # S3 pages hold at most 1000 keys
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(s3_bucket, store.prefix + k, io.BytesIO(b""), 0), keys))
    assert [i.key for i in store.list("many/")] == keys


def test_stat_exists_open_copy_delete(store: ObjectStore, tmp_path: Path) -> None:
    store.put_stream(io.BytesIO(b"hello world"), "a/b.txt", size=11)
    assert store.exists("a/b.txt")
    assert not store.exists("a/c.txt")
    assert not store.exists("a")  # a "folder" is not an object
    with pytest.raises(ObjectNotFoundError) as info:
        store.stat("a/c.txt")
    assert "a/c.txt" in str(info.value)
    with store.open("a/b.txt") as stream:
        assert stream.read(5) == b"hello"
        assert stream.read() == b" world"
    copied = store.copy("a/b.txt", "c/d.txt")
    assert copied.size == 11 and copied.key == "c/d.txt"
    with store.open("c/d.txt") as stream:
        assert stream.read() == b"hello world"
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    store.delete("a/b.txt")  # deleting an absent key is fine (so a retried delete is safe)
    assert [i.key for i in store.list()] == ["c/d.txt"]
    for call in (
        lambda: store.open("a/b.txt").__enter__(),
        lambda: store.get_file("a/b.txt", tmp_path / "x"),
        lambda: store.copy("a/b.txt", "z"),
    ):
        with pytest.raises(ObjectNotFoundError):
            call()
    assert not (tmp_path / "x").exists()


def test_put_stream_of_unknown_length_from_a_pipe(store: ObjectStore) -> None:
    payload = os.urandom(6 * MIB + 123)  # over one part, length not announced
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as w:
            w.write(payload)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read_fd, "rb") as pipe:
        info = store.put_stream(pipe, "piped.bin")
    feeder.join()
    assert info.size == len(payload)
    with store.open("piped.bin") as stream:
        assert sha256_bytes(stream.read()) == sha256_bytes(payload)


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda k: repr(k)[:24])
def test_bad_keys_are_refused_everywhere(store: ObjectStore, tmp_path: Path, bad: str) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    store.put_file(src, "good.bin")
    calls: list[Callable[[], object]] = [
        lambda: store.stat(bad),
        lambda: store.exists(bad),
        lambda: store.get_file(bad, tmp_path / "dl"),
        lambda: store.open(bad).__enter__(),
        lambda: store.put_file(src, bad),
        lambda: store.put_stream(io.BytesIO(b"x"), bad, size=1),
        lambda: store.copy("good.bin", bad),
        lambda: store.copy(bad, "copy.bin"),
        lambda: store.delete(bad),
        lambda: store.url(bad),
        lambda: store.presigned_get(bad),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert isinstance(info.value, StorePermanentError) and isinstance(info.value, ValueError)
        assert info.value.subject  # names the key
    # Nothing was written anywhere: the store still holds the one good object.
    assert [i.key for i in store.list()] == ["good.bin"]
    assert not (tmp_path / "dl").exists()
    assert not (tmp_path.parent / "x.flv").exists()


def test_traversal_prefix_is_refused(store: ObjectStore) -> None:
    for prefix in ("../", "a/../", "/abs", "a\nb"):
        with pytest.raises(InvalidKeyError):
            store.list(prefix)  # raised by the call itself, before any iteration


def test_object_deleted_between_list_and_download(store: ObjectStore, tmp_path: Path) -> None:
    store.put_stream(io.BytesIO(b"soon gone"), "inbox/a.flv", size=9)
    store.put_stream(io.BytesIO(b"stays"), "inbox/b.flv", size=5)
    listed = list(store.list("inbox/"))
    store.delete("inbox/a.flv")
    work = tmp_path / "work"
    with pytest.raises(ObjectNotFoundError) as info:
        store.get_file(listed[0].key, work / "a.flv", expected=listed[0])
    assert "inbox/a.flv" in str(info.value)
    store.get_file(listed[1].key, work / "b.flv", expected=listed[1])  # the rest goes on
    assert (work / "b.flv").read_bytes() == b"stays"
    assert sorted(p.name for p in work.iterdir()) == ["b.flv"]  # no partial a.flv, no temp file


def test_object_replaced_since_listing_is_not_handed_back(store: ObjectStore, tmp_path: Path) -> None:
    store.put_stream(io.BytesIO(b"version one"), "clip.flv", size=11)
    (listed,) = store.list()
    store.put_stream(io.BytesIO(b"version two, longer"), "clip.flv", size=19)
    with pytest.raises(ObjectNotFoundError, match="changed since it was listed"):
        store.get_file("clip.flv", tmp_path / "clip.flv", expected=listed)
    assert not (tmp_path / "clip.flv").exists()


def _observe(store: ObjectStore, key: str, stop: threading.Event, tmp: Path) -> Iterator[str]:
    """What a reader sees at ``key`` while someone writes it: 'missing' or the sha256 of what it got."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            info = store.stat(key)
            dest = tmp / f"seen{n}"
            store.get_file(key, dest)
            yield f"stat:{info.size}"
            yield sha256_file(dest)
            dest.unlink()
        except ObjectNotFoundError:
            yield "missing"


def test_readers_never_see_a_partial_object(store: ObjectStore, tmp_path: Path) -> None:
    """A reader polling the key during a slow upload sees nothing or a complete object, never a part."""
    first, second = os.urandom(12 * MIB), os.urandom(11 * MIB)
    seen: list[str] = []
    stop = threading.Event()
    (tmp_path / "r").mkdir()
    reader = threading.Thread(
        target=lambda: seen.extend(_observe(store, "out/final.mp4", stop, tmp_path / "r"))
    )
    reader.start()
    try:
        # About 1.5 s each: 48 reads of 256 KiB with 30 ms between them.
        store.put_stream(cast(BinaryIO, SlowStream(first, delay=0.03)), "out/final.mp4", size=len(first))
        during_first = len(seen)
        store.put_stream(cast(BinaryIO, SlowStream(second, delay=0.03)), "out/final.mp4", size=len(second))
    finally:
        stop.set()
        reader.join()
    allowed = {
        "missing",
        f"stat:{len(first)}",
        f"stat:{len(second)}",
        sha256_bytes(first),
        sha256_bytes(second),
    }
    assert set(seen) <= allowed, set(seen) - allowed
    assert seen[:during_first].count("missing") >= 3  # the reader really looked during the first upload
    assert sha256_bytes(first) in seen  # ... and during the second, when the first was in place


def test_url_repr_and_presigned_link(store: ObjectStore, kind: str, s3_secret: str | None) -> None:
    store.put_stream(io.BytesIO(b"link me"), "share/it.mp4", size=7)
    url = store.url("share/it.mp4")
    assert url.endswith("share/it.mp4")
    assert url.startswith("s3://" if kind == "s3" else "file:///")
    link = store.presigned_get("share/it.mp4")
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.read() == b"link me"
    if s3_secret is not None:
        for text in (url, repr(store), link):
            assert s3_secret not in text


@pytest.fixture
def s3_secret(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind != "s3":
        return None
    server: WeedServer = request.getfixturevalue("s3_server")
    return server.secret_key


def test_missing_bucket_or_folder(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store: ObjectStore
    if kind == "local":
        store = LocalObjectStore(tmp_path / "no-such-folder")
    else:
        server: WeedServer = request.getfixturevalue("s3_server")
        store = s3_store(server, "tf-no-such-bucket")
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    with pytest.raises(ObjectNotFoundError):
        list(store.list())
    with pytest.raises(ObjectNotFoundError):
        store.stat("x.flv")
    with pytest.raises(ObjectNotFoundError):
        store.get_file("x.flv", tmp_path / "x.flv")
    if kind == "s3":  # a folder is created on first write; a bucket never is
        with pytest.raises(ObjectNotFoundError):
            store.put_file(src, "x.flv")


def _info_keys(infos: list[ObjectInfo]) -> list[str]:
    return [i.key for i in infos]


def test_overwrite_replaces_and_etag_changes(store: ObjectStore) -> None:
    first = store.put_stream(io.BytesIO(b"a" * 100), "k.bin", size=100)
    second = store.put_stream(io.BytesIO(b"b" * 101), "k.bin", size=101)
    assert first.etag != second.etag
    assert _info_keys(list(store.list())) == ["k.bin"]
    with store.open("k.bin") as stream:
        assert stream.read() == b"b" * 101


def test_open_range_reads_only_the_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put_stream(io.BytesIO(data), "v/clip.mp4", size=len(data))
    with store.open_range("v/clip.mp4", 100, 50) as stream:
        assert stream.read() == data[100:150]
    with store.open_range("v/clip.mp4", len(data) - 10, 10) as stream:
        assert stream.read(4) == data[-10:-6] and stream.read() == data[-6:]
    with pytest.raises(InvalidKeyError), store.open_range("../v/clip.mp4", 0, 1):
        pass
