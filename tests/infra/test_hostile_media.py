"""Uploads that try to make ffmpeg read other local files, and names ffmpeg could misread.

Every file is made here: a real MPEG-TS "secret" and text files that point at it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from talkfactory.errors import InvalidMediaError
from talkfactory.infra.files import (
    NAME_MAX,
    fit_file_name,
    partial_name,
    pid_alive,
    sweep_stale_partials,
)
from talkfactory.infra.media.audio import extract_audio
from talkfactory.infra.media.frames import iter_video_frames
from talkfactory.infra.media.probe import probe


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another customer's media: 2 s of video and a tone in MPEG-TS."""
    path = tmp_path_factory.mktemp("other-customer") / "secret.ts"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=330",
        "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mpegts", str(path),
    )  # fmt: skip
    return path


def hls_upload(folder: Path, secret: Path, name: str = "upload.flv") -> Path:
    path = folder / name
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n")
    return path


def ffconcat_upload(folder: Path, secret: Path, name: str = "upload.flv") -> Path:
    sibling = folder / secret.name
    if not sibling.exists():
        sibling.write_bytes(secret.read_bytes())
    path = folder / name
    path.write_text(f"ffconcat version 1.0\nfile {secret.name}\n")
    return path


@pytest.mark.parametrize("make", [hls_upload, ffconcat_upload], ids=["hls", "ffconcat"])
@pytest.mark.parametrize("backend", ["ffprobe", "pyav"])
def test_a_playlist_upload_is_not_media_we_accept(make, backend, secret, tmp_path):
    upload = make(tmp_path, secret)
    with pytest.raises(InvalidMediaError, match="not a media file we accept") as caught:
        probe(upload, backend=backend)
    assert str(upload) in str(caught.value)
    if backend == "ffprobe":
        assert "(format hls)" in str(caught.value) or "(format concat)" in str(caught.value)


@pytest.mark.parametrize("make", [hls_upload, ffconcat_upload], ids=["hls", "ffconcat"])
def test_decoders_refuse_a_playlist_even_without_a_probe_first(make, secret, tmp_path):
    upload = make(tmp_path, secret)
    with pytest.raises(InvalidMediaError, match="not a media file we accept"):
        list(iter_video_frames(upload, fps=25, width=160, height=120))
    with pytest.raises(InvalidMediaError, match="not a media file we accept"):
        # info given, as a caller that probed earlier would: the decode itself must refuse too
        extract_audio(upload, tmp_path / "a.raw", sample_rate=16000, info=probe(secret))
    assert not (tmp_path / "a.raw").exists()


def test_a_sequence_pattern_name_does_not_read_its_neighbours(tmp_path):
    import cv2
    import numpy as np

    for n in (1, 2):  # another customer's frames beside the upload
        cv2.imwrite(str(tmp_path / f"x{n}.jpg"), np.full((32, 32, 3), 60 * n, np.uint8))
    upload = tmp_path / "x%d.jpg"
    upload.write_text("a text upload whose name is an image2 sequence pattern")
    for backend in ("ffprobe", "pyav"):
        with pytest.raises(InvalidMediaError, match="not a media file"):
            probe(upload, backend=backend)
    with pytest.raises(InvalidMediaError, match="not a media file we accept"):
        list(iter_video_frames(upload, fps=25, width=32, height=32))


def test_a_jpeg_portrait_still_probes(tmp_path):
    import cv2

    from tests.fixtures.media import astronaut_bgr

    # A photo: ffmpeg picks image2 (by the .jpg name) over jpeg_pipe for it.
    cv2.imwrite(str(tmp_path / "face.jpg"), astronaut_bgr())
    for backend in ("ffprobe", "pyav"):
        info = probe(tmp_path / "face.jpg", backend=backend)
        assert info.is_image and info.format_name == "image2"


def test_real_media_still_reads_and_reports_its_format(secret):
    info = probe(secret)
    assert info.format_name == "mpegts" and info.audio is not None and info.video is not None
    assert probe(secret, backend="pyav").format_name == "mpegts"


def test_names_starting_with_a_dash_are_files_not_options(secret, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("-x.ts").write_bytes(secret.read_bytes())
    info = probe("-x.ts")
    assert info.audio is not None
    result = extract_audio("-x.ts", "-x.raw", sample_rate=16000)
    assert result.num_samples > 16000 and Path("-x.raw").stat().st_size > 0
    frames = list(iter_video_frames("-x.ts", fps=25, width=160, height=120, count=3))
    assert len(frames) == 3


def test_long_names_are_shortened_with_a_hash_and_a_warning(caplog):
    name = "r__" + "a" * 300 + ".mp4"
    short = fit_file_name(name)
    assert len(short.encode()) <= NAME_MAX and short.endswith(".mp4") and short.startswith("r__aaa")
    assert fit_file_name(name.replace("r__", "s__")) != short  # the hash keeps them apart
    assert "longer than" in caplog.text
    assert fit_file_name("ok.mp4") == "ok.mp4"
    multibyte = "é" * 200 + ".mp4"  # 404 bytes: cut on a character boundary
    assert len(fit_file_name(multibyte).encode()) <= NAME_MAX


def test_a_temporary_name_fits_wherever_the_final_name_does(tmp_path):
    final = "x" * (NAME_MAX - 4) + ".mp4"  # exactly 255 bytes: legal
    tmp = partial_name(final, ".mp4")
    assert len(tmp.encode()) <= NAME_MAX
    (tmp_path / tmp).write_bytes(b"")  # the file system accepts it
    (tmp_path / final).write_bytes(b"")


def test_sweep_removes_only_partials_of_dead_processes(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not pid_alive(dead.pid)
    mine = tmp_path / partial_name("out.mp4", ".mp4")
    theirs = tmp_path / f".out.mp4.{dead.pid}-abcdef12.partial.mp4"
    keep = tmp_path / "out.mp4"
    for p in (mine, theirs, keep):
        p.write_bytes(b"x")
    removed = sweep_stale_partials(tmp_path)
    assert removed == [theirs]
    assert mine.exists() and keep.exists() and not theirs.exists()
    assert str(os.getpid()) in mine.name
