"""Avatar versions (supersede by name, retire / reactivate), migration 0003, and the planning snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from talkfactory.errors import FFmpegError, NoFaceError
from talkfactory.infra.lineage.avatars import AvatarVersion, list_avatars, set_avatar_active
from talkfactory.infra.lineage.db import MIGRATIONS_DIR, current_revision, make_engine, upgrade
from talkfactory.infra.lineage.planning import load_planning_snapshot
from talkfactory.infra.lineage.repository import LineageRepository
from tests.infra.lineage_seed import PROV, Seed, sha


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[LineageRepository]:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    yield repo
    repo.engine.dispose()


def states(repo: LineageRepository, name: str) -> list[tuple[int, bool, int | None]]:
    """(id, active, superseded_by) of every version of ``name``, oldest first."""
    return [
        (v.id, v.active, v.superseded_by) for v in list_avatars(repo, include_inactive=True) if v.name == name
    ]


def test_a_new_version_supersedes_the_active_one_and_the_old_file_can_come_back(
    repo: LineageRepository,
) -> None:
    seed = Seed(repo)
    v1, nova = seed.avatar("astro", "v1"), seed.avatar("nova")
    assert states(repo, "astro") == [(v1, True, None)]
    v2 = seed.avatar("astro", "v2")
    assert states(repo, "astro") == [(v1, False, v2), (v2, True, None)]
    assert seed.avatar("astro", "v2") == v2  # registering again changes nothing
    assert states(repo, "astro") == [(v1, False, v2), (v2, True, None)]
    v3 = seed.avatar("astro", "v3")
    assert states(repo, "astro") == [(v1, False, v2), (v2, False, v3), (v3, True, None)]

    # The user puts the first file back: it is the version in use again.
    assert seed.avatar("astro", "v1") == v1
    assert states(repo, "astro") == [(v1, True, None), (v2, False, v3), (v3, False, v1)]
    assert states(repo, "nova") == [(nova, True, None)]
    assert [(v.name, v.id) for v in list_avatars(repo)] == [("astro", v1), ("nova", nova)]


def test_retiring_is_sticky_until_the_name_is_reactivated(repo: LineageRepository) -> None:
    seed = Seed(repo)
    v1 = seed.avatar("astro", "v1")
    v2 = seed.avatar("astro", "v2")
    retired = set_avatar_active(repo, "astro", False)
    assert [(v.id, v.active) for v in retired] == [(v1, False), (v2, False)]
    assert list_avatars(repo) == []

    # The files are still in the library: registering them again does not undo the retirement.
    seed.avatar("astro", "v2")
    seed.avatar("astro", "v1")
    v3 = seed.avatar("astro", "v3")
    assert states(repo, "astro") == [(v1, False, v2), (v2, False, None), (v3, False, None)]

    back = set_avatar_active(repo, "astro", True)
    assert [(v.id, v.active, v.superseded_by) for v in back] == [
        (v1, False, v2),
        (v2, False, None),
        (v3, True, None),
    ]
    assert [v.id for v in list_avatars(repo)] == [v3]
    assert set_avatar_active(repo, "nobody", True) == []


def test_reactivating_picks_the_version_last_in_use(repo: LineageRepository) -> None:
    seed = Seed(repo)
    v1 = seed.avatar("astro", "v1")
    v2 = seed.avatar("astro", "v2")
    seed.avatar("astro", "v1")  # back to v1: v2 (higher id) is superseded by it
    set_avatar_active(repo, "astro", False)
    set_avatar_active(repo, "astro", True)
    assert states(repo, "astro") == [(v1, True, None), (v2, False, v1)]


def test_a_failed_version_does_not_block_supersede_or_retirement(repo: LineageRepository) -> None:
    seed = Seed(repo)
    v1 = seed.avatar("astro", "v1")
    repo.record_avatar_failure(
        content_hash=sha("avatar astro broken"), name="astro", uri="/library/astro.mp4",
        error=NoFaceError("no face", subject="astro.mp4"), prov=PROV,
    )  # fmt: skip
    versions = list_avatars(repo, include_inactive=True)
    broken = next(v for v in versions if v.status == "failed")
    v2 = seed.avatar("astro", "v2")
    assert states(repo, "astro") == [(v1, False, v2), (broken.id, False, v2), (v2, True, None)]
    reactivated = set_avatar_active(repo, "astro", True)
    assert [v.id for v in reactivated if v.active] == [v2]


def test_list_avatars_returns_plain_versions(repo: LineageRepository) -> None:
    av = Seed(repo).avatar("astro")
    (only,) = list_avatars(repo)
    assert isinstance(only, AvatarVersion)
    assert (only.id, only.name, only.content_hash, only.uri, only.kind, only.status) == (
        av, "astro", sha("avatar astro v1"), "/library/astro.mp4", "video", "ok",
    )  # fmt: skip


# -- migration 0003 ----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.servers)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")  # type: ignore[no-any-return]
    return f"sqlite:///{tmp_path / 'lineage.db'}"


def _alembic(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def test_migration_0003_keeps_only_the_newest_avatar_of_a_name_active_and_downgrades(empty_url: str) -> None:
    upgrade(empty_url, "0002")
    engine = make_engine(empty_url)
    try:
        # At 0002 the ORM no longer matches the table, so rows go in as SQL; a render referencing an
        # avatar proves SQLite's in-place ALTERs (a table rebuild would trip the foreign key).
        with engine.begin() as conn:
            ids = [
                conn.execute(
                    text(
                        "INSERT INTO avatars (content_hash, name, uri, kind, status, created_at)"
                        " VALUES (:h, :name, '/x', 'video', 'ok', CURRENT_TIMESTAMP) RETURNING id"
                    ),
                    {"h": f"h{n}", "name": name},
                ).scalar_one()
                for n, name in enumerate(("astro", "nova", "astro", "astro"))
            ]
            rec = conn.execute(
                text(
                    "INSERT INTO recordings (sha256, uri, status, created_at)"
                    " VALUES ('r', '/r.flv', 'ok', CURRENT_TIMESTAMP) RETURNING id"
                )
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO renders (render_key, recording_id, avatar_id, backend, backend_version,"
                    " params_hash, status, attempts) VALUES ('k', :rec, :av, 'w', 'w-1', 'p', 'succeeded', 1)"
                ),
                {"rec": rec, "av": ids[0]},
            )
        a1, nova, a3, a4 = ids
        upgrade(empty_url, "0003")
        assert current_revision(engine) == "0003"
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, active, superseded_by FROM avatars ORDER BY id")).all()
        assert [(i, bool(a), s) for i, a, s in rows] == [
            (a1, False, a4),
            (nova, True, None),
            (a3, False, a4),
            (a4, True, None),
        ]
        fks = inspect(engine).get_foreign_keys("avatars")
        assert [(fk["constrained_columns"], fk["referred_table"]) for fk in fks] == [
            (["superseded_by"], "avatars")
        ]
        assert "ix_avatars_name" in {ix["name"] for ix in inspect(engine).get_indexes("avatars")}

        repo = LineageRepository(engine)
        assert [(v.name, v.id) for v in list_avatars(repo)] == [("astro", a4), ("nova", nova)]
        new = Seed(repo).avatar("astro", "v5")
        assert states(repo, "astro") == [
            (a1, False, a4),
            (a3, False, a4),
            (a4, False, new),
            (new, True, None),
        ]

        command.downgrade(_alembic(empty_url), "0002")
        engine.dispose()
        cols = {c["name"] for c in inspect(engine).get_columns("avatars")}
        assert "active" not in cols and "superseded_by" not in cols
        assert "ix_avatars_name" not in {ix["name"] for ix in inspect(engine).get_indexes("avatars")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM avatars")).scalar() == 5
            assert conn.execute(text("SELECT avatar_id FROM renders")).scalar() == a1
        upgrade(empty_url)
        assert current_revision(engine) == "0006"
    finally:
        engine.dispose()


# -- planning snapshot -------------------------------------------------------------------------------


def test_snapshot_reads_current_clips_sources_and_last_error_types(repo: LineageRepository) -> None:
    seed = Seed(repo)
    rec, old = seed.recording("x", spans=[(1.0, 2.0)], speech="speech-v1", key="first/x.flv")
    seed.source(rec, "second/x.flv")
    current = seed.clips(rec, [(4.0, 5.0), (0.0, 1.0)], speech="speech-v2")
    av = seed.avatar("astro")
    seed.render(rec, old[0], av)
    failed = seed.render(rec, current[0], av, failures=[NoFaceError("a"), FFmpegError("b")], succeed=False)
    other = seed.render(rec, current[1], av, backend="wav2lip")
    silent, _ = seed.recording("silent", spans=[])
    seed.failed_recording("broken")

    snap = load_planning_snapshot(repo)
    assert [(r.id, r.source_key) for r in snap.recordings] == [(rec, "first/x.flv"), (silent, None)]
    assert [(c.id, c.number, c.start_s) for c in snap.clips[rec]] == [
        (current[1], 1, 0.0),
        (current[0], 2, 4.0),
    ]
    assert silent not in snap.clips
    assert old[0] not in snap.renders
    (r,) = snap.renders[current[0]]
    assert (r.id, r.status, r.attempts, r.error_type) == (failed, "failed", 2, "FFmpegError")
    assert r.permanent is False  # FFmpegError is transient, decided when the attempt failed
    assert [x.id for x in snap.renders[current[1]]] == [other]
    assert load_planning_snapshot(repo, backend="weightless").renders.get(current[1]) is None
    assert load_planning_snapshot(repo, prefix="second/").recordings[0].source_key == "second/x.flv"
