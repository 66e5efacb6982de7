"""The repository's reads return typed rows (``lineage.rows``) that carry every column of their table."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from talkfactory.errors import InvalidKeyError, NoFaceError, StoreUnavailableError
from talkfactory.infra.lineage import rows as r
from talkfactory.infra.lineage import tables as t
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LOCAL_BUCKET, LineageRepository, Provenance
from tests.infra.lineage_seed import PROV, Seed


@pytest.fixture
def repo(tmp_path: Path) -> LineageRepository:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    return LineageRepository.from_url(url)


@pytest.mark.parametrize(
    ("row_type", "table"),
    [
        (r.RecordingRow, t.Recording),
        (r.AvatarRow, t.Avatar),
        (r.ClipRecord, t.Clip),
        (r.RenderRow, t.Render),
        (r.ExportRow, t.Export),
        (r.SourceObjectRow, t.SourceObject),
        (r.AttemptRow, t.Attempt),
    ],
)
def test_each_row_type_has_exactly_its_tables_columns(row_type: type, table: type[t.Base]) -> None:
    # A column added by a migration but not here would silently never reach a caller.
    assert {f.name for f in fields(row_type)} == {c.key for c in table.__table__.columns}


def test_reads_by_id_return_typed_rows_or_none(repo: LineageRepository) -> None:
    seed = Seed(repo)
    rec, (clip,) = seed.recording("show", spans=[(1.0, 2.5)])
    av = seed.avatar("astro")
    render = seed.render(rec, clip, av, failures=[NoFaceError("no face", subject="astro.mp4")])

    recording = repo.get_recording(rec)
    assert isinstance(recording, r.RecordingRow) and recording.uri == "/data/recordings/show.flv"
    assert recording.warnings == () and recording.status == "ok" and recording.flow_run_id == PROV.flow_run_id
    got_clip = repo.get_clip(clip)
    assert got_clip is not None and got_clip.recording_id == rec
    assert (got_clip.start_s, got_clip.end_s) == (1.0, 2.5)
    avatar = repo.get_avatar(av)
    assert avatar is not None and avatar.name == "astro" and avatar.active and avatar.superseded_by is None
    row = repo.get_render_row(render)
    assert row is not None and row.status == "succeeded" and row.attempts == 2 and row.clip_id == clip
    assert repo.get_recording(999) is None and repo.get_clip(999) is None
    assert repo.get_avatar(999) is None and repo.get_render_row(999) is None

    (overview,) = repo.renders_for_recording(rec)
    assert overview.render == row and overview.avatar_name == "astro" and overview.clip_span == "1.0-2.5 s"
    failed, succeeded = repo.attempts_for("render", render)
    assert (failed.status, failed.error_type, failed.permanent) == ("failed", "NoFaceError", True)
    assert (succeeded.status, succeeded.permanent) == ("succeeded", None)
    assert repo.find_render_by_output(f"/out/{render}.mp4") == row


def test_source_object_rows_know_their_uri(repo: LineageRepository) -> None:
    prov = Provenance()
    s3, _ = repo.register_source_object(
        store_url="s3://in/", bucket="in", key="live/a.flv", etag="e", size_bytes=1, prov=prov
    )
    local, _ = repo.register_source_object(
        store_url="file:///drop/", bucket=LOCAL_BUCKET, key="/drop/b.flv", etag="e", size_bytes=1, prov=prov
    )
    assert [o.uri for o in repo.source_objects()] == ["s3://in/live/a.flv", "file:///drop/b.flv"]
    found = repo.find_source_object("file:///drop/b.flv")
    assert found is not None and found.id == local.id and found.status == "registered"
    assert repo.find_source_object(str(s3.id)) == repo.source_objects(bucket="in")[0]
    repo.mark_source_object(
        s3.id, "quarantined", error=InvalidKeyError("bad key", subject="live/a.flv"), prov=prov
    )
    repo.mark_source_object(
        local.id, "failed", error=StoreUnavailableError("down", subject="drop"), prov=prov
    )
    (quarantined,) = repo.attempts_for("source", s3.id)
    (failed,) = repo.attempts_for("source", local.id)
    assert (quarantined.status, quarantined.error_type, quarantined.permanent) == (
        "quarantined",
        "InvalidKeyError",
        True,
    )
    assert (failed.status, failed.permanent) == ("failed", False)
