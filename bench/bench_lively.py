"""Cost of liveliness per frame and of the sync QC against the render, plus the QC's calibration.

    .venv/bin/python bench/bench_lively.py [--seconds 60] [--skip-calibration]

1. Per frame at 1280x720 (face 270 px), OpenCV on one thread like bench_mouth: the head warp, the
   eye/brow warp (only frames that blink or raise pay it), and ``FaceAnimator.apply`` over a whole
   speech track (what liveliness adds per frame on average), next to ``WeightlessBackend.render``.
2. ``render_avatar`` end to end on a 720p portrait speaking --seconds of piper speech (libx264
   veryfast CRF 20), liveliness off and subtle, each with the sync QC: render wall time, QC time and
   its share; then ``measure_sync`` without a budget (what ``talkfactory qc`` does) and on a copy
   with the audio 200 ms late.
3. Calibration of the QC's correlation bar: the rendered video meshed frame by frame; windows of N
   frames against their own speech (good) and against speech from elsewhere in the clip (chance),
   best correlation over the +-0.5 s lag search.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "lively"

from talkfactory.infra.media.audio import FileAudio, extract_audio  # noqa: E402
from talkfactory.infra.media.frames import iter_video_frames  # noqa: E402
from talkfactory.models.audio import ArrayAudio  # noqa: E402
from talkfactory.models.face.build import build_face_track  # noqa: E402
from talkfactory.models.face.mesh import FaceMesher  # noqa: E402
from talkfactory.models.lipsync.base import TemplateFrame  # noqa: E402
from talkfactory.models.lipsync.eyes import EyeConfig, eyes_geometry, warp_eyes  # noqa: E402
from talkfactory.models.lipsync.face_motion import FaceAnimator  # noqa: E402
from talkfactory.models.lipsync.head import HeadConfig, head_geometry, warp_head  # noqa: E402
from talkfactory.models.lipsync.liveliness import Pose, seed_from_key  # noqa: E402
from talkfactory.models.lipsync.sync_qc import correlation_bar, estimate_offset, mouth_opening  # noqa: E402
from talkfactory.models.lipsync.weightless import WeightlessBackend  # noqa: E402
from talkfactory.pipeline.avatar import prepare_avatar  # noqa: E402
from talkfactory.pipeline.qc import measure_sync  # noqa: E402
from talkfactory.pipeline.recording import prepare_recording  # noqa: E402
from talkfactory.pipeline.render import render_avatar  # noqa: E402
from tests.fixtures.long_speech import long_speech_wav  # noqa: E402
from tests.fixtures.mouth import astronaut_720p  # noqa: E402


def ms_per_call(n: int, fn: Callable[[int], object]) -> float:
    """Mean wall milliseconds of ``fn(i)`` over ``n`` calls, after one warm-up call."""
    fn(0)
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return 1000.0 * (time.perf_counter() - t) / n


def per_frame(seconds: float, speech: Path) -> list[tuple[str, float]]:
    cv2.setNumThreads(1)
    img = astronaut_720p(zoom=True)
    track = build_face_track([img], content_hash="bench", fps=25.0, width=1280, height=720, is_still=True)
    pts = track.landmarks[0]
    cfg = EyeConfig()
    head = head_geometry(pts, (1280, 720), HeadConfig())
    eyes = eyes_geometry(pts, (1280, 720), cfg)
    assert head is not None and eyes
    scratch = img.copy()  # warps write here: a backend's own output frame, as in a render
    head_ms = ms_per_call(300, lambda i: warp_head(img, head, Pose(roll_deg=1.0 + i % 3 * 0.1), out=scratch))
    eyes_ms = ms_per_call(300, lambda i: warp_eyes(img, eyes, Pose(blink=(i % 10) / 10), cfg, out=scratch))
    rows = [("head warp (every frame)", head_ms), ("eye + brow warp (blinking frames)", eyes_ms)]
    rec = FileAudio(speech)
    audio = ArrayAudio(rec.read(0, rec.num_samples), rec.sample_rate)
    n = int(seconds * 25)
    animator = FaceAnimator(track, audio, 25.0, "subtle", seed_from_key("bench"))
    animator.poses = []
    # Each frame is a fresh copy of the portrait (the backend's output is its own array); the copy's
    # time is measured apart and taken off.
    copy_ms = ms_per_call(n, lambda i: img.copy())
    apply_ms = ms_per_call(n, lambda i: animator.apply(0, img.copy())) - copy_ms
    rows.append((f"FaceAnimator.apply, subtle, {seconds:.0f} s of speech (average)", apply_ms))
    blinking = sum(p.moves_eyes for p in animator.poses[1:]) / n
    rows.append((f"  share of frames with eye/brow motion: {100 * blinking:.1f} %", float("nan")))
    backend = WeightlessBackend()
    prepared = backend.prepare(track)
    t = time.perf_counter()
    count = sum(1 for _ in backend.render(prepared, (TemplateFrame(0, img) for _ in range(n)), audio, 25.0))
    rows.append(("WeightlessBackend.render (for scale)", 1000.0 * (time.perf_counter() - t) / count))
    cv2.setNumThreads(0)
    return rows


def cpu_s() -> tuple[float, float]:
    """CPU seconds so far of this process and of its finished children (ffmpeg)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


Row = tuple[str, float, float, float, float, float, float, int]


def end_to_end(root: Path, speech: Path) -> list[Row]:
    portrait = root / "portrait-720p.png"
    cv2.imwrite(str(portrait), astronaut_720p(zoom=True))
    rec = prepare_recording(speech, root / "work")
    avatar = prepare_avatar(portrait, root / "cache")
    rows: list[Row] = []
    # Alternated and repeated: other work on the machine comes and goes; the faster run of each counts.
    # CPU seconds (python, ffmpeg) depend much less on that than wall time.
    results: dict[str, list[tuple[float, float, float, float, float, int]]] = {"off": [], "subtle": []}
    for _ in range(2):
        for level in ("off", "subtle"):
            out = root / f"render-{level}.mp4"
            before = cpu_s()
            r = render_avatar(
                rec.speech(), avatar, WeightlessBackend(), out, liveliness=level, seed=seed_from_key("b")
            )
            after = cpu_s()
            assert r.qc is not None
            cpu_py, cpu_ff = after[0] - before[0], after[1] - before[1]
            results[level].append((r.wall_s, r.rtf, cpu_py, cpu_ff, r.qc.cost_s, r.qc.frames_used))
    for level, runs in results.items():
        wall, rtf, cpu_py, cpu_ff, qc_s, frames = min(runs)
        rows.append(
            (f"render, liveliness {level}, with QC", wall, rtf, cpu_py, cpu_ff, qc_s, qc_s / wall, frames)
        )
    full = measure_sync(root / "render-subtle.mp4")
    nan = float("nan")
    rows.append(
        ("talkfactory qc (no budget, up to 24 s)", nan, nan, nan, nan, full.cost_s, nan, full.frames_used)
    )
    shifted = root / "shifted.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(root / "render-subtle.mp4"), "-itsoffset", "0.2",
         "-i", str(root / "render-subtle.mp4"), "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted)],
        check=True,
    )  # fmt: skip
    for name, path in (("original", root / "render-subtle.mp4"), ("audio +200 ms", shifted)):
        for budget in (None, 0.1 * rows[1][1]):  # the subtle render's budget
            rep = measure_sync(path, budget_s=budget)
            label = "no budget" if budget is None else f"budget {budget:.2f} s"
            measured = (
                f"offset {rep.offset_ms or 0:+7.1f} ms  corr {rep.correlation or 0:.3f}  ok {rep.ok!s:5}"
            )
            print(f"  qc {name:14} {label:16} {measured}  frames {rep.frames_used:4}  {rep.cost_s:.2f} s")
    return rows


def calibration(video: Path, root: Path) -> list[tuple[int, float, float, float, float, float]]:
    ex = extract_audio(video, root / "all.s16le", sample_rate=16000)
    audio = FileAudio(ex.path, 16000).read(0, ex.num_samples)
    with FaceMesher(static=False) as mesher:
        marks = [mesher.landmarks(f) for f in iter_video_frames(video, fps=25, width=640, height=360)]
    opening = np.array([np.nan if m is None else mouth_opening(m) for m in marks])
    n, fps = opening.size, 25.0
    rows = []
    for size in (75, 100, 150, 250):
        good, chance = [], []
        groups = np.zeros(size, dtype=np.int64)
        for start in range(0, n - size, size // 3):
            t = (start + np.arange(size)) / fps
            good.append(estimate_offset(t, opening[start : start + size], groups, audio, 16000).correlation)
            for shift in (5.3, 11.7, 17.3, 23.1, 29.9, 37.9):
                elsewhere = (t + shift) % (n / fps - size / fps - 1.0)
                chance.append(
                    estimate_offset(
                        elsewhere, opening[start : start + size], groups, audio, 16000
                    ).correlation
                )
        g, c = np.array(good), np.array(chance)
        rows.append(
            (
                size,
                float(g.min()),
                float(np.median(g)),
                float(np.percentile(c, 95)),
                float(np.percentile(c, 99)),
                float(c.max()),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-calibration", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    speech = OUT / f"speech-{int(args.seconds)}s.wav"
    if not speech.exists():
        long_speech_wav(speech, args.seconds)
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}")

    print("\nper frame, 1280x720, face 270 px, OpenCV 1 thread")
    for name, ms in per_frame(args.seconds, speech):
        print(f"  {name:62} {'' if np.isnan(ms) else f'{ms:6.2f} ms'}")

    print(f"\nrender_avatar end to end, 720p portrait, {args.seconds:.0f} s, libx264 veryfast CRF 20")
    rows = end_to_end(OUT, speech)
    heads = ("wall s", "rtf", "py cpu s", "ff cpu s", "qc s", "qc share", "qc frames")
    print(f"  {'case':42} " + " ".join(f"{h:>9}" for h in heads))
    for name, *values, frames in rows:
        cells = ["" if np.isnan(v) else f"{v:9.3f}" for v in values]
        print(f"  {name:42} " + " ".join(f"{c:>9}" for c in cells) + f" {frames:9d}")

    if not args.skip_calibration:
        print("\nQC calibration: best correlation over the lag search, windows of N frames")
        heads = ("N", "own min", "own median", "chance 95%", "chance 99%", "chance max", "bar")
        print("  " + " ".join(f"{h:>10}" for h in heads))
        for size, *values in calibration(OUT / "render-subtle.mp4", OUT):
            cells = [f"{size:10d}", *(f"{v:10.3f}" for v in values), f"{correlation_bar(size):10.2f}"]
            print("  " + " ".join(cells))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
