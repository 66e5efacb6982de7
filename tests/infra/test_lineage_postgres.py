"""Lineage on a real PostgreSQL: migrations, idempotent registration under races, surviving restarts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, inspect, select

from talkfactory.infra.lineage.db import MIGRATIONS_DIR, current_revision, head_revision, upgrade
from talkfactory.infra.lineage.repository import LineageRepository, ObjectLook, Provenance
from talkfactory.infra.lineage.tables import Export, SourceObject
from tests.fixtures.servers import PostgresServer, postgres_server, postgres_url  # noqa: F401

pytestmark = pytest.mark.servers

PROV = Provenance(flow_run_id="flow-pg", task_run_id="task-pg", code_version="0.1.0")


@pytest.fixture(scope="module")
def pg_repo(postgres_url: str) -> Iterator[LineageRepository]:  # noqa: F811
    upgrade(postgres_url)
    repo = LineageRepository.from_url(postgres_url)
    yield repo
    repo.engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_repo(request: pytest.FixtureRequest, tmp_path: Path) -> LineageRepository:
    if request.param == "postgres":
        return request.getfixturevalue("pg_repo")  # type: ignore[no-any-return]
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    return LineageRepository.from_url(url)


def _bucket() -> str:
    return f"b-{uuid.uuid4().hex[:10]}"


def _register(repo: LineageRepository, bucket: str, key: str, etag: str = "e1") -> tuple[int, bool]:
    state, created = repo.register_source_object(
        store_url=f"s3://{bucket}/", bucket=bucket, key=key, etag=etag, size_bytes=10, prov=PROV
    )
    return state.id, created


def _count(repo: LineageRepository, bucket: str) -> int:
    with repo.session() as s:
        return int(s.scalar(select(func.count()).where(SourceObject.bucket == bucket)) or 0)


def test_migrations_go_up_down_and_up_again_on_postgres(postgres_url: str) -> None:  # noqa: F811
    upgrade(postgres_url)
    repo = LineageRepository.from_url(postgres_url)
    try:
        assert current_revision(repo.engine) == head_revision() == "0006"
        tables = set(inspect(repo.engine).get_table_names())
        assert {"source_objects", "ingest_looks", "exports", "renders", "recordings"} <= tables
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", postgres_url.replace("%", "%%"))
        command.downgrade(cfg, "0001")
        assert "exports" not in inspect(repo.engine).get_table_names()
        cols = {c["name"] for c in inspect(repo.engine).get_columns("source_objects")}
        assert "attempts" not in cols
        command.upgrade(cfg, "head")
        assert current_revision(repo.engine) == "0006"
    finally:
        repo.engine.dispose()


def test_source_object_lifecycle_and_export_links(any_repo: LineageRepository) -> None:
    repo, bucket = any_repo, _bucket()
    sid, created = _register(repo, bucket, "live/a.flv")
    assert created
    assert _register(repo, bucket, "live/a.flv") == (sid, False)
    other, created = _register(repo, bucket, "live/a.flv", etag="e2")  # a new version is a new object
    assert created and other != sid

    known = repo.known_source_objects(bucket, ["live/a.flv", "live/missing.flv"])
    assert set(known) == {("live/a.flv", "e1"), ("live/a.flv", "e2")}
    state = known[("live/a.flv", "e1")]
    assert state.status == "registered" and state.attempts == 0

    assert repo.claim_source_object(sid, expected_status="registered", expected_attempts=0, prov=PROV)
    assert not repo.claim_source_object(sid, expected_status="registered", expected_attempts=0, prov=PROV)
    rec = repo.register_recording(
        uri="/w/a.flv", sha256="c" * 64, size_bytes=10, duration_s=1.0, probe={}, warnings=[], prov=PROV
    )
    repo.mark_source_object(sid, "failed", error=ConnectionError("reset"), recording_id=rec, prov=PROV)
    failed = repo.known_source_objects(bucket, ["live/a.flv"])[("live/a.flv", "e1")]
    assert (
        failed.status == "failed"
        and failed.attempts == 1
        and "ConnectionError: reset" in (failed.error or "")
    )
    assert repo.claim_source_object(sid, expected_status="failed", expected_attempts=1, prov=PROV)
    repo.mark_source_object(sid, "done", sha256="c" * 64, recording_id=rec, prov=PROV)

    av = repo.register_avatar(
        content_hash="d" * 64, name="astro", uri="/a.png", kind="image", width=1, height=1, fps=25.0,
        num_frames=1, face_ratio=1.0, track_uri="/t", prov=PROV,
    )  # fmt: skip
    render = repo.begin_render(
        render_key=f"rk-{bucket}", recording_id=rec, avatar_id=av, clip_id=None, backend="weightless",
        backend_version="w1", params_hash="p", params={}, prov=PROV,
    )  # fmt: skip
    uri = f"s3://exports/{bucket}/a/astro.mp4"
    first = repo.record_export(
        render_id=render.id,
        recording_id=rec,
        source_object_id=sid,
        uri=uri,
        etag="x",
        size_bytes=5,
        prov=PROV,
    )
    again = repo.record_export(
        render_id=render.id,
        recording_id=rec,
        source_object_id=sid,
        uri=uri,
        etag="y",
        size_bytes=6,
        prov=PROV,
    )
    assert first == again
    found = repo.find_export(f"{bucket}/a/astro.mp4")
    assert found is not None and found.etag == "y" and found.source_object_id == sid
    latest = repo.find_source_object(f"s3://{bucket}/live/a.flv")
    assert latest is not None and latest.id == other  # the newest version of that key
    source = repo.find_source_object(str(sid))
    assert source is not None and source.recording_id == rec and source.sha256 == "c" * 64
    attempts = repo.attempts_for("source", sid)
    assert [a.status for a in attempts] == ["failed", "succeeded"]
    assert attempts[0].error_type == "ConnectionError"
    assert [s.id for s in repo.source_objects_for_recording(rec)] == [sid]
    with repo.session() as s:
        assert s.scalar(select(func.count()).select_from(Export).where(Export.uri == uri)) == 1


def test_looks_are_saved_overwritten_and_dropped_on_registration(any_repo: LineageRepository) -> None:
    repo, bucket = any_repo, _bucket()
    repo.save_looks(bucket, [ObjectLook("a.flv", "e1", 5, None), ObjectLook("b.flv", "e1", 7, None)])
    repo.save_looks(bucket, [ObjectLook("a.flv", "e2", 9, None)])
    looks = repo.previous_looks(bucket, ["a.flv", "b.flv", "c.flv"])
    assert {k: (v.etag, v.size_bytes) for k, v in looks.items()} == {"a.flv": ("e2", 9), "b.flv": ("e1", 7)}
    _register(repo, bucket, "a.flv", etag="e2")
    assert set(repo.previous_looks(bucket, ["a.flv", "b.flv"])) == {"b.flv"}


def test_lookups_are_batched(pg_repo: LineageRepository) -> None:
    bucket = _bucket()
    for i in range(7):
        _register(pg_repo, bucket, f"k{i}.flv")
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    from sqlalchemy import event

    event.listen(pg_repo.engine, "before_cursor_execute", count)
    try:
        known = pg_repo.known_source_objects(bucket, [f"k{i}.flv" for i in range(10)], batch_size=3)
    finally:
        event.remove(pg_repo.engine, "before_cursor_execute", count)
    assert len(known) == 7
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 4  # ceil(10 / 3)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_registration_creates_each_object_once(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "postgres":
        repo: LineageRepository = request.getfixturevalue("pg_repo")
    else:
        url = f"sqlite:///{tmp_path / 'lineage.db'}"
        upgrade(url)
        repo = LineageRepository.from_url(url)
    bucket, keys = _bucket(), [f"obj-{i:03d}.flv" for i in range(60)]
    results: dict[str, list[tuple[int, bool]]] = {k: [] for k in keys}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(order: list[str]) -> None:
        try:
            start.wait()
            for key in order:
                results[key].append(_register(repo, bucket, key))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(o,)) for o in (keys, keys[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for key, got in results.items():
        assert len(got) == 2 and got[0][0] == got[1][0], (key, got)
        assert sorted(created for _, created in got) == [False, True], (key, got)
    assert _count(repo, bucket) == len(keys)

    # Two scans retrying the same failed object: exactly one claims it.
    sid = results[keys[0]][0][0]
    repo.mark_source_object(sid, "failed", error="flaky", prov=PROV)
    claims: list[bool] = []
    barrier = threading.Barrier(2)

    def claim() -> None:
        barrier.wait()
        claims.append(repo.claim_source_object(sid, expected_status="failed", expected_attempts=0, prov=PROV))

    pair = [threading.Thread(target=claim) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(timeout=60)
    assert sorted(claims) == [False, True]


def test_postgres_restart_between_steps_of_a_batch(
    pg_repo: LineageRepository,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    bucket = _bucket()
    keys = [f"batch/{i:03d}.flv" for i in range(40)]
    first = {k: _register(pg_repo, bucket, k)[0] for k in keys[:20]}
    postgres_server.restart()  # every pooled connection is now dead
    t0 = time.monotonic()
    rest = {k: _register(pg_repo, bucket, k)[0] for k in keys[20:]}
    assert time.monotonic() - t0 < 60
    again = {k: _register(pg_repo, bucket, k) for k in keys}
    assert {k: sid for k, (sid, _) in again.items()} == {**first, **rest}
    assert not any(created for _, created in again.values())
    assert _count(pg_repo, bucket) == len(keys)


def test_postgres_restart_in_the_middle_of_a_batch(
    pg_repo: LineageRepository,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    """The server goes down while registrations are in flight: each call waits it out, none is lost."""
    bucket = _bucket()
    keys = [f"mid/{i:03d}.flv" for i in range(60)]
    ids: dict[str, int] = {}
    restarted = threading.Event()

    def restart_soon() -> None:
        while len(ids) < 15:
            time.sleep(0.01)
        postgres_server.stop()
        time.sleep(1.0)  # registrations hit a server that refuses connections
        postgres_server.start()
        restarted.set()

    bouncer = threading.Thread(target=restart_soon)
    bouncer.start()
    for key in keys:
        ids[key] = _register(pg_repo, bucket, key)[0]
        time.sleep(0.02)
    bouncer.join(timeout=120)
    assert restarted.is_set()
    assert _count(pg_repo, bucket) == len(keys)
    known = pg_repo.known_source_objects(bucket, keys)
    assert {state.key: state.id for state in known.values()} == ids
