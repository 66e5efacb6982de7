"""Channel exports end to end, as a user runs them: ``run --channel``, ``export``, ``channels``.

Media made here: piper speech with pauses (known text) and a 16:9 template whose face sits right
of centre. Everything else is real: the render, the channel encodes in the same pass, ffmpeg's own
``ebur128`` as the loudness reference, mediapipe finding the face on the exported frames, the
captions model bundled in a wheel.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
import subprocess
from pathlib import Path

import cv2
import pytest

from tests.cli.helpers import ffmpeg, tf
from tests.fixtures.speech import write_wav

pytestmark = pytest.mark.slow

SENTENCES = (
    "Good evening and welcome back to the stream.",
    "Tonight we look at the new avatar studio.",
    "Every clip is exported for each channel.",
    "The captions come from the speech itself.",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ebur128(path: Path) -> tuple[float, float]:
    """Integrated loudness and true peak as ffmpeg's ebur128 filter measures them (the reference)."""
    run = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0",
         "-af", "ebur128=peak=true", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    summary = run.stderr[run.stderr.rfind("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]
    peak = float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))  # type: ignore[union-attr]
    return integrated, peak


def probe_size(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    w, h = out.split(",")
    return int(w), int(h)


def face_centres_x(path: Path, samples: int = 6) -> list[float]:
    """The face centre's x (0..1 of the width) on frames sampled through the file, by mediapipe."""
    from talkfactory.models.face.mesh import FaceMesher

    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    found = []
    with FaceMesher(static=True) as mesher:
        for k in range(samples):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int((k + 0.5) * total / samples))
            ok, frame = cap.read()
            assert ok
            points = mesher.landmarks(frame)
            assert points is not None, f"no face on frame {k} of {path.name}"
            found.append(float(points[:, 0].mean()) / frame.shape[1])
    cap.release()
    return found


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.fixtures.speech import RATE, monologue
    from tests.fixtures.templates import face_right_of_centre_frames

    root = tmp_path_factory.mktemp("channels")
    scene = monologue(SENTENCES, lead=0.6, pause=1.0, tail=0.6)
    speech = write_wav(root / "show.wav", scene.clean, RATE)
    # A 16:9 template: the face right of centre (a centre crop to 9:16 would cut it), moving a little.
    frames_dir = root / "frames"
    frames_dir.mkdir()
    for i, canvas in enumerate(face_right_of_centre_frames(50)):
        cv2.imwrite(str(frames_dir / f"{i:03d}.png"), canvas)
    template = root / "host.mp4"
    ffmpeg("-framerate", "25", "-i", str(frames_dir / "%03d.png"), "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(template))  # fmt: skip
    return {"root": root, "speech": speech, "template": template}


def test_run_exports_each_channel_with_captions_cover_and_manifest(material: dict[str, Path]) -> None:
    root = material["root"]
    home, out = root / "home", root / "out"
    channels_file = root / "mine.toml"
    # A channel of the user's own: Shorts with an 8 s limit, so the clip is split at its pauses.
    shorts_dir = root / "shorts-queue"  # published to a folder of its own
    channels_file.write_text(
        '[channels.short-shorts]\nextends = "youtube-shorts"\nmax_duration_s = 8\n'
        f'destination = "{shorts_dir}"\n'
    )
    env = {"TALKFACTORY_CHANNELS_FILE": str(channels_file)}
    channels = ("--channel", "youtube-shorts", "--channel", "youtube", "--channel", "short-shorts")
    args = ("run", str(material["speech"]), "--avatar", str(material["template"]), "--out", str(out),
            "--whole-track", *channels)  # fmt: skip
    run = tf(*args, home=home, cwd=root, timeout=900, **env)
    assert run.returncode == 0, run.stdout + run.stderr

    manifest = json.loads((out / "manifest.json").read_text())
    own = json.loads((shorts_dir / "manifest.json").read_text())
    entries = {(e["channel"], e["part"]): e for e in manifest["exports"]}
    assert {c for c, _ in entries} == {"master", "youtube-shorts", "youtube"}
    assert {e["channel"] for e in own["exports"]} == {"short-shorts"}
    for e in manifest["exports"] + own["exports"]:
        assert e["status"] == "published", e
        base = shorts_dir if e["channel"] == "short-shorts" else out
        path = base / e["path"]
        assert path.is_file() and sha256(path) == e["sha256"] and path.stat().st_size == e["bytes"]
        for side in ("captions_srt", "captions_vtt", "cover", "metadata"):
            assert e[side] and (base / e[side]).is_file(), (e["channel"], side)
        assert (e["width"], e["height"]) == probe_size(path)
        if e["channel"] != "master":
            integrated, _ = ebur128(path)
            assert abs(integrated - (-14.0)) <= 0.5, (e["channel"], integrated)
            assert e["true_peak_db"] <= -0.5
            assert abs(e["loudness_lufs"] - integrated) <= 0.3
    with (out / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(manifest["exports"])

    shorts = out / entries[("youtube-shorts", None)]["path"]
    assert probe_size(shorts) == (1080, 1920)
    assert probe_size(out / entries[("youtube", None)]["path"]) == (1920, 1080)
    # The face stays in the middle band of the vertical frame (a centre crop would put it at the edge).
    assert all(1 / 3 <= x <= 2 / 3 for x in face_centres_x(shorts))
    assert entries[("youtube-shorts", None)]["reframe"] == "crop"

    # Captions: the known text, readable cues.
    srt = (out / entries[("youtube", None)]["captions_srt"]).read_text()
    assert "welcome back" in " ".join(srt.lower().split())
    vtt = (out / entries[("youtube", None)]["captions_vtt"]).read_text()
    assert vtt.startswith("WEBVTT")

    # Split at pauses into parts of at most 8 s, cut between words, covering the whole clip.
    parts = sorted(own["exports"], key=lambda e: e["part"])
    assert [e["path"] for e in parts][:2] == ["show/host-part1.mp4", "show/host-part2.mp4"]
    assert len(parts) >= 2
    assert all(e["duration_s"] <= 8.05 for e in parts)
    spans = [(e["source_start_s"], e["source_end_s"]) for e in parts]
    assert all(abs(a[1] - b[0]) < 1e-3 for a, b in zip(spans, spans[1:], strict=False))

    # Lineage has it all, and `lineage` shows it.
    db = sqlite3.connect(home / "lineage.db")
    got = db.execute(
        "select channel, status, spec_version, sha256 from exports where channel != 'master'"
    ).fetchall()
    assert got and all(status == "published" and spec and sha for _, status, spec, sha in got)
    shown = tf("lineage", str(material["speech"]), home=home, cwd=root, **env)
    assert "youtube-shorts" in shown.stdout and "exports" in shown.stdout

    # Again: nothing to make.
    again = tf(*args, home=home, cwd=root, timeout=900, **env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "channel files:" not in again.stdout
    assert json.loads((out / "manifest.json").read_text())["exports"] == manifest["exports"]

    # Later: a channel added from the stored master, without rendering again.
    renders_before = db.execute("select count(*), max(finished_at) from renders").fetchone()
    export = tf(
        "export",
        str(material["speech"]),
        "--channel",
        "tiktok",
        "--out",
        str(out),
        home=home,
        cwd=root,
        **env,
    )
    assert export.returncode == 0, export.stdout + export.stderr
    assert db.execute("select count(*), max(finished_at) from renders").fetchone() == renders_before
    tiktok = [
        e for e in json.loads((out / "manifest.json").read_text())["exports"] if e["channel"] == "tiktok"
    ]
    assert len(tiktok) == 1 and tiktok[0]["status"] == "published"
    assert probe_size(out / tiktok[0]["path"]) == (1080, 1920)


def test_channels_lists_presets_and_rejects_a_broken_file(tmp_path: Path) -> None:
    listed = tf("channels", home=tmp_path / "home", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("youtube-shorts", "tiktok", "douyin", "instagram-reels", "bilibili", "wechat-channels"):
        assert name in listed.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[channels.mine]\nwidth = 1080\nheight = = 1920\n")
    broken = tf("channels", home=tmp_path / "home", cwd=tmp_path, TALKFACTORY_CHANNELS_FILE=str(bad))
    assert broken.returncode == 2
    assert "bad.toml" in broken.stdout + broken.stderr and "line 3" in broken.stdout + broken.stderr


def test_renders_made_before_channels_get_their_sidecars_and_channels_later(
    material: dict[str, Path],
) -> None:
    root = material["root"]
    home, out = root / "home-later", root / "out-later"
    run = tf("run", str(material["speech"]), "--avatar", str(material["template"]), "--out", str(out),
             "--whole-track", home=home, cwd=root, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    master = out / "show" / "host.mp4"
    before = sha256(master)
    assert not (out / "manifest.json").exists()  # no channels asked for: the render alone, as before

    export = tf("export", str(master), "--channel", "master", "--channel", "linkedin", "--out", str(out),
                home=home, cwd=root, timeout=900)  # fmt: skip
    assert export.returncode == 0, export.stdout + export.stderr
    assert sha256(master) == before  # the master is measured and given sidecars, never rewritten
    for suffix in (".srt", ".vtt", ".jpg", ".json"):
        assert master.with_suffix(suffix).is_file(), suffix
        assert (out / "linkedin" / "show" / f"host{suffix}").is_file(), suffix
    entries = {e["channel"]: e for e in json.loads((out / "manifest.json").read_text())["exports"]}
    assert set(entries) == {"master", "linkedin"}
    assert entries["master"]["path"] == "show/host.mp4" and entries["master"]["sha256"] == before
    assert probe_size(out / entries["linkedin"]["path"]) == (1080, 1080)
    assert not list(out.glob("show/manifest.*"))
