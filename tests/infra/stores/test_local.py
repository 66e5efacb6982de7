"""What only the folder store does: mtime/size etags, hidden temp files, drop-folder realities."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from talkfactory.errors import InvalidKeyError, ObjectNotFoundError, StoreUnavailableError
from talkfactory.infra.stores import LocalObjectStore
from talkfactory.infra.stores.base import temp_sibling


def test_etag_follows_mtime_and_size(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "a.flv").write_bytes(b"12345")
    first = store.stat("a.flv")
    assert store.stat("a.flv").etag == first.etag  # stable while untouched
    os.utime(tmp_path / "a.flv", ns=(first.last_modified.timestamp().__int__() * 10**9 + 7,) * 2)
    touched = store.stat("a.flv")
    assert touched.etag != first.etag and touched.size == first.size
    with open(tmp_path / "a.flv", "ab") as f:
        f.write(b"6")
    assert store.stat("a.flv").size == 6


def test_sources_are_copied_never_moved(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "exports")
    src = tmp_path / "render.mp4"
    src.write_bytes(b"mp4 bytes")
    store.put_file(src, "day/render.mp4")
    assert src.read_bytes() == b"mp4 bytes"
    assert (tmp_path / "exports" / "day" / "render.mp4").read_bytes() == b"mp4 bytes"
    store.get_file("day/render.mp4", tmp_path / "again.mp4")
    assert store.exists("day/render.mp4")


def test_half_written_temp_files_are_not_listed(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_stream(io.BytesIO(b"done"), "out/a.mp4", size=4)
    temp_sibling(tmp_path / "out" / "b.mp4").write_bytes(b"half")  # what a crash mid-write leaves
    assert [i.key for i in store.list()] == ["out/a.mp4"]


def test_unusable_file_names_are_listed_then_refused(tmp_path: Path) -> None:
    """A drop folder can hold names no key may have: the scan sees them and records the error."""
    store = LocalObjectStore(tmp_path)
    (tmp_path / "bad\nname.flv").write_bytes(b"x")
    (tmp_path / "good.flv").write_bytes(b"y")
    keys = [i.key for i in store.list()]
    assert keys == ["bad\nname.flv", "good.flv"]
    with pytest.raises(InvalidKeyError, match="control character"):
        store.get_file(keys[0], tmp_path / "dl" / "x.flv")
    store.get_file(keys[1], tmp_path / "dl" / "good.flv")


def test_a_file_still_growing_is_not_handed_back(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "drop")
    growing = tmp_path / "drop" / "live.flv"
    growing.parent.mkdir()
    growing.write_bytes(b"\0" * 32 * 1024 * 1024)
    stop = threading.Event()
    started = threading.Event()

    def append() -> None:  # an uploader still writing: 4 KiB every millisecond
        with open(growing, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"z" * 4096)
                started.set()
                time.sleep(0.001)

    writer = threading.Thread(target=append)
    writer.start()
    started.wait(5)
    try:
        with pytest.raises(StoreUnavailableError, match="changed while being read"):
            store.get_file("live.flv", tmp_path / "work" / "live.flv")
    finally:
        stop.set()
        writer.join()
    assert not (tmp_path / "work" / "live.flv").exists()
    assert os.listdir(tmp_path / "work") == []


def test_folders_are_not_objects(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ObjectNotFoundError):
        store.stat("dir")
    with pytest.raises(ObjectNotFoundError):
        store.delete("dir")
    assert (tmp_path / "dir").is_dir()


def test_names(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    assert store.url("a b/c.mp4") == (tmp_path / "a b" / "c.mp4").as_uri()
    assert store.presigned_get("a b/c.mp4") == store.url("a b/c.mp4")
    assert store.path("x/y") == tmp_path / "x" / "y"
    assert repr(store) == f"LocalObjectStore({str(tmp_path)!r})"
