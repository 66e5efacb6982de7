"""Benchmark the Wav2Lip backend: inference, audio features, crop/paste, end-to-end render, residency.

Usage::

    python bench/bench_wav2lip.py                       # CPU, random weights, 60 s 720p25
    python bench/bench_wav2lip.py --device cuda         # a GPU machine (adds GPU memory peaks)
    python bench/bench_wav2lip.py --checkpoint wav2lip_gan.pth --seconds 20

Without ``--checkpoint`` the network has random weights (saved in the public checkpoint format
to a temporary file): speed does not depend on the weights, only the pictures do. Frames are
synthetic 720p images with a hand-built face track, generated up front, so neither decoding nor
encoding is measured here (the pipeline benchmark adds those). Peak RSS is sampled per phase
from /proc/self/status; ``ru_maxrss`` is the process-wide peak.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from talkfactory.models.audio import ArrayAudio  # noqa: E402
from talkfactory.models.face.track import MESH_POINTS, FaceTrack  # noqa: E402
from talkfactory.models.lipsync.base import TemplateFrame  # noqa: E402
from talkfactory.models.lipsync.paste import crop_face, face_boxes, paste_face  # noqa: E402
from talkfactory.models.lipsync.wav2lip import Wav2LipBackend  # noqa: E402
from talkfactory.models.lipsync.wav2lip.engine import clear_model_cache, load_model  # noqa: E402
from talkfactory.models.lipsync.wav2lip.mel import mel_windows  # noqa: E402
from talkfactory.models.lipsync.wav2lip.network import Wav2LipNetwork  # noqa: E402

OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip


class RssSampler:
    """Peak resident memory between ``reset`` calls, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def reset(self) -> None:
        self.peak = self.rss()

    def close(self) -> None:
        self._stop.set()


@dataclass
class Row:
    what: str
    value: str
    note: str = ""


def gpu_peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak(device: str) -> str:
    if not device.startswith("cuda"):
        return "n/a (CPU)"
    torch.cuda.synchronize()
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"


def synthetic_track(width: int, height: int, frames: int) -> FaceTrack:
    rng = np.random.default_rng(0)
    lm = np.empty((frames, MESH_POINTS, 2), dtype=np.float32)
    a, b = 0.09 * width, 0.22 * height
    for i in range(frames):
        cx = width / 2 + 6 * np.sin(2 * np.pi * i / frames)
        cy = height * 0.45
        r = np.sqrt(rng.uniform(0, 0.7, MESH_POINTS))
        th = rng.uniform(0, 2 * np.pi, MESH_POINTS)
        lm[i, :, 0] = cx + a * r * np.cos(th)
        lm[i, :, 1] = cy + b * 0.8 * r * np.sin(th)
        for k, idx in enumerate(OVAL):
            t = np.deg2rad(-90 + 10 * k)
            lm[i, idx] = (cx + a * np.cos(t), cy + b * np.sin(t))
        lm[i, 98] = (cx - 0.2 * a, cy + 0.2 * b)
        lm[i, 327] = (cx + 0.2 * a, cy + 0.2 * b)
    return FaceTrack("bench", width, height, 25.0, lm, np.ones(frames, dtype=bool))


def synthetic_images(track: FaceTrack) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 256, (track.height, track.width, 3), dtype=np.uint8), (0, 0), 3)
    out = []
    for i in range(track.num_frames):
        img = base.copy()
        c = track.landmarks[i].mean(axis=0)
        axes = (int(0.09 * track.width), int(0.22 * track.height))
        cv2.ellipse(img, (int(c[0]), int(c[1])), axes, 0, 0, 360, (90, 130, 190), -1)
        out.append(img)
    return out


def speech(seconds: float) -> ArrayAudio:
    rate = 16_000
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / rate
    x = 0.2 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * sum(np.sin(k * phase) / k for k in range(1, 10))
    return ArrayAudio(x.astype(np.float32), rate)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="a real checkpoint (default: random weights)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the end-to-end render")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--batch-sizes", default="16,64,128")
    ap.add_argument("--infer-frames", type=int, default=0, help="frames per inference timing (0: auto)")
    ap.add_argument("--render-batch", type=int, default=0, help="backend batch size (0: backend default)")
    args = ap.parse_args(argv)

    sampler = RssSampler()
    rows: list[Row] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-wav2lip-")
    ckpt = args.checkpoint
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = Path(tmp.name) / "random_wav2lip.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2LipNetwork().state_dict().items()}}, ckpt)
    device = args.device
    n_frames = int(round(args.seconds * args.fps))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    print(
        f"machine: {torch.get_num_threads()} torch threads, "
        f"{'GPU ' + torch.cuda.get_device_name() if cuda else 'no GPU'}; torch {torch.__version__}; "
        f"weights: {'random (speed only)' if args.checkpoint is None else args.checkpoint}",
        flush=True,
    )

    # 1. Model residency: a cold load (read, hash, validate, build) against a cache hit.
    clear_model_cache()
    sampler.reset()
    cold = timed(lambda: load_model(ckpt, device=device))
    warm = timed(lambda: load_model(ckpt, device=device))
    engine = load_model(ckpt, device=device).engine
    rows.append(Row("model load, cold", f"{cold:.2f} s", "read + sha256 + validate + build + fold BN"))
    rows.append(
        Row("model load, cached", f"{warm * 1000:.2f} ms", "same process: what each later render pays")
    )

    # 2. Inference alone at 96x96.
    rng = np.random.default_rng(0)
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        frames = args.infer_frames or (bs * (32 if cuda else 2))
        mel = rng.uniform(-4, 4, (bs, 1, 80, 16)).astype(np.float32)
        faces = rng.integers(0, 256, (bs, 96, 96, 6), dtype=np.uint8)
        engine.infer(mel, faces)  # warm-up (cudnn autotune, allocator)
        gpu_peak_reset(device)
        sampler.reset()
        reps = max(1, frames // bs)
        secs = timed(lambda mel=mel, faces=faces, reps=reps: [engine.infer(mel, faces) for _ in range(reps)])
        fps = reps * bs / secs
        rows.append(
            Row(
                f"inference alone, batch {bs}",
                f"{fps:.1f} frames/s",
                f"{reps * bs} frames; GPU peak {gpu_peak(device)}; RSS peak {sampler.peak / 2**20:.0f} MiB",
            )
        )
        print(rows[-1], flush=True)

    # 3. Audio features for the whole render.
    audio = speech(args.seconds)
    sampler.reset()
    mel_s = timed(
        lambda: [
            mel_windows(audio, list(range(i, min(i + 64, n_frames))), args.fps)
            for i in range(0, n_frames, 64)
        ]
    )
    rows.append(
        Row(
            "mel windows",
            f"{n_frames / mel_s:.0f} frames/s",
            f"{args.seconds:.0f} s of audio in {mel_s:.2f} s",
        )
    )

    # 4. Crop and paste at the output resolution.
    track = synthetic_track(args.width, args.height, 50)
    images = synthetic_images(track)
    boxes = face_boxes(track.landmarks, track.present, track.width, track.height)
    k = 200
    crop_s = timed(lambda: [crop_face(images[i % 50], tuple(boxes[i % 50]), 96) for i in range(k)])
    face = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    paste_s = timed(
        lambda: [
            paste_face(images[i % 50], face, tuple(boxes[i % 50]), track.landmarks[i % 50]) for i in range(k)
        ]
    )
    box_side = int(np.median(boxes[:, 2] - boxes[:, 0]))
    rows.append(
        Row("crop to 96x96", f"{k / crop_s:.0f} frames/s", f"{args.width}x{args.height}, box {box_side} px")
    )
    rows.append(
        Row(
            "paste (feather + LAB colour match)",
            f"{k / paste_s:.0f} frames/s",
            "one thread, incl. frame copy",
        )
    )

    # 5. End to end through Wav2LipBackend.render, first and second render in one process.
    clear_model_cache()

    def frames_iter() -> Iterator[TemplateFrame]:
        for i in range(n_frames):
            j = i % 100
            row = j if j < 50 else 99 - j  # ping-pong over the 50 template frames
            yield TemplateFrame(index=row, image=images[row])

    for label in ("first render (loads model)", "second render (model resident)"):
        gpu_peak_reset(device)
        sampler.reset()
        t0 = time.perf_counter()
        backend = Wav2LipBackend(ckpt, device=device, batch_size=args.render_batch or None)
        load_s = time.perf_counter() - t0
        count = 0
        for _ in backend.render(backend.prepare(track), frames_iter(), audio, args.fps):
            count += 1
        total = time.perf_counter() - t0
        st = backend.last_stats
        assert st is not None and count == n_frames
        rows.append(
            Row(
                f"end to end, {label}",
                f"{count / total:.1f} frames/s",
                f"RTF {total / args.seconds:.2f}; {total:.1f} s incl. {load_s:.2f} s load; "
                f"batch {backend.batch_size}; "
                f"stage s: prepare {st.prepare_s:.1f}, infer {st.infer_s:.1f}, paste {st.paste_s:.1f}; "
                f"GPU peak {gpu_peak(device)}; RSS peak {sampler.peak / 2**20:.0f} MiB",
            )
        )
        print(rows[-1], flush=True)

    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(Row("peak RSS (process)", f"{peak_self:.0f} MiB", "ru_maxrss"))
    sampler.close()
    tmp.cleanup()

    width = max(len(r.what) for r in rows)
    vwidth = max(len(r.value) for r in rows)
    print()
    print(f"Wav2Lip backend, {args.seconds:.0f} s {args.width}x{args.height}@{args.fps:g}, device {device}")
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  note")
    for r in rows:
        print(f"{r.what:<{width}}  {r.value:>{vwidth}}  {r.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
