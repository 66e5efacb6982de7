"""The Wav2Lip backend through the whole render path, with a random checkpoint in the public format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from talkfactory.infra.settings import Settings
from talkfactory.models.lipsync.registry import make_backend
from talkfactory.pipeline.avatar import prepare_avatar
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.recording import prepare_recording
from talkfactory.pipeline.render import render_avatar
from tests.fixtures.lipsync import checkpoint_file
from tests.fixtures.media import MediaSet, astronaut_bgr
from tests.pipeline.test_render import decode_frames, ffprobe

pytestmark = pytest.mark.slow


def test_wav2lip_renders_an_mp4_that_changes_only_the_lower_face(media: MediaSet, tmp_path: Path) -> None:
    rec = prepare_recording(media.speech_flv, tmp_path / "work")
    av = prepare_avatar(media.portrait, tmp_path / "cache")
    backend = make_backend("wav2lip", checkpoint=str(checkpoint_file()))
    out = tmp_path / "w2l.mp4"
    result = render_avatar(rec.speech(1.0, 3.0), av, backend, out)
    assert result.frames == 50 and out.exists()
    info = ffprobe(out)
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}
    frames = decode_frames(out, 512, 512).astype(np.int16)
    assert frames.shape == (50, 512, 512, 3)
    # Random weights paint noise over the mouth box; the top of the head must stay as it was.
    pts = av.track.landmarks[0]
    top = int(pts[:, 1].min())
    portrait = astronaut_bgr().astype(np.int16)[None]
    still = np.abs(frames[:, : top - 10] - portrait[:, : top - 10]).mean()
    y, x = int(pts[13, 1]), int(pts[13, 0])
    mouth = np.abs(
        frames[:, y - 10 : y + 10, x - 20 : x + 20] - portrait[:, y - 10 : y + 10, x - 20 : x + 20]
    )
    assert still < 4.0, still  # x264 noise only
    assert mouth.mean() > 10.0, mouth.mean()  # the network's output was pasted over the mouth
    assert backend.version.startswith("wav2lip-") and len(backend.version.split("+")[1]) == 16


@pytest.mark.servers
def test_checkpoint_from_an_object_url_is_downloaded_once(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("models")
    ckpt = checkpoint_file()
    s3_server.client().fput_object(bucket, "w2l/wav2lip.pth", str(ckpt))
    settings = Settings(
        home=tmp_path / "home",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    local = resolve_checkpoint(f"s3://{bucket}/w2l/wav2lip.pth", settings)
    assert local is not None and Path(local).read_bytes() == ckpt.read_bytes()
    mtime = Path(local).stat().st_mtime_ns
    assert resolve_checkpoint(f"s3://{bucket}/w2l/wav2lip.pth", settings) == local
    assert Path(local).stat().st_mtime_ns == mtime
    assert resolve_checkpoint("/some/local.pth", settings) == "/some/local.pth"


def test_export_onnx_command(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("talkfactory"))
    res = subprocess.run(
        [exe, "models", "export-onnx", str(checkpoint_file()), str(tmp_path / "w2l.onnx")],
        capture_output=True, text=True, timeout=600, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "match" in res.stdout and (tmp_path / "w2l.onnx").stat().st_size > 1_000_000
