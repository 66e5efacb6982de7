"""pipeline.jobs.files and .avatars: moving clip audio and avatars between machines, naming avatars.

Stores are real: folders under tmp_path, and SeaweedFS (``s3_server``) for the S3 cases.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from talkfactory.errors import ConfigurationError, ObjectNotFoundError
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.jobs.avatars import AvatarSource, avatar_sources
from talkfactory.pipeline.jobs.files import local_copy, share_clip_audio
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
    assert got == [
        AvatarSource(a.resolve(), str(a.resolve()), "a"),
        AvatarSource(b.resolve(), str(b.resolve()), "b"),
    ]


def test_two_local_avatars_with_one_stem_get_two_names(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "hosts").mkdir()
    (tmp_path / "guests").mkdir()
    a, b = tmp_path / "hosts" / "anna.png", tmp_path / "guests" / "anna.png"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    labels = [src.label for src in avatar_sources([str(a), str(b)], make_settings(tmp_path))]
    assert len(set(labels)) == 2 and all(label.startswith("anna-") for label in labels)
    again = [src.label for src in avatar_sources([str(b), str(a)], make_settings(tmp_path))]
    assert again == labels[::-1], "a name depends on the file, not on the order given"


def test_avatar_sources_with_a_file_uri(tmp_path: Path, elsewhere: Path) -> None:
    a = tmp_path / "my avatar.png"
    a.write_bytes(b"a")
    assert avatar_sources([a.as_uri()], make_settings(tmp_path)) == [AvatarSource(a, a.as_uri(), "my avatar")]


def test_avatar_sources_with_no_entries_takes_every_media_file(
    tmp_path: Path, library: Path, elsewhere: Path
) -> None:
    s = make_settings(tmp_path, avatars_url=str(library))
    got = avatar_sources([], s)
    assert [src.uri for src in got] == [
        (library / k).as_uri() for k in ("astro.png", "nova.MP4", "sub/luna.jpg")
    ]
    assert [src.label for src in got] == ["astro", "nova", "sub.luna"]
    for src in got:
        assert src.local.read_bytes() == local_copy(src.uri, s).read_bytes()
    assert [src.local.read_bytes() for src in got] == [b"astro image", b"nova video", b"luna image"]


def test_library_avatars_with_one_stem_in_two_folders_are_two_avatars(
    tmp_path: Path, elsewhere: Path
) -> None:
    lib = tmp_path / "lib"
    (lib / "hosts").mkdir(parents=True)
    (lib / "guests").mkdir()
    (lib / "hosts" / "anna.png").write_bytes(b"host")
    (lib / "guests" / "anna.png").write_bytes(b"guest")
    got = avatar_sources([], make_settings(tmp_path, avatars_url=str(lib)))
    assert sorted(src.label for src in got) == ["guests.anna", "hosts.anna"]


def test_library_files_differing_only_by_extension_are_a_setup_error(tmp_path: Path, elsewhere: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "anna.png").write_bytes(b"still")
    (lib / "anna.mp4").write_bytes(b"video")
    with pytest.raises(ConfigurationError, match="anna.mp4"):
        avatar_sources([], make_settings(tmp_path, avatars_url=str(lib)))


def test_avatar_sources_with_keys_in_the_avatars_folder(
    tmp_path: Path, library: Path, elsewhere: Path
) -> None:
    s = make_settings(tmp_path, avatars_url=str(library))
    (src,) = avatar_sources(["sub/luna.jpg"], s)
    assert src.uri == (library / "sub" / "luna.jpg").as_uri() and src.label == "sub.luna"
    assert src.local.read_bytes() == b"luna image"


def test_avatar_sources_unknown_name_without_a_library(tmp_path: Path, elsewhere: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
        avatar_sources(["ghost.png"], make_settings(tmp_path))
    assert err.value.subject == "ghost.png"
    assert "ghost.png" in str(err.value)


def test_avatar_sources_unknown_key_in_the_library(tmp_path: Path, library: Path, elsewhere: Path) -> None:
    with pytest.raises(ConfigurationError) as err:
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
    assert got[0].uri == (library / "astro.png").as_uri()
    assert got[0].local.read_bytes() == b"astro image"
