"""Channel exports published to an S3 exports location (SeaweedFS), through ``process-recording``:
each channel's MP4 and sidecars as objects, the manifest at the prefix's root, URLs in lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talkfactory.infra.settings import get_settings
from talkfactory.infra.stores import S3ObjectStore
from tests.fixtures.media import MediaSet
from tests.fixtures.servers import WeedServer

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def test_channel_files_and_the_manifest_land_in_the_bucket(
    s3_server: WeedServer, media: MediaSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talkfactory.flows.process_recording import process_recording
    from talkfactory.pipeline.jobs.model import RenderOptions

    bucket = s3_server.make_bucket()
    env = {
        "TALKFACTORY_HOME": str(tmp_path / "home"),
        "TALKFACTORY_S3_ENDPOINT": s3_server.endpoint,
        "TALKFACTORY_S3_ACCESS_KEY": s3_server.access_key,
        "TALKFACTORY_S3_SECRET_KEY": s3_server.secret_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TALKFACTORY_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        report = process_recording(
            recording=str(media.speech_flv),
            avatars=[str(media.portrait)],
            exports_url=f"s3://{bucket}/out",
            render=RenderOptions(whole_track=True, channels=("tiktok",)),
            executor="local",
        )
    finally:
        get_settings.cache_clear()
    assert report.status == "done", report
    [row] = report.rows
    assert [(e.channel, e.status) for e in row.exports] == [("master", "published"), ("tiktok", "published")]
    store = S3ObjectStore(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, bucket, "out/")
    keys = {o.key for o in store.list()}
    stem = "speech/astronaut"
    for suffix in (".mp4", ".srt", ".vtt", ".jpg", ".json"):
        assert f"tiktok/{stem}{suffix}" in keys, sorted(keys)
    assert {"manifest.json", "manifest.csv", f"{stem}.mp4"} <= keys
    with store.open("manifest.json") as f:
        manifest = json.load(f)
    tiktok = [e for e in manifest["exports"] if e["channel"] == "tiktok"]
    assert len(tiktok) == 1 and tiktok[0]["path"] == f"tiktok/{stem}.mp4"
    assert tiktok[0]["bytes"] == store.stat(f"tiktok/{stem}.mp4").size
    assert (tiktok[0]["width"], tiktok[0]["height"]) == (1080, 1920)
    assert manifest["location"] == f"s3://{bucket}/out"
    assert s3_server.secret_key not in json.dumps(manifest)
