"""Uploads that point ffmpeg at other files, names ffmpeg could misread, names too long for a file
system: as a user meets them, through the ``talkfactory`` command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from talkfactory.infra.files import NAME_MAX
from talkfactory.infra.lineage.repository import LineageRepository
from tests.cli.helpers import ffmpeg, tf, tone_flv
from tests.fixtures.media import MediaSet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another customer's recording, which no upload may make us read."""
    path = tmp_path_factory.mktemp("other-customer") / "secret.ts"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=880",
        "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mpegts", str(path),
    )  # fmt: skip
    return path


def _hls(path: Path, secret: Path) -> Path:
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{secret}\n#EXT-X-ENDLIST\n")
    return path


def _ffconcat(path: Path, secret: Path) -> Path:
    shutil.copy(secret, path.parent / "neighbour.ts")  # a sibling file in the same upload folder
    path.write_text("ffconcat version 1.0\nfile neighbour.ts\n")
    return path


@pytest.mark.parametrize(("make", "fmt"), [(_hls, "hls"), (_ffconcat, "concat")])
def test_a_playlist_recording_stops_the_job(make, fmt, media: MediaSet, secret: Path, tmp_path: Path) -> None:
    upload = make(tmp_path / "upload.flv", secret)
    out = tmp_path / "out"
    res = tf("run", str(upload), "--avatar", str(media.portrait), "--out", str(out), "--whole-track",
             home=tmp_path / "home", cwd=tmp_path)  # fmt: skip
    text = res.stdout + res.stderr
    assert res.returncode == 2, text  # an unusable recording stopped the job
    assert f"not a media file we accept (format {fmt})" in text and "upload.flv" in text
    assert not list(out.glob("*.mp4")) and "Traceback" not in text


def test_playlist_avatars_are_refused_and_nothing_is_rendered(secret: Path, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    rec = tone_flv(tmp_path / "rec.flv", 3.0)
    hls, cat = _hls(uploads / "face-hls.png", secret), _ffconcat(uploads / "face-cat.png", secret)
    out = tmp_path / "out"
    res = tf("run", str(rec), "--avatar", str(hls), "--avatar", str(cat), "--out", str(out), "--whole-track",
             home=tmp_path / "home", cwd=tmp_path)  # fmt: skip
    text = res.stdout + res.stderr
    assert res.returncode == 1, text  # items failed; the job itself ran
    assert "not a media file we accept (format hls)" in text
    assert "not a media file we accept (format concat)" in text
    assert not list(out.rglob("*.mp4"))


def test_dash_names_and_a_240_character_avatar_render(media: MediaSet, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    tone_flv(work / ("-x" + "y" * 20 + ".flv"), 3.0)
    shutil.copy(media.portrait, work / "-a.png")
    # Two avatars with one 248-character stem: their export names need a hash of the path each, which
    # takes them past the 255 bytes a file name may have, so they are shortened (and the user told).
    long_stem = "n" * 248
    for folder in ("hosts", "guests"):
        (work / folder).mkdir()
        shutil.copy(media.portrait, work / folder / f"{long_stem}.png")
    home = tmp_path / "home"
    res = tf("run", "./-x" + "y" * 20 + ".flv", "--avatar", "./-a.png",
             "--avatar", f"./hosts/{long_stem}.png", "--avatar", f"./guests/{long_stem}.png",
             "--out", "out", "--whole-track", home=home, cwd=work)  # fmt: skip
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    names = sorted(p.name for p in (work / "out" / ("-x" + "y" * 20)).iterdir())
    assert "-a.mp4" in names, names
    shortened = [n for n in names if long_stem[:100] in n]
    assert len(shortened) == 2 and all(len(n.encode()) <= NAME_MAX and n.endswith(".mp4") for n in shortened)
    assert "longer than the 255" in text  # the user is told the name was shortened
    assert not [n for n in names if ".partial" in n]
    repo = LineageRepository.from_url(f"sqlite:///{home / 'lineage.db'}")
    rec = repo.find_recording("-x" + "y" * 20 + ".flv")
    assert rec is not None and (rec.probe or {})["format"] == "flv"  # lineage keeps the format actually read
