"""End to end on real servers: recordings in an S3 bucket in, MP4s in another bucket out, all in lineage."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from talkfactory.cli import common as cli_common
from talkfactory.cli.scan import cmd_scan, print_ingest_lineage
from talkfactory.flows.scan_ingest import scan_ingest
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import RENDER_DONE, Export, Recording, Render, SourceObject
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.jobs.model import RenderOptions
from tests.fixtures.media import MediaSet, ffmpeg, media  # noqa: F401
from tests.fixtures.servers import WeedServer, postgres_server, postgres_url, s3_server  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recordings(media: MediaSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:  # noqa: F811
    """Two short, different speech FLVs and one corrupt object, as the bytes to upload."""
    root = tmp_path_factory.mktemp("recordings")
    first, second = root / "first.flv", root / "second.flv"
    ffmpeg("-i", str(media.speech_flv), "-t", "3.5", "-c", "copy", str(first))
    ffmpeg(
        "-ss", "5", "-i", str(media.speech_flv), "-t", "3", "-c:v", "libx264", "-preset", "ultrafast",
        "-c:a", "aac", "-f", "flv", str(second),
    )  # fmt: skip
    return {
        "live/first.flv": first.read_bytes(),
        "live/2024/second.flv": second.read_bytes(),
        "live/broken.flv": b"FLV\x01\x05" + bytes(range(256)) * 40,
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        upgrade(url)
        monkeypatch.setenv("TALKFACTORY_DATABASE_URL", url)
    get_settings.cache_clear()
    yield get_settings().resolved_database_url
    get_settings.cache_clear()


@pytest.fixture
def s3_env(s3_server: WeedServer, monkeypatch: pytest.MonkeyPatch, database: str) -> WeedServer:  # noqa: F811
    monkeypatch.setenv("TALKFACTORY_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("TALKFACTORY_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("TALKFACTORY_S3_SECRET_KEY", s3_server.secret_key)
    get_settings.cache_clear()
    return s3_server


def ffprobe_streams(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return sorted(s["codec_type"] for s in json.loads(out)["streams"])


@pytest.mark.servers
def test_scan_renders_new_recordings_once_and_records_everything(
    s3_env: WeedServer,
    database: str,
    recordings: dict[str, bytes],
    media: MediaSet,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = s3_env
    client = server.client()
    ingest, exports = server.make_bucket(), server.make_bucket()
    for key, data in recordings.items():
        client.put_object(ingest, key, io.BytesIO(data), len(data))
    client.put_object(ingest, "live/line\nbreak.flv", io.BytesIO(b"x"), 1)
    client.put_object(ingest, "live/notes.txt", io.BytesIO(b"not media"), 9)
    avatars = [str(media.portrait), str(media.template)]

    summary = scan_ingest(
        ingest_url=f"s3://{ingest}/live",
        avatars=avatars,
        exports_url=f"s3://{exports}/out",
        settle_seconds=0,
        render=RenderOptions(whole_track=True),  # one MP4 per recording per avatar
    )

    items = {i["key"]: i for i in summary["items"]}
    assert set(items) == {"first.flv", "2024/second.flv", "broken.flv", "line\nbreak.flv"}
    assert items["first.flv"]["status"] == "done", items["first.flv"]
    assert items["2024/second.flv"]["status"] == "done", items["2024/second.flv"]
    assert items["broken.flv"]["status"] == "quarantined"
    assert f"s3://{ingest}/live/broken.flv: not a media file" in items["broken.flv"]["error"]
    assert items["line\nbreak.flv"]["status"] == "quarantined"
    assert "control character" in items["line\nbreak.flv"]["error"]
    assert summary["ignored"] == 1

    # One MP4 per recording per avatar, under <recording key without extension>/<avatar>.mp4.
    published = {o.object_name: o for o in client.list_objects(exports, recursive=True)}
    assert set(published) == {
        "out/first/astronaut.mp4",
        "out/first/template.mp4",
        "out/2024/second/astronaut.mp4",
        "out/2024/second/template.mp4",
    }
    local = tmp_path / "check.mp4"
    client.fget_object(exports, "out/2024/second/template.mp4", str(local))
    assert ffprobe_streams(local) == ["audio", "video"]
    assert set(items["first.flv"]["exports"]) == {
        f"s3://{exports}/out/first/astronaut.mp4",
        f"s3://{exports}/out/first/template.mp4",
    }

    repo = LineageRepository.from_url(database)
    with repo.session() as s:
        sources = {o.key: o for o in s.scalars(select(SourceObject).where(SourceObject.bucket == ingest))}
        assert set(sources) == {
            "live/first.flv",
            "live/2024/second.flv",
            "live/broken.flv",
            "live/line\nbreak.flv",
        }
        for key in ("live/first.flv", "live/2024/second.flv"):
            src = sources[key]
            assert src.status == "done" and src.error is None and src.attempts == 1
            assert src.sha256 == hashlib.sha256(recordings[key]).hexdigest()
            assert src.store_url == f"s3://{ingest}/live/" and src.flow_run_id
            rec = s.get_one(Recording, src.recording_id)
            assert rec.sha256 == src.sha256 and rec.status == "ok"
            renders = s.scalars(select(Render).where(Render.recording_id == rec.id)).all()
            assert len(renders) == 2 and all(r.status in RENDER_DONE for r in renders)
            exported = s.scalars(select(Export).where(Export.source_object_id == src.id)).all()
            assert sorted(e.render_id for e in exported) == sorted(r.id for r in renders)
            assert all(
                e.recording_id == rec.id and e.uri.startswith(f"s3://{exports}/out/") for e in exported
            )
            assert all(e.size_bytes == published[e.uri.split("/", 3)[3]].size for e in exported)
        broken = sources["live/broken.flv"]
        assert broken.status == "quarantined" and "not a media file" in (broken.error or "")
        assert broken.recording_id is not None
        assert s.get_one(Recording, broken.recording_id).status == "failed"
        assert sources["live/line\nbreak.flv"].status == "quarantined"
        render_count = len(s.scalars(select(Render)).all())
        # Credentials never reach lineage: look through every text column of every table.
        for table in inspect(repo.engine).get_table_names():
            dump = " ".join(str(row) for row in s.execute(text(f'SELECT * FROM "{table}"')).all())
            assert server.secret_key not in dump and server.access_key not in dump, table
    assert repo.attempts_for("source", sources["live/broken.flv"].id)[0].status == "quarantined"
    work = get_settings().work_dir / "ingest"
    assert not (work / str(sources["live/first.flv"].id)).exists(), "work files of done objects are removed"

    # The chain from an export back to its source object.
    monkeypatch.setattr(cli_common.out, "width", 200)
    capsys.readouterr()
    assert print_ingest_lineage(f"s3://{exports}/out/first/astronaut.mp4")
    shown = capsys.readouterr().out
    assert f"s3://{ingest}/live/first.flv" in shown and "astronaut" in shown and "succeeded" in shown

    # A second scan does nothing: no new renders, nothing uploaded again (through the CLI command).
    capsys.readouterr()
    args = argparse.Namespace(
        ingest=f"s3://{ingest}/live", avatar=avatars, exports=f"s3://{exports}/out", settle=0.0,
        dry_run=False, prefix="", backend="weightless", checkpoint=None, encoder=None, whole_track=True,
    )  # fmt: skip
    assert cmd_scan(args) == 0
    assert "nothing new" in capsys.readouterr().out
    again = {o.object_name: (o.etag, o.last_modified) for o in client.list_objects(exports, recursive=True)}
    assert again == {k: (o.etag, o.last_modified) for k, o in published.items()}
    with repo.session() as s:
        assert len(s.scalars(select(Render)).all()) == render_count
        assert s.scalar(select(SourceObject.attempts).where(SourceObject.key == "live/first.flv")) == 1
    repo.engine.dispose()


def test_drop_folder_scan_waits_for_young_files_and_survives_a_vanished_one(
    tf_home: Path,
    recordings: dict[str, bytes],
    media: MediaSet,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import time

    import talkfactory.tasks.ingest as ingest_tasks

    drop, exports = tmp_path / "drop", tmp_path / "exports"
    drop.mkdir()
    old = time.time() - 3600
    for name in ("show.flv", "gone.flv"):
        (drop / name).write_bytes(recordings["live/first.flv"] if name == "show.flv" else b"FLV soon gone")
        os.utime(drop / name, (old, old))
    (drop / "uploading.flv").write_bytes(b"FLV\x01 half")  # modified just now
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
        "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "flv",
        str(drop / "quiet.flv"),
    )  # fmt: skip
    os.utime(drop / "quiet.flv", (old, old))

    from talkfactory.pipeline.ingest import fetch_and_hash as real_fetch

    def fetch_after_delete(store, info, work_dir):
        if info.key == "gone.flv":
            (drop / "gone.flv").unlink()  # deleted between the listing and the download
        return real_fetch(store, info, work_dir)

    monkeypatch.setattr(ingest_tasks, "fetch_and_hash", fetch_after_delete)
    speech = {"min_clip": 2.0, "max_clip": 6.0}  # the default: one MP4 per speech clip and avatar
    summary = scan_ingest(
        ingest_url=str(drop),
        avatars=[str(media.portrait)],
        exports_url=str(exports),
        settle_seconds=60,
        speech=speech,
    )
    items = {i["key"]: i for i in summary["items"]}
    assert items["show.flv"]["status"] == "done", items["show.flv"]
    assert items["uploading.flv"]["status"] == "waiting" and "ago" in items["uploading.flv"]["error"]
    assert items["gone.flv"]["status"] == "quarantined" and "no such object" in items["gone.flv"]["error"]
    assert items["quiet.flv"]["status"] == "no speech" and not items["quiet.flv"]["exports"]
    clips = sorted((exports / "show").glob("astronaut__clip*.mp4"))
    assert clips and clips[0].name == "astronaut__clip001.mp4" and clips[0].stat().st_size > 0
    assert items["show.flv"]["exports"] == [p.as_uri() for p in clips]
    assert sorted(p.name for p in drop.iterdir()) == ["quiet.flv", "show.flv", "uploading.flv"]  # left alone
    assert (drop / "show.flv").read_bytes() == recordings["live/first.flv"]

    # The upload finishes, and its writer sets an old mtime (like `cp -p`): the size moved since the
    # last look, so it waits one more scan; the scan after that takes it (and finds it is not media).
    (drop / "uploading.flv").write_bytes(b"FLV\x01 complete but still not a video")
    os.utime(drop / "uploading.flv", (old, old))

    def scan() -> dict[str, tuple[str, str]]:
        result = scan_ingest(
            ingest_url=str(drop),
            avatars=[str(media.portrait)],
            exports_url=str(exports),
            settle_seconds=60,
            speech=speech,
        )
        assert result["known"] == 2  # show.flv and quiet.flv (gone.flv is not listed any more)
        return {i["key"]: (i["status"], i["error"]) for i in result["items"]}

    assert scan() == {"uploading.flv": ("waiting", "still changing: 9 -> 35 bytes since the last scan")}
    status, error = scan()["uploading.flv"]
    assert status == "quarantined" and "not a media file" in error


@pytest.mark.servers
def test_scan_level_problems_fail_before_anything_is_claimed(
    s3_env: WeedServer,
    database: str,
    media: MediaSet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from talkfactory.errors import ObjectNotFoundError, StoreAccessError

    server = s3_env
    ingest = server.make_bucket()
    server.client().put_object(ingest, "a.flv", io.BytesIO(b"FLV"), 3)

    def scan(ingest_url: str, exports_url: str) -> dict[str, object]:
        return scan_ingest(
            ingest_url=ingest_url, avatars=[str(media.portrait)], exports_url=exports_url, settle_seconds=0
        )

    with pytest.raises(ObjectNotFoundError, match="tf-no-such-bucket"):
        scan(f"s3://{ingest}", "s3://tf-no-such-bucket/out")
    with pytest.raises(ObjectNotFoundError, match="missing"):
        scan(f"s3://{ingest}-missing", f"s3://{ingest}/out")
    monkeypatch.setenv("TALKFACTORY_S3_SECRET_KEY", "not-the-secret")
    get_settings.cache_clear()
    with pytest.raises(StoreAccessError) as wrong:
        scan(f"s3://{ingest}", f"s3://{ingest}/out")
    assert "not-the-secret" not in str(wrong.value)
    repo = LineageRepository.from_url(database)
    assert repo.source_objects(bucket=ingest) == []
    repo.engine.dispose()


def test_a_failed_publish_is_retried_by_the_next_scan_without_rendering_again(
    tf_home: Path,
    recordings: dict[str, bytes],
    media: MediaSet,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import time

    import talkfactory.pipeline.jobs.execute as execute
    from talkfactory.errors import StoreAccessError

    drop, exports = tmp_path / "drop", tmp_path / "exports"
    drop.mkdir()
    (drop / "show.flv").write_bytes(recordings["live/first.flv"])
    old = time.time() - 3600
    os.utime(drop / "show.flv", (old, old))

    publish = execute.publish_file

    def refuse(*args: object) -> object:
        raise StoreAccessError("AccessDenied: writes are not allowed", subject="exports")

    def scan() -> dict[str, object]:
        result = scan_ingest(
            ingest_url=str(drop),
            avatars=[str(media.portrait)],
            exports_url=str(exports),
            render=RenderOptions(whole_track=True),
        )
        (item,) = result["items"]
        return item  # type: ignore[no-any-return]

    monkeypatch.setattr(execute, "publish_file", refuse)
    first = scan()
    # The exports location refusing writes is not the recording's fault: failed, so it is retried.
    assert first["status"] == "failed" and "AccessDenied" in str(first["error"])
    monkeypatch.setattr(execute, "publish_file", publish)
    second = scan()
    assert second["status"] == "done" and second["exports"] == [(exports / "show" / "astronaut.mp4").as_uri()]
    repo = LineageRepository.from_url(get_settings().resolved_database_url)
    with repo.session() as s:
        (src,) = s.scalars(select(SourceObject)).all()
        (render,) = s.scalars(select(Render)).all()
        assert src.status == "done" and src.attempts == 2 and src.error is None
        assert render.attempts == 2 and render.status == "succeeded"
        assert (render.stats or {}).get("published_from_spool"), "the retry published, it did not render"
    assert not list((get_settings().work_dir / "renders").glob("*.mp4")), "the spooled render was published"
    assert [a.status for a in repo.attempts_for("source", src.id)] == ["failed", "succeeded"]
    repo.engine.dispose()
