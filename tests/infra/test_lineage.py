"""Lineage repository against SQLite (migrated by Alembic, not create_all)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from talkfactory.errors import InvalidMediaError
from talkfactory.infra.lineage.db import current_revision, head_revision, make_engine, upgrade
from talkfactory.infra.lineage.repository import LineageRepository, Provenance

PROV = Provenance(flow_run_id="flow-1", task_run_id="task-1", code_version="0.1.0")


@pytest.fixture
def repo(tmp_path: Path) -> LineageRepository:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    return LineageRepository.from_url(url)


def _recording(repo: LineageRepository, sha: str = "a" * 64) -> int:
    return repo.register_recording(
        uri="/x/rec.flv",
        sha256=sha,
        size_bytes=10,
        duration_s=1.5,
        probe={"format": "flv"},
        warnings=[],
        prov=PROV,
    )


def _avatar(repo: LineageRepository, h: str = "b" * 64) -> int:
    return repo.register_avatar(
        content_hash=h, name="astro", uri="/x/astro.png", kind="image", width=512, height=512, fps=25.0,
        num_frames=1, face_ratio=1.0, track_uri="/c/t.npz", prov=PROV,
    )  # fmt: skip


def test_migration_reaches_head_and_creates_every_table(repo: LineageRepository) -> None:
    assert current_revision(repo.engine) == head_revision()
    tables = set(inspect(repo.engine).get_table_names())
    assert {"recordings", "avatars", "renders", "clips", "attempts", "source_objects"} <= tables


def test_registration_is_idempotent_by_content(repo: LineageRepository) -> None:
    assert _recording(repo) == _recording(repo)
    assert _avatar(repo) == _avatar(repo)
    assert _recording(repo, "c" * 64) != _recording(repo)


def test_render_attempts_count_and_failure_is_recorded(repo: LineageRepository) -> None:
    rec, av = _recording(repo), _avatar(repo)
    kw = dict(
        render_key="k1", recording_id=rec, avatar_id=av, clip_id=None, backend="weightless",
        backend_version="weightless-1", params_hash="p", params={"crf": 20}, prov=PROV,
    )  # fmt: skip
    first = repo.begin_render(**kw)  # type: ignore[arg-type]
    repo.fail_render(first.id, error=InvalidMediaError("bad", subject="rec.flv"), prov=PROV)
    failed = repo.get_render("k1")
    assert failed is not None and failed.status == "failed" and "rec.flv: bad" in (failed.error or "")
    second = repo.begin_render(**kw)  # type: ignore[arg-type]
    assert second.id == first.id and second.attempts == 2 and second.status == "running"
    repo.finish_render(
        second.id, output_uri="/o.mp4", encoder="libx264", duration_s=2.0, wall_s=1.0, stats={}, prov=PROV
    )
    done = repo.get_render("k1")
    assert done is not None and done.status == "succeeded" and done.error is None
    attempts = repo.attempts_for("render", first.id)
    assert [a.status for a in attempts] == ["failed", "succeeded"]
    assert attempts[0].error_type == "InvalidMediaError" and attempts[0].permanent is True
    assert attempts[1].permanent is None
    assert all(a.flow_run_id == "flow-1" for a in attempts)
    rows = repo.renders_for_recording(rec)
    assert rows[0].avatar_name == "astro" and rows[0].render.output_uri == "/o.mp4"


def test_failed_recording_without_hash_is_recorded_once_per_uri(repo: LineageRepository) -> None:
    err = FileNotFoundError("missing")
    a = repo.record_recording_failure(uri="/nope.flv", sha256=None, error=err, prov=PROV)
    b = repo.record_recording_failure(uri="/nope.flv", sha256=None, error=err, prov=PROV)
    assert a == b
    found = repo.find_recording("/nope.flv")
    assert found is not None and found.status == "failed" and "missing" in (found.error or "")
    assert len(repo.attempts_for("recording", a)) == 2


def test_sqlite_engine_uses_wal(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
