"""Planning a scan over a drop folder and a real S3 bucket: new, known, settling, rejected, batched."""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, insert

from talkfactory.errors import ConfigurationError, ObjectNotFoundError
from talkfactory.infra.files import sha256_file
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LOCAL_BUCKET, LineageRepository, Provenance
from talkfactory.infra.lineage.tables import SourceObject
from talkfactory.infra.stores import LocalObjectStore, ObjectInfo, ObjectStore, S3ObjectStore
from talkfactory.pipeline.ingest import (
    avatar_file_name,
    export_key,
    fetch_and_hash,
    fetch_to_work,
    ingest_location,
    is_media_key,
    plan_scan,
    resolve_avatars,
    work_name,
)
from tests.fixtures.servers import WeedServer, postgres_server, postgres_url, s3_server  # noqa: F401

PROV = Provenance(code_version="test")
HOUR_AGO = time.time() - 3600


@pytest.fixture
def repo(tmp_path: Path) -> LineageRepository:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    return LineageRepository.from_url(url)


@contextmanager
def counting_statements(repo: LineageRepository) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(repo.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(repo.engine, "before_cursor_execute", count)


def write(path: Path, data: bytes = b"media bytes", mtime: float | None = HOUR_AGO) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def register(
    repo: LineageRepository, store: ObjectStore, info: ObjectInfo, status: str = "processing"
) -> int:
    loc = ingest_location(store)
    state, _ = repo.register_source_object(
        store_url=loc.store_url, bucket=loc.bucket, key=loc.full_key(info.key), etag=info.etag,
        size_bytes=info.size, status=status, prov=PROV,  # type: ignore[arg-type]
    )  # fmt: skip
    return state.id


def keys(items: Sequence[ObjectInfo | tuple[ObjectInfo, object]]) -> list[str]:
    return sorted(i.key if isinstance(i, ObjectInfo) else i[0].key for i in items)


# -- pure helpers --------------------------------------------------------------------------------


def test_names_for_work_files_and_exports() -> None:
    assert is_media_key("a/B.FLV") and is_media_key("x.m4a") and not is_media_key("notes.txt")
    assert not is_media_key("a.flv.part")
    assert work_name("live/2024/show.flv") == "show.flv"
    long = work_name("d/" + "é" * 300 + ".flv")
    assert long.endswith(".flv") and len(long.encode()) <= 130
    assert export_key("live/2024/show.flv", "astro.mp4") == "live/2024/show/astro.mp4"
    assert export_key("noext", "a.mp4") == "noext/a.mp4"
    assert avatar_file_name("show__astro-2.mp4", "show") == "astro-2.mp4"


def test_a_drop_folder_is_addressed_by_its_absolute_path(tmp_path: Path) -> None:
    loc = ingest_location(LocalObjectStore(tmp_path / "drop"))
    assert loc.bucket == LOCAL_BUCKET and loc.full_key("a.flv") == f"{(tmp_path / 'drop').as_posix()}/a.flv"
    assert loc.store_url.startswith("file:///") and loc.store_url.endswith("/drop/")


# -- a drop folder -------------------------------------------------------------------------------


def test_drop_folder_plan_sorts_new_waiting_rejected_known(tmp_path: Path, repo: LineageRepository) -> None:
    drop = tmp_path / "drop"
    write(drop / "old.flv")
    write(drop / "sub" / "old2.mp4")
    write(drop / "young.flv", mtime=None)
    write(drop / "notes.txt")
    write(drop / "bad\nname.flv")
    write(drop / "empty.flv", b"")
    write(drop / "just-created.flv", b"", mtime=None)
    deep = drop.joinpath(*["d" * 200] * 6) / "long.flv"  # > 1024 bytes as a key
    write(deep)
    store = LocalObjectStore(drop)

    plan = plan_scan(store, "", repo, settle_seconds=30)
    assert keys(plan.new) == ["old.flv", "sub/old2.mp4"]
    assert keys(plan.waiting) == ["just-created.flv", "young.flv"]
    assert "ago" in dict((i.key, w) for i, w in plan.waiting)["young.flv"]
    rejected = {i.key: why for i, why in plan.rejected}
    assert set(rejected) == {"bad\nname.flv", "empty.flv", deep.relative_to(drop).as_posix()}
    assert "control character" in rejected["bad\nname.flv"]
    assert "empty" in rejected["empty.flv"]
    assert "bytes" in rejected[deep.relative_to(drop).as_posix()]
    assert plan.ignored == 1 and plan.known == 0 and plan.listed == 8

    for info in plan.new:
        register(repo, store, info)
    for info, _why in plan.rejected:
        register(repo, store, info, status="quarantined")
    again = plan_scan(store, "", repo, settle_seconds=30)
    assert again.new == [] and again.rejected == [] and again.known == 5
    assert len([p for p in drop.rglob("*") if p.is_file()]) == 8  # nothing moved or deleted


def test_an_object_waits_while_it_keeps_changing(tmp_path: Path, repo: LineageRepository) -> None:
    drop = tmp_path / "drop"
    growing = write(drop / "live.flv", b"a" * 10, mtime=None)
    store = LocalObjectStore(drop)
    first = plan_scan(store, "", repo, settle_seconds=30)
    assert keys(first.waiting) == ["live.flv"]
    # It grew, and its writer (like `cp -p`) then set an old modification time: only the size tells.
    write(growing, b"a" * 20)
    second = plan_scan(store, "", repo, settle_seconds=30)
    assert keys(second.waiting) == ["live.flv"] and "still changing: 10 -> 20" in second.waiting[0][1]
    third = plan_scan(store, "", repo, settle_seconds=30)
    assert keys(third.new) == ["live.flv"]


def test_confirm_looks_needs_two_scans_that_agree(tmp_path: Path, repo: LineageRepository) -> None:
    drop = tmp_path / "drop"
    write(drop / "a.flv")
    store = LocalObjectStore(drop)
    first = plan_scan(store, "", repo, settle_seconds=0, confirm_looks=True)
    assert first.new == [] and "first look" in first.waiting[0][1]
    dry = plan_scan(store, "", repo, settle_seconds=0, confirm_looks=True, save_looks=False)
    assert keys(dry.new) == ["a.flv"]
    info = dry.new[0]
    register(repo, store, info)
    assert repo.previous_looks(LOCAL_BUCKET, [ingest_location(store).full_key("a.flv")]) == {}


def test_failed_objects_are_retried_until_attempts_run_out(tmp_path: Path, repo: LineageRepository) -> None:
    drop = tmp_path / "drop"
    write(drop / "flaky.flv")
    write(drop / "abandoned.flv")
    store = LocalObjectStore(drop)
    plan = plan_scan(store, "", repo, settle_seconds=0)
    ids = {i.key: register(repo, store, i) for i in plan.new}
    repo.mark_source_object(ids["flaky.flv"], "failed", error="StoreUnavailableError: reset", prov=PROV)

    later = plan_scan(store, "", repo, settle_seconds=0, max_attempts=3)
    assert [(i.key, s.attempts) for i, s in later.retry] == [("flaky.flv", 1)]
    assert later.known == 1  # abandoned.flv is still 'processing' and not stale yet
    stale = plan_scan(
        store, "", repo, settle_seconds=0, stale_after=timedelta(minutes=5),
        now=datetime.now(UTC) + timedelta(minutes=10),
    )  # fmt: skip
    assert keys(stale.retry) == ["abandoned.flv", "flaky.flv"]
    spent = plan_scan(store, "", repo, settle_seconds=0, max_attempts=1)
    assert spent.retry == [] and spent.known == 2


def test_listing_a_missing_drop_folder_fails_loudly(tmp_path: Path, repo: LineageRepository) -> None:
    with pytest.raises(ObjectNotFoundError):
        plan_scan(LocalObjectStore(tmp_path / "nope"), "", repo)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.servers)])
def test_lookups_for_2000_keys_take_a_handful_of_queries(
    db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if db == "postgres" else f"sqlite:///{tmp_path / 'l.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    drop = tmp_path / f"drop-{uuid.uuid4().hex[:6]}"
    for i in range(2000):
        write(drop / f"day{i % 7}" / f"rec-{i:05d}.flv", b"x")
    store = LocalObjectStore(drop)
    loc = ingest_location(store)
    infos = sorted(store.list(), key=lambda i: i.key)
    seeded = [i for n, i in enumerate(infos) if n % 200 != 0]  # 1,990 known, 10 new
    with repo.session() as s:
        s.execute(
            insert(SourceObject),
            [
                {"store_url": loc.store_url, "bucket": loc.bucket, "key": loc.full_key(i.key), "etag": i.etag,
                 "size_bytes": i.size, "status": "done"}
                for i in seeded
            ],
        )  # fmt: skip
    with counting_statements(repo) as statements:
        plan = plan_scan(store, "", repo, settle_seconds=0)
    assert len(plan.new) == 10 and plan.known == 1990
    # 2,000 keys / 500 per query = 4 lookups, plus one read of the looks of the 10 unknown ones.
    assert len(statements) == 5, statements
    repo.engine.dispose()


# -- a real S3 bucket ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(s3_server: WeedServer) -> str:  # noqa: F811
    return s3_server.make_bucket()


def s3_store(server: WeedServer, bucket: str, prefix: str | None = None) -> S3ObjectStore:
    prefix = f"ingest-{uuid.uuid4().hex[:8]}/" if prefix is None else prefix
    return S3ObjectStore(server.endpoint, server.access_key, server.secret_key, bucket, prefix)


def put_raw(server: WeedServer, bucket: str, full_key: str, data: bytes = b"media") -> None:
    """Through the bare SDK, so keys our store refuses to write can still be planted."""
    server.client().put_object(bucket, full_key, io.BytesIO(data), len(data))


@pytest.mark.servers
def test_s3_plan_sorts_new_waiting_rejected_known(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    repo: LineageRepository,
) -> None:
    store = s3_store(s3_server, bucket)
    for key in ("a.flv", "day/b.mp4", "notes.txt", "line\nbreak.flv", "tab\there.flv"):
        put_raw(s3_server, bucket, store.prefix + key)
    put_raw(s3_server, bucket, store.prefix + "empty.flv", b"")
    with pytest.raises(ValueError):  # the SDK refuses to even send a traversal key
        put_raw(s3_server, bucket, store.prefix + "../../x.flv")

    young = plan_scan(store, "", repo, settle_seconds=3600)
    assert keys(young.waiting) == ["a.flv", "day/b.mp4", "empty.flv"]  # just uploaded: still settling
    assert sorted(i.key for i, _ in young.rejected) == ["line\nbreak.flv", "tab\there.flv"]

    later = datetime.now(UTC) + timedelta(hours=2)
    plan = plan_scan(store, "", repo, settle_seconds=3600, now=later)
    assert keys(plan.new) == ["a.flv", "day/b.mp4"]
    assert {i.key: why for i, why in plan.rejected}["empty.flv"] == "the object is empty (0 bytes)"
    assert plan.ignored == 1 and plan.location.store_url == f"s3://{bucket}/{store.prefix}"

    for info in plan.new:
        register(repo, store, info)
    for info, _why in plan.rejected:
        register(repo, store, info, status="quarantined")
    again = plan_scan(store, "", repo, settle_seconds=3600, now=later)
    assert again.new == [] and again.rejected == [] and again.waiting == [] and again.known == 5

    # A new version under the same key is a new object.
    put_raw(s3_server, bucket, store.prefix + "a.flv", b"a longer recording")
    replaced = plan_scan(store, "", repo, settle_seconds=0)
    assert keys(replaced.new) == ["a.flv"] and replaced.known == 4


@pytest.mark.servers
@pytest.mark.slow
def test_s3_plan_pages_through_listing_and_lookups(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    repo: LineageRepository,
) -> None:
    store = s3_store(s3_server, bucket)
    client = s3_server.client()
    names = [f"rec-{i:05d}.flv" for i in range(1200)]  # more than one S3 listing page
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(bucket, store.prefix + k, io.BytesIO(b"x"), 1), names))
    loc = ingest_location(store)
    with repo.session() as s:
        s.execute(
            insert(SourceObject),
            [
                {"store_url": loc.store_url, "bucket": loc.bucket, "key": loc.full_key(k),
                 "etag": "9dd4e461268c8034f5c8564e155c67a6", "size_bytes": 1, "status": "done"}
                for k in names[5:]
            ],
        )  # fmt: skip
    with counting_statements(repo) as statements:
        plan = plan_scan(store, "", repo, settle_seconds=0)
    assert keys(plan.new) == names[:5] and plan.known == 1195
    assert len(statements) <= 4, statements  # 3 lookups of 500 keys + 1 read of looks


@pytest.mark.servers
def test_fetch_checks_the_listing_and_hashes(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    store = s3_store(s3_server, bucket)
    data = os.urandom(300_000)
    put_raw(s3_server, bucket, store.prefix + "live/show.flv", data)
    (info,) = list(store.list())
    path, sha = fetch_and_hash(store, info, tmp_path / "work")
    assert path == tmp_path / "work" / "show.flv" and path.read_bytes() == data
    assert sha == sha256_file(path)

    put_raw(s3_server, bucket, store.prefix + "live/show.flv", b"replaced")  # after the listing
    with pytest.raises(ObjectNotFoundError, match="changed since it was listed"):
        fetch_to_work(store, info, tmp_path / "work2")
    (gone,) = list(store.list())
    s3_server.client().remove_object(bucket, store.prefix + "live/show.flv")  # deleted mid-flight
    with pytest.raises(ObjectNotFoundError):
        fetch_to_work(store, gone, tmp_path / "work3")
    assert not (tmp_path / "work3" / "show.flv").exists()


@pytest.mark.servers
def test_avatars_come_from_paths_or_the_avatars_store(
    s3_server: WeedServer,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    store = s3_store(s3_server, bucket)
    put_raw(s3_server, bucket, store.prefix + "people/astro.png", b"png bytes")
    put_raw(s3_server, bucket, store.prefix + "people/readme.txt", b"text")
    local = write(tmp_path / "mine.jpg", b"jpg")
    cache = tmp_path / "cache"
    got = resolve_avatars([str(local), "people/astro.png"], store, cache)
    assert got[0] == local.resolve() and got[1].read_bytes() == b"png bytes" and got[1].name == "astro.png"
    assert [p.name for p in resolve_avatars([], store, cache)] == ["astro.png"]
    with pytest.raises(ObjectNotFoundError):
        resolve_avatars(["people/nobody.png"], store, cache)
    with pytest.raises(ConfigurationError):
        resolve_avatars([str(tmp_path / "missing.png")], None, cache)
