"""The render step end to end, without Prefect: real speech in, a checked MP4 out."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talkfactory.infra.media.encode import FrameEncoder
from talkfactory.models.lipsync.weightless import WeightlessBackend
from talkfactory.pipeline.avatar import prepare_avatar
from talkfactory.pipeline.recording import ANALYSIS_RATE, prepare_recording
from talkfactory.pipeline.render import EncodeSettings, render_avatar
from tests.fixtures.media import MediaSet, astronaut_bgr

pytestmark = pytest.mark.slow


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def top_level_atoms(path: Path) -> list[str]:
    atoms, data = [], path.read_bytes()
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return atoms


def decode_frames(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def envelope_per_frame(samples: np.ndarray, fps: float, n: int) -> np.ndarray:
    hop = ANALYSIS_RATE / fps
    return np.array(
        [np.sqrt(np.mean(samples[int(i * hop) : int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n)]
    )


@pytest.fixture(scope="module")
def rendered(media: MediaSet, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("render")
    rec = prepare_recording(media.speech_flv, root / "work")
    out = {}
    for avatar_path in (media.portrait, media.template):
        av = prepare_avatar(avatar_path, root / "cache")
        # Near-lossless, so that comparing pixels measures our warp and not x264's quantisation.
        encode = EncodeSettings(crf=8)
        result = render_avatar(
            rec.speech(), av, WeightlessBackend(), root / f"{avatar_path.stem}.mp4", encode=encode
        )
        out[avatar_path.stem] = (av, result)
    return rec, out


def test_output_is_browser_ready_h264_aac_with_faststart(rendered) -> None:
    rec, outs = rendered
    for av, result in outs.values():
        info = ffprobe(result.output)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert video["codec_name"] == "h264" and video["profile"] in ("High", "Main")
        assert video["pix_fmt"] == "yuv420p"
        assert audio["codec_name"] == "aac"
        atoms = top_level_atoms(result.output)
        assert atoms.index("moov") < atoms.index("mdat"), atoms
        frame = 1.0 / av.fps
        assert abs(float(video["duration"]) - rec.duration_s) <= frame + 1e-3
        assert abs(float(info["format"]["duration"]) - rec.duration_s) <= frame + 0.03
        assert result.frames == round(rec.duration_s * av.fps)


def test_mouth_follows_speech_and_the_rest_of_the_frame_stays(rendered) -> None:
    from talkfactory.models.face.mesh import FaceMesher

    rec, outs = rendered
    av, result = outs["astronaut"]
    frames = decode_frames(result.output, av.track.width, av.track.height)
    samples = rec.audio().read(0, rec.num_samples)
    env = envelope_per_frame(samples, av.fps, len(frames))
    gaps = []
    with FaceMesher(static=True) as mesher:
        for f in frames:
            pts = mesher.landmarks(f)
            assert pts is not None, "the face must still be found on every output frame"
            face_h = np.linalg.norm(pts[152] - pts[10])
            gaps.append(np.linalg.norm(pts[14] - pts[13]) / face_h)
    gaps_a = np.array(gaps)
    corr = float(np.corrcoef(gaps_a, env)[0, 1])
    loud = env > np.percentile(env, 70)
    quiet = env < 0.02 * env.max()
    assert quiet.sum() >= 25 and loud.sum() >= 25
    assert corr >= 0.5, f"mouth opening vs speech envelope correlation {corr:.2f}"
    # The portrait smiles with parted lips, so silence is not a zero gap: ask for a clear difference
    # (2.5 % of the face height is about 5 px on this 512 px portrait).
    assert gaps_a[loud].mean() - gaps_a[quiet].mean() > 0.025, (gaps_a[loud].mean(), gaps_a[quiet].mean())

    # Away from the lower face, every frame matches the untouched portrait sent through the same
    # encoder (so yuv420p chroma loss on its sharp coloured edges is not counted against us).
    ref_path = result.output.with_name("reference.mp4")
    with FrameEncoder(ref_path, width=512, height=512, fps=av.fps, duration=0.2, crf=8) as enc:
        for _ in range(5):
            enc.write(astronaut_bgr())
    ref = decode_frames(ref_path, 512, 512)[0].astype(np.int16)
    pts = av.track.landmarks[0]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    face_h = y1 - y0
    mask = np.ones(ref.shape[:2], bool)
    mask[
        int(y0 + 0.35 * face_h) : int(y1 + 0.35 * face_h), int(x0 - 0.2 * face_h) : int(x1 + 0.2 * face_h)
    ] = False
    diffs = np.abs(frames.astype(np.int16) - ref[None])[:, mask]
    assert diffs.mean() < 1.5, diffs.mean()
    assert np.percentile(diffs, 99) < 8
