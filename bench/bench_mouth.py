"""Speed of the weightless lip-sync parts on this machine: mesh, features + shape, warp + blend.

    .venv/bin/python bench/bench_mouth.py [--frames 300]

Everything runs in this process on synthetic input (the skimage astronaut on a 1280x720
canvas, a synthetic syllable track); OpenCV is held to one thread so the numbers are per core.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from talkfactory.models.audio import ArrayAudio  # noqa: E402
from talkfactory.models.face.build import build_face_track  # noqa: E402
from talkfactory.models.face.mesh import FaceMesher  # noqa: E402
from talkfactory.models.lipsync.base import TemplateFrame  # noqa: E402
from talkfactory.models.lipsync.mouth import MouthShape, MouthShaper  # noqa: E402
from talkfactory.models.lipsync.warp import FaceFrame, MouthWarper  # noqa: E402
from talkfactory.models.lipsync.weightless import WeightlessBackend  # noqa: E402
from talkfactory.models.speech.features import FeatureExtractor  # noqa: E402
from tests.fixtures.mouth import astronaut_720p, syllables  # noqa: E402


def per_second(count: int, run: Callable[[int], object]) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process) over ``count`` calls.

    The CPU figure is what one free core would do; the wall figure also pays for whatever else
    the machine is running.
    """
    run(0)  # warm-up: first-call allocations, mediapipe graph start
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        run(i)
    return count / (time.perf_counter() - wall), count / max(time.process_time() - cpu, 1e-9)


def shifted(img: NDArray[np.uint8], i: int) -> NDArray[np.uint8]:
    """The frame nudged a few pixels, so video-mode tracking has motion to follow."""
    dx, dy = 4.0 * np.sin(i / 7.0), 3.0 * np.cos(i / 11.0)
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float32)
    moved = cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(moved, dtype=np.uint8)


def shape_loop(extractor: FeatureExtractor, shaper: MouthShaper) -> Callable[[int], object]:
    return lambda i: shaper.step(extractor.frame(i))


def warp_loop(
    warper: MouthWarper,
    img: NDArray[np.uint8],
    points: NDArray[np.float32],
    shapes: list[MouthShape],
    face: FaceFrame | None,
) -> Callable[[int], object]:
    """One warp per call; ``face=None`` rebuilds the frame geometry every time (a video template)."""
    return lambda i: warper.warp(img, points, shapes[i % len(shapes)], face)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    n = args.frames
    cv2.setNumThreads(1)
    rows: list[tuple[str, str, tuple[float, float]]] = []

    canvases = {"face 150 px": astronaut_720p(), "face 270 px": astronaut_720p(zoom=True)}
    moving = [shifted(canvases["face 270 px"], i) for i in range(60)]
    with FaceMesher(static=False) as mesher:
        rows.append(
            (
                "FaceMesher video mode",
                "1280x720, face 270 px",
                per_second(n, lambda i: mesher.landmarks(moving[i % 60])),
            )
        )
    with FaceMesher(static=True) as mesher:
        rows.append(
            (
                "FaceMesher static mode",
                "1280x720, face 270 px",
                per_second(n // 3, lambda i: mesher.landmarks(moving[i % 60])),
            )
        )
        marks = {name: mesher.landmarks(img) for name, img in canvases.items()}

    fps = 30.0
    for rate in (16000, 48000):
        audio = ArrayAudio(syllables(n + 1, fps, rate=rate), rate)
        extractor, shaper = FeatureExtractor(audio, fps), MouthShaper(fps)
        rows.append(
            (
                "features + mouth shape",
                f"{rate // 1000} kHz audio, 40 ms window",
                per_second(n, shape_loop(extractor, shaper)),
            )
        )

    warper = MouthWarper()
    opens = [MouthShape(0.5 + 0.5 * np.sin(i / 3.0), 0.3 * np.sin(i / 5.0)) for i in range(64)]
    for name, img in canvases.items():
        points = marks[name]
        assert points is not None, f"no face found in the {name} canvas"
        face = warper.frame_geometry(points, img)
        rows.append(
            (
                "warp + blend (geometry cached)",
                f"1280x720, {name}",
                per_second(n, warp_loop(warper, img, points, opens, face)),
            )
        )
        rows.append(
            (
                "warp + blend + geometry",
                f"1280x720, {name}",
                per_second(n, warp_loop(warper, img, points, opens, None)),
            )
        )

    backend = WeightlessBackend()
    img = canvases["face 270 px"]
    track = build_face_track([img], content_hash="bench", fps=fps, width=1280, height=720, is_still=True)
    audio = ArrayAudio(syllables(n, fps, rate=48000), 48000)
    prepared = backend.prepare(track)
    frames = (TemplateFrame(0, img) for _ in range(n))
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(1 for _ in backend.render(prepared, frames, audio, fps))
    rates = (count / (time.perf_counter() - wall), count / max(time.process_time() - cpu, 1e-9))
    rows.append(("WeightlessBackend.render (still)", "1280x720, face 270 px, 48 kHz", rates))

    peak_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, OpenCV threads 1")
    print(f"{'stage':34} {'input':32} {'fps wall':>9} {'ms wall':>8} {'fps cpu':>9} {'ms cpu':>7}")
    for stage, what, (wall_fps, cpu_fps) in rows:
        wall_ms, cpu_ms = 1000 / wall_fps, 1000 / cpu_fps
        print(f"{stage:34} {what:32} {wall_fps:9.1f} {wall_ms:8.2f} {cpu_fps:9.1f} {cpu_ms:7.2f}")
    print(f"peak RSS: {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
