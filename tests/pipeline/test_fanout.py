"""pipeline.fanout: job identities, GPU slot names, and moving clip audio and avatars between machines.

Stores are real: folders under tmp_path, and SeaweedFS (``s3_server``) for the S3 cases.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from talkfactory.errors import ConfigurationError, ObjectNotFoundError
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.fanout import (
    RenderJob,
    avatar_sources,
    gpu_name,
    gpu_slot_name,
    idempotency_key,
    job_variant,
    local_copy,
    max_overlap,
    share_clip_audio,
)
from tests.fixtures.servers import WeedServer, s3_server  # noqa: F401

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
REC_SHA = hashlib.sha256(b"recording").hexdigest()
PARAMS = hashlib.sha256(b"params").hexdigest()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    """Settings for this test only: no .env, and nothing the developer's environment sets for these."""
    base: dict[str, Any] = {
        "home": tmp_path / "home",
        "avatars_url": None,
        "work_url": None,
        "gpu": None,
        "s3_endpoint": None,
    }
    # _env_file=None: a developer's .env must not leak in (passed through the dict: mypy does not
    # know pydantic-settings' init-only arguments).
    return Settings(**{"_env_file": None, **base, **kw})


@pytest.fixture
def s3_settings(s3_server: WeedServer, tmp_path: Path) -> Settings:  # noqa: F811
    return make_settings(
        tmp_path,
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )


# -- max_overlap ------------------------------------------------------------------------------------


def test_back_to_back_intervals_do_not_overlap() -> None:
    assert max_overlap([(at(0), at(5)), (at(5), at(9)), (at(9), at(10))]) == 1


def test_back_to_back_in_any_order() -> None:
    assert max_overlap([(at(9), at(10)), (at(0), at(5)), (at(5), at(9))]) == 1


def test_a_nested_interval_overlaps_its_container() -> None:
    assert max_overlap([(at(0), at(10)), (at(2), at(3))]) == 2


def test_three_at_once_among_others() -> None:
    intervals = [(at(0), at(10)), (at(1), at(4)), (at(3), at(6)), (at(7), at(8)), (at(11), at(12))]
    assert max_overlap(intervals) == 3


def test_overlapping_by_a_microsecond_counts() -> None:
    assert max_overlap([(at(0), at(5) + timedelta(microseconds=1)), (at(5), at(9))]) == 2


def test_no_intervals_no_overlap() -> None:
    assert max_overlap([]) == 0


def test_max_overlap_of_a_generator_matches_the_list() -> None:
    intervals = [(at(0), at(5)), (at(5), at(9)), (at(9), at(10))]
    assert max_overlap(iv for iv in intervals) == max_overlap(intervals) == 1


# -- RenderJob.identity and idempotency keys ----------------------------------------------------------


def job(**kw: Any) -> RenderJob:
    base: dict[str, Any] = dict(
        recording_id=7,
        clip_id=70,
        clip_number=2,
        avatar="s3://avatars/astro.png",
        avatar_id=3,
        exports_url="s3://exports/",
        export_key="live/show/astro__clip002.mp4",
        source_object_id=11,
    )
    return RenderJob(**{**base, **kw})


def test_identity_is_stable_for_the_same_job() -> None:
    assert job().identity(PARAMS, "weightless-1.0.0") == job().identity(PARAMS, "weightless-1.0.0")


@pytest.mark.parametrize(
    "change",
    [
        {"params_hash": hashlib.sha256(b"other params").hexdigest()},
        {"backend_version": "weightless-1.0.1"},
        {"avatar_id": 4},
        {"clip_id": 71},
        {"recording_id": 8},
    ],
    ids=lambda c: next(iter(c)),
)
def test_identity_changes_with_what_decides_the_render(change: dict[str, Any]) -> None:
    base = job().identity(PARAMS, "weightless-1.0.0")
    params = change.pop("params_hash", PARAMS)
    version = change.pop("backend_version", "weightless-1.0.0")
    assert job(**change).identity(params, version) != base


def test_identity_ignores_where_things_live_and_how_the_export_is_named() -> None:
    # The job is the same render whatever URL the worker reads the avatar from or the export is named.
    same = job(
        clip_number=5,
        avatar="/library/astro.png",
        exports_url="/srv/exports",
        export_key="other/name.mp4",
        source_object_id=None,
    )
    assert same.identity(PARAMS, "v") == job().identity(PARAMS, "v")


def test_identity_keeps_long_backend_versions_apart() -> None:
    a = "wav2lip-1.0.0+" + "0" * 15 + "1"
    b = "wav2lip-1.0.0+" + "0" * 15 + "2"
    assert job().identity(PARAMS, a) != job().identity(PARAMS, b)


def test_parameters_are_the_render_clip_flow_parameters() -> None:
    assert job().parameters() == {
        "recording_id": 7,
        "clip_id": 70,
        "clip_number": 2,
        "avatar": "s3://avatars/astro.png",
        "avatar_id": 3,
        "exports_url": "s3://exports/",
        "export_key": "live/show/astro__clip002.mp4",
        "source_object_id": 11,
    }


def test_idempotency_key_separates_export_variants_and_forced_redos() -> None:
    job = RenderJob(1, 2, 1, "/a.png", 3, "s3://exports/", "live/show/a__clip001.mp4")
    common = {"backend": "weightless", "checkpoint": None, "video_encoder": None, "force": False}
    identity = job.identity("p" * 64, "weightless-1")
    base = idempotency_key(identity, 0, job_variant(job, common))
    assert base == idempotency_key(identity, 0, job_variant(job, {**common, "force": True}))
    elsewhere = RenderJob(1, 2, 1, "/a.png", 3, "s3://other/", "live/show/a__clip001.mp4")
    assert idempotency_key(identity, 0, job_variant(elsewhere, common)) != base
    assert idempotency_key(identity, 0, job_variant(job, {**common, "video_encoder": "libx264"})) != base
    forced = idempotency_key(identity, 0, job_variant(job, common), force_token="run-1")
    assert forced != base
    assert forced == idempotency_key(identity, 0, job_variant(job, common), force_token="run-1")
    assert forced != idempotency_key(identity, 0, job_variant(job, common), force_token="run-2")


def test_idempotency_key_moves_on_with_each_resubmission() -> None:
    identity = job().identity(PARAMS, "v")
    keys = [idempotency_key(identity, n) for n in range(4)]
    assert len(set(keys)) == 4
    assert idempotency_key(identity, 2) == keys[2]
    assert all(identity in k for k in keys)
    other = job(avatar_id=4).identity(PARAMS, "v")
    assert idempotency_key(other, 0) != keys[0]


# -- GPU names ----------------------------------------------------------------------------------------


def test_talkfactory_gpu_wins_over_cuda_visible_devices(tmp_path: Path) -> None:
    s = make_settings(tmp_path, gpu="cpu1")
    assert gpu_name(s, {"CUDA_VISIBLE_DEVICES": "2,3"}) == "cpu1"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, "2"),
        ({"CUDA_VISIBLE_DEVICES": " 1 , 0"}, "1"),
        ({"CUDA_VISIBLE_DEVICES": "5"}, "5"),
        ({"CUDA_VISIBLE_DEVICES": ""}, "cpu"),
        ({}, "cpu"),
    ],
)
def test_gpu_name_from_the_environment(tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    assert gpu_name(make_settings(tmp_path), environ) == expected


def test_gpu_name_reads_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    assert gpu_name(make_settings(tmp_path)) == "6"


def test_gpu_slot_name_is_per_host_and_device(tmp_path: Path) -> None:
    host = socket.gethostname()
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert gpu_slot_name(make_settings(tmp_path), env) == f"talkfactory-gpu:{host}:2"
    assert gpu_slot_name(make_settings(tmp_path, gpu="cpu0"), env) == f"talkfactory-gpu:{host}:cpu0"
    assert gpu_slot_name(make_settings(tmp_path), {}) == f"talkfactory-gpu:{host}:cpu"


# -- local_copy ---------------------------------------------------------------------------------------


def test_local_copy_of_a_plain_path_is_the_path(tmp_path: Path) -> None:
    f = tmp_path / "clip.wav"
    f.write_bytes(b"RIFF")
    s = make_settings(tmp_path)
    assert local_copy(str(f), s) == f
    assert not (s.cache_dir / "fetched").exists()


def test_local_copy_of_a_file_uri_decodes_the_name(tmp_path: Path) -> None:
    folder = tmp_path / "my clips"
    folder.mkdir()
    f = folder / "take 1 100%.wav"
    f.write_bytes(b"RIFF-data")
    uri = f.as_uri()
    assert "%20" in uri and "%25" in uri
    got = local_copy(uri, make_settings(tmp_path))
    assert got == f and got.read_bytes() == b"RIFF-data"


@pytest.mark.servers
def test_local_copy_downloads_an_s3_object_once(
    s3_server: WeedServer,  # noqa: F811
    s3_settings: Settings,
) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    data = b"RIFF" + os.urandom(3000)
    client.put_object(bucket, "clips/ab/clip001_16k.wav", io.BytesIO(data), len(data))
    url = f"s3://{bucket}/clips/ab/clip001_16k.wav"

    first = local_copy(url, s3_settings)
    assert first.read_bytes() == data
    assert first.name == "clip001_16k.wav"
    assert s3_settings.cache_dir / "fetched" in first.parents

    client.remove_object(bucket, "clips/ab/clip001_16k.wav")
    assert local_copy(url, s3_settings) == first
    assert first.read_bytes() == data


@pytest.mark.servers
def test_local_copy_of_an_object_at_the_bucket_root(
    s3_server: WeedServer,  # noqa: F811
    s3_settings: Settings,
) -> None:
    bucket = s3_server.make_bucket()
    s3_server.client().put_object(bucket, "root.wav", io.BytesIO(b"top"), 3)
    assert local_copy(f"s3://{bucket}/root.wav", s3_settings).read_bytes() == b"top"


@pytest.mark.servers
def test_local_copy_of_a_missing_object_fails_and_caches_nothing(
    s3_server: WeedServer,  # noqa: F811
    s3_settings: Settings,
) -> None:
    bucket = s3_server.make_bucket()
    with pytest.raises(ObjectNotFoundError):
        local_copy(f"s3://{bucket}/clips/none.wav", s3_settings)
    fetched = s3_settings.cache_dir / "fetched"
    assert not fetched.exists() or not [p for p in fetched.rglob("*") if p.is_file()]


@pytest.mark.servers
def test_local_copy_sees_an_object_replaced_under_the_same_url(
    s3_server: WeedServer,  # noqa: F811
    s3_settings: Settings,
) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    client.put_object(bucket, "library/astro.png", io.BytesIO(b"version one"), 11)
    url = f"s3://{bucket}/library/astro.png"
    assert local_copy(url, s3_settings).read_bytes() == b"version one"
    client.put_object(bucket, "library/astro.png", io.BytesIO(b"version two!"), 12)
    assert local_copy(url, s3_settings).read_bytes() == b"version two!"


# -- share_clip_audio ---------------------------------------------------------------------------------


def test_share_clip_audio_to_the_default_folder(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    wav = tmp_path / "clip 001 100%.wav"
    wav.write_bytes(b"first bytes")

    url = share_clip_audio(s, REC_SHA, PARAMS, wav)
    stored = (s.home / "work-store").resolve() / "clips" / REC_SHA[:2] / REC_SHA / PARAMS[:16] / wav.name
    assert url == stored.as_uri()
    assert stored.read_bytes() == b"first bytes"
    assert local_copy(url, s) == stored

    # The key names the content (recording, speech parameters, file), so a second share is a no-op.
    wav.write_bytes(b"changed locally")
    assert share_clip_audio(s, REC_SHA, PARAMS, wav) == url
    assert stored.read_bytes() == b"first bytes"


def test_share_clip_audio_to_a_work_url_folder(tmp_path: Path) -> None:
    work = tmp_path / "shared work"
    s = make_settings(tmp_path, work_url=str(work))
    wav = tmp_path / "clip001_48k.wav"
    wav.write_bytes(b"48k")
    url = share_clip_audio(s, REC_SHA, PARAMS, wav)
    assert local_copy(url, s).read_bytes() == b"48k"
    assert local_copy(url, s).is_relative_to(work)


@pytest.mark.servers
def test_share_clip_audio_to_s3_once_and_back(
    s3_server: WeedServer,  # noqa: F811
    s3_settings: Settings,
    tmp_path: Path,
) -> None:
    bucket = s3_server.make_bucket()
    settings = s3_settings.model_copy(update={"work_url": f"s3://{bucket}/work"})
    wav = tmp_path / "clip001_16k.wav"
    data = b"RIFF" + os.urandom(5000)
    wav.write_bytes(data)

    url = share_clip_audio(settings, REC_SHA, PARAMS, wav)
    key = f"work/clips/{REC_SHA[:2]}/{REC_SHA}/{PARAMS[:16]}/clip001_16k.wav"
    assert url == f"s3://{bucket}/{key}"
    client = s3_server.client()
    etag = client.stat_object(bucket, key).etag
    assert client.get_object(bucket, key).read() == data

    wav.write_bytes(b"changed locally")
    assert share_clip_audio(settings, REC_SHA, PARAMS, wav) == url
    assert client.stat_object(bucket, key).etag == etag
    assert client.get_object(bucket, key).read() == data

    # Another worker (its own home and cache) reads it back through the URL alone.
    worker = settings.model_copy(update={"home": tmp_path / "worker-home"})
    assert local_copy(url, worker).read_bytes() == data


# -- avatar_sources -----------------------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """An avatars folder: three media files (one in a subfolder, one upper-case) and two that are not."""
    lib = tmp_path / "library"
    (lib / "sub").mkdir(parents=True)
    (lib / "astro.png").write_bytes(b"astro image")
    (lib / "nova.MP4").write_bytes(b"nova video")
    (lib / "sub" / "luna.jpg").write_bytes(b"luna image")
    (lib / "notes.txt").write_bytes(b"not an avatar")
    (lib / "astro.npz").write_bytes(b"a face track")
    return lib


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run from an empty folder, so store keys can never be mistaken for files in the cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd


def test_avatar_sources_with_explicit_paths(tmp_path: Path, elsewhere: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.mp4"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    got = avatar_sources([str(a), str(b)], make_settings(tmp_path))
    assert got == [(a.resolve(), str(a.resolve())), (b.resolve(), str(b.resolve()))]


def test_avatar_sources_with_a_file_uri(tmp_path: Path, elsewhere: Path) -> None:
    a = tmp_path / "my avatar.png"
    a.write_bytes(b"a")
    assert avatar_sources([a.as_uri()], make_settings(tmp_path)) == [(a, a.as_uri())]


def test_avatar_sources_with_no_entries_takes_every_media_file(
    tmp_path: Path, library: Path, elsewhere: Path
) -> None:
    s = make_settings(tmp_path, avatars_url=str(library))
    got = avatar_sources([], s)
    urls = [url for _, url in got]
    assert urls == [(library / k).as_uri() for k in ("astro.png", "nova.MP4", "sub/luna.jpg")]
    for local, url in got:
        assert local.read_bytes() == local_copy(url, s).read_bytes()
    assert [local.read_bytes() for local, _ in got] == [b"astro image", b"nova video", b"luna image"]


def test_avatar_sources_with_keys_in_the_avatars_folder(
    tmp_path: Path, library: Path, elsewhere: Path
) -> None:
    s = make_settings(tmp_path, avatars_url=str(library))
    ((local, url),) = avatar_sources(["sub/luna.jpg"], s)
    assert url == (library / "sub" / "luna.jpg").as_uri()
    assert local.read_bytes() == b"luna image"


def test_avatar_sources_unknown_name_without_a_library(tmp_path: Path, elsewhere: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        avatar_sources(["ghost.png"], make_settings(tmp_path))
    assert err.value.subject == "ghost.png"
    assert "ghost.png" in str(err.value)


def test_avatar_sources_unknown_key_in_the_library(tmp_path: Path, library: Path, elsewhere: Path) -> None:
    with pytest.raises(ObjectNotFoundError) as err:
        avatar_sources(["ghost.png"], make_settings(tmp_path, avatars_url=str(library)))
    assert "ghost.png" in str(err.value)


def test_avatar_sources_with_nothing_at_all(tmp_path: Path, elsewhere: Path) -> None:
    with pytest.raises(ConfigurationError, match="no avatars given and no avatars location"):
        avatar_sources([], make_settings(tmp_path))


def test_avatar_sources_from_a_library_without_media(tmp_path: Path, elsewhere: Path) -> None:
    lib = tmp_path / "empty-library"
    lib.mkdir()
    (lib / "readme.txt").write_text("no avatars here")
    with pytest.raises(ConfigurationError, match="no images or videos"):
        avatar_sources([], make_settings(tmp_path, avatars_url=str(lib)))


def test_avatar_sources_from_the_library_never_takes_a_cwd_file(
    tmp_path: Path, library: Path, elsewhere: Path
) -> None:
    (elsewhere / "astro.png").write_bytes(b"an unrelated file in the cwd")
    got = avatar_sources([], make_settings(tmp_path, avatars_url=str(library)))
    assert got[0][1] == (library / "astro.png").as_uri()
    assert got[0][0].read_bytes() == b"astro image"
