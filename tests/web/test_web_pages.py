"""The page through HTTP (httpx TestClient) on lineage and MP4s from a real flow run."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient

from talkfactory.cli.main import main
from talkfactory.infra.lineage.repository import LineageRepository, Provenance
from talkfactory.web.app import create_app
from tests.fixtures.media import MediaSet
from tests.web.conftest import Factory

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(factory: Factory) -> TestClient:
    return TestClient(create_app(factory.settings), base_url="http://127.0.0.1:8470")


def test_list_shows_the_recording_done_with_its_counts(client: TestClient, factory: Factory) -> None:
    page = client.get("/recordings")
    assert page.status_code == 200
    assert "speech.flv" in page.text and 'data-state="done"' in page.text
    assert client.get("/recordings", params={"state": "rendering"}).text.count("<tr data-state") == 0
    assert client.get("/recordings", params={"state": "done"}).text.count("<tr data-state") == 1
    assert client.get("/recordings", params={"since": "2999-01-01"}).text.count("<tr data-state") == 0


def test_video_streams_whole_and_in_ranges(client: TestClient, factory: Factory) -> None:
    chain = client.get(f"/recordings/{factory.recording_id}/lineage.json").json()
    render = chain["renders"][0]
    whole = client.get(f"/renders/{render['id']}/video.mp4")
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    assert whole.content[4:8] == b"ftyp"
    part = client.get(f"/renders/{render['id']}/video.mp4", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == whole.content[100:200]
    tail = client.get(f"/renders/{render['id']}/video.mp4", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    past = client.get(f"/renders/{render['id']}/video.mp4", headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416


def test_thumbnail_is_a_jpeg_and_cached(client: TestClient, factory: Factory) -> None:
    chain = client.get(f"/recordings/{factory.recording_id}/lineage.json").json()
    rid = chain["renders"][0]["id"]
    thumb = client.get(f"/renders/{rid}/thumb.jpg")
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    assert list((factory.home / "cache" / "thumbs").glob("*.jpg"))


def test_channel_zip_holds_every_export(client: TestClient, factory: Factory) -> None:
    chain = client.get(f"/recordings/{factory.recording_id}/lineage.json").json()
    names = sorted(e["uri"].rsplit("/", 1)[-1] for r in chain["renders"] for e in r["exports"])
    answer = client.get(f"/recordings/{factory.recording_id}/channels/master.zip")
    assert answer.status_code == 200
    with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
        assert sorted(zf.namelist()) == names
        for info in zf.infolist():
            assert zf.read(info.filename)[4:8] == b"ftyp"
    assert client.get(f"/recordings/{factory.recording_id}/channels/nope.zip").status_code == 404


def test_dot_dot_keys_and_uris_outside_the_stores_are_refused(client: TestClient, factory: Factory) -> None:
    secret = factory.home.parent / "secret.mp4"
    secret.write_bytes(b"not for you")
    for path in (
        "/files/exports/..%2Fsecret.mp4",
        "/files/exports/%2E%2E/secret.mp4",
        "/files/exports/%2Fetc%2Fpasswd",
    ):
        answer = client.get(path)
        assert answer.status_code in (403, 404), path
        assert b"not for you" not in answer.content
    # A lineage row pointing outside every store is not served either.
    repo = LineageRepository.from_url(factory.settings.resolved_database_url)
    chain = client.get(f"/recordings/{factory.recording_id}/lineage.json").json()
    export_id = chain["renders"][0]["exports"][0]["id"]
    from sqlalchemy import update

    from talkfactory.infra.lineage.tables import Export

    with repo.session() as s:
        old = s.get_one(Export, export_id).uri
        s.execute(update(Export).where(Export.id == export_id).values(uri=secret.as_uri()))
    try:
        answer = client.get(f"/exports/{export_id}")
        assert answer.status_code == 403 and b"not for you" not in answer.content
    finally:
        with repo.session() as s:
            s.execute(update(Export).where(Export.id == export_id).values(uri=old))
    # A good key in the exports store downloads.
    key = chain["renders"][0]["exports"][0]["uri"].split(str(factory.exports), 1)[1].lstrip("/")
    assert client.get(f"/files/exports/{key}").status_code == 200


def test_upload_puts_media_in_the_ingest_folder_and_refuses_text(
    client: TestClient, factory: Factory, media: MediaSet
) -> None:
    origin = {"Origin": "http://127.0.0.1:8470"}
    files = [
        ("files", ("../../evil name.flv", media.speech_flv.read_bytes(), "video/x-flv")),
        ("files", ("notes.flv", b"just some text, not a recording\n" * 10, "video/x-flv")),
        ("files", ("script.sh", b"#!/bin/sh\n", "text/plain")),
    ]
    answer = client.post("/upload", files=files, headers=origin)
    assert answer.status_code == 422  # one was refused
    stored = sorted(p.name for p in factory.ingest.iterdir())
    assert stored == ["evil name.flv"]
    assert (factory.ingest / "evil name.flv").read_bytes() == media.speech_flv.read_bytes()
    assert "refused" in answer.text and "not a recording type" in answer.text
    # Without an Origin (a cross-site form post cannot prove one) the upload is refused.
    assert client.post("/upload", files=files[:1]).status_code == 403
    (factory.ingest / "evil name.flv").unlink()


def test_lineage_json_is_the_pages_chain_and_names_ambiguity(
    factory: Factory, capsys: pytest.CaptureFixture[str], media: MediaSet
) -> None:
    assert main(["lineage", "--json", "speech.flv"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["recording"]["id"] == factory.recording_id
    assert {r["avatar"] for r in doc["renders"]} == {"astronaut", "zoom"}
    for r in doc["renders"]:
        assert r["status"] == "succeeded" and r["exports"][0]["channel"] == "master"
        assert r["flow_run_id"] in doc["flow_run_ids"] and r["wall_s"] > 0
    # A second recording exporting the same name: the name is ambiguous, listed, not picked.
    repo = LineageRepository.from_url(factory.settings.resolved_database_url)
    other = repo.register_recording(
        uri="file:///elsewhere/other.flv", sha256="f" * 64, size_bytes=1, duration_s=1.0, probe={},
        warnings=["recording truncated: the last 3.0 s could not be read"], prov=Provenance(),
    )  # fmt: skip
    name = doc["renders"][0]["exports"][0]["uri"].rsplit("/", 1)[-1]
    from talkfactory.infra.lineage.tables import Export

    with repo.session() as s:
        s.add(Export(render_id=doc["renders"][0]["id"], recording_id=other, uri=f"file:///elsewhere/{name}"))
    assert main(["lineage", name]) == 1
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "ambiguous" in said and f"#{other}" in said and f"#{factory.recording_id}" in said
    assert main(["lineage", "--json", str(other)]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == [
        "recording truncated: the last 3.0 s could not be read"
    ]


def test_channels_show_their_files_and_failures_and_zip_only_what_was_published(
    client: TestClient, factory: Factory
) -> None:
    import shutil
    from urllib.parse import unquote, urlparse

    from talkfactory.infra.lineage.rows import ExportDetails

    repo = LineageRepository.from_url(factory.settings.resolved_database_url)
    chain = client.get(f"/recordings/{factory.recording_id}/lineage.json").json()
    first = chain["renders"][0]
    master = unquote(urlparse(first["exports"][0]["uri"]).path)
    made = factory.exports / "tiny" / "speech" / "made.mp4"
    made.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(master, made)
    tiny = {"channel": "tiny", "spec_version": "t/tiny.v1"}
    published = ExportDetails(
        **tiny, variant={"width": 96, "height": 160}, loudness_lufs=-14.1, duration_s=2.0
    )
    refused = ExportDetails(**tiny, status="failed", error="tiny: loudness -20.0 LUFS")
    for uri, details in ((made.as_uri(), published), ((made.parent / "refused.mp4").as_uri(), refused)):
        repo.record_export(
            render_id=first["id"],
            recording_id=factory.recording_id,
            source_object_id=None,
            uri=uri,
            etag=None,
            size_bytes=made.stat().st_size,
            prov=Provenance(),
            details=details,
        )
    page = client.get(f"/recordings/{factory.recording_id}").text
    assert "Channel “master”" in page and "Channel “tiny”" in page
    assert page.index("Channel “master”") < page.index("Channel “tiny”")
    assert "96×160" in page and "-14.1 LUFS" in page and "failed: tiny: loudness -20.0 LUFS" in page
    answer = client.get(f"/recordings/{factory.recording_id}/channels/tiny.zip")
    assert answer.status_code == 200
    with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
        assert zf.namelist() == ["made.mp4"]
    exported = client.get(f"/recordings/{factory.recording_id}/lineage.json").json()
    assert {e["channel"] for r in exported["renders"] for e in r["exports"]} == {"master", "tiny"}
