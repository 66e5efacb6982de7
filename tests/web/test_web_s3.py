"""Renders in an S3 exports bucket stream through the page with ranges; thumbnails and ZIPs work too."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from talkfactory.infra.lineage.repository import LineageRepository, Provenance
from talkfactory.infra.lineage.tables import Avatar, Export, Render
from talkfactory.infra.settings import Settings
from talkfactory.infra.stores import S3ObjectStore
from talkfactory.web.app import create_app
from tests.fixtures.media import MediaSet
from tests.fixtures.servers import WeedServer

pytestmark = pytest.mark.servers


def test_s3_export_streams_in_ranges(s3_server: WeedServer, media: MediaSet, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    store = S3ObjectStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket, "out/")
    store.put_file(media.template, "show/zoom.mp4")
    data = media.template.read_bytes()
    settings = Settings(
        home=tmp_path / "home",
        exports_url=f"s3://{bucket}/out/",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=SecretStr(s3_server.secret_key),
    )
    client = TestClient(create_app(settings))  # creates the schema
    repo = LineageRepository.from_url(settings.resolved_database_url)
    rec = repo.register_recording(
        uri="s3://in/show.flv", sha256="c" * 64, size_bytes=1, duration_s=2.0, probe={}, warnings=[],
        prov=Provenance(),
    )  # fmt: skip
    with repo.session() as s:
        s.add(Avatar(id=1, content_hash="a" * 64, name="zoom", uri="file:///x/zoom.mp4", kind="video"))
        s.add(Render(id=1, render_key="k" * 64, recording_id=rec, avatar_id=1, backend="weightless",
                     backend_version="1", params_hash="p", status="succeeded", attempts=1))  # fmt: skip
        s.flush()
        s.add(Export(render_id=1, recording_id=rec, uri=f"s3://{bucket}/out/show/zoom.mp4"))
    part = client.get("/renders/1/video.mp4", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert client.get("/renders/1/video.mp4").content == data
    assert client.get("/renders/1/thumb.jpg").content[:3] == b"\xff\xd8\xff"
    with zipfile.ZipFile(io.BytesIO(client.get(f"/recordings/{rec}/channels/master.zip").content)) as zf:
        assert zf.read("zoom.mp4") == data
    # Another bucket is not one of the page's stores.
    with repo.session() as s:
        s.add(Export(render_id=1, recording_id=rec, uri="s3://secrets/passwords.mp4"))
    assert client.get(f"/exports/{2}").status_code == 403
