"""The Wav2Lip lip-sync backend: published checkpoints, batched inference, overlapped CPU stages.

``render`` runs three stages at once, joined by queues that hold one batch each, so memory is
bounded by a few batches whatever the recording's length:

1. a prepare thread pulls template frames, crops each face to 96 x 96 and computes the batch's
   mel windows;
2. an inference thread runs the generator on the batch (the GPU, when there is one);
3. the caller's thread pastes the faces back and yields frames in order.

While batch k is inferred, batch k+1 is being prepared and batch k-1 pasted. Crop and paste
spread over a small thread pool (OpenCV and numpy release the GIL) on machines with cores to
spare.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import ConfigurationError
from talkfactory.models.audio import AudioSource
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.base import TemplateFrame
from talkfactory.models.lipsync.paste import BoxPadding, crop_face, face_boxes, paste_face
from talkfactory.models.lipsync.wav2lip.engine import load_model
from talkfactory.models.lipsync.wav2lip.mel import SAMPLE_RATE, mel_windows
from talkfactory.models.lipsync.wav2lip.network import IMG_SIZE
from talkfactory.models.lipsync.wav2lip.resample import at_rate

CODE_VERSION = "1.0.0"
"""Semver of this backend's code (preprocessing, crop, paste); part of ``version``."""

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Wav2LipPrepared:
    """Per-avatar state: the track and one square face box per frame (-1 rows where no face)."""

    track: FaceTrack
    boxes: NDArray[np.int32]


@dataclass
class RenderStats:
    """Where the time of the last render went (stage seconds overlap; wall is the total)."""

    frames: int = 0
    faces: int = 0
    batches: int = 0
    prepare_s: float = 0.0
    """Crops and mel windows (prepare thread)."""
    infer_s: float = 0.0
    """Generator forward passes (inference thread)."""
    paste_s: float = 0.0
    """Paste-back (caller's thread)."""
    wall_s: float = 0.0
    """From the first frame asked for to the last one yielded, including time the consumer held frames."""


@dataclass
class _Batch:
    first: int
    frames: list[TemplateFrame]
    present: list[int]
    """Positions in ``frames`` with a face."""
    faces: NDArray[np.uint8]
    mel: NDArray[np.float32]
    out: NDArray[np.uint8] | None = None


@dataclass
class _Failure:
    error: BaseException


_END = object()


@dataclass
class _Channel:
    """A bounded queue whose writers give up once the render is stopped."""

    stop: threading.Event
    q: queue.Queue[Any] = field(default_factory=lambda: queue.Queue(maxsize=1))

    def put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        while True:
            try:
                return self.q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return _END

    def drain(self) -> None:
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                return


def default_workers() -> int:
    """Threads for crop and paste: a quarter of the cores, 1 to 4 (inference wants the rest on CPU)."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


class Wav2LipBackend:
    """``LipSyncBackend`` running a Wav2Lip generator from a checkpoint file (.pth/.pt or .onnx).

    The checkpoint is read and validated here, before any frame is decoded, and kept loaded for
    the life of the process (further backends with the same file and device reuse it). An object
    store key must be fetched to a local path by the caller first.
    """

    name = "wav2lip"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        fp16: bool | None = None,
        colour_match: bool = True,
        workers: int | None = None,
        padding: BoxPadding | None = None,
    ) -> None:
        loaded = load_model(checkpoint, device=device, fp16=fp16)
        self._engine = loaded.engine
        self.sha256 = loaded.sha256
        self.checkpoint = loaded.path
        if batch_size is not None and batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size or self._engine.default_batch_size()
        self.colour_match = colour_match
        self.workers = workers or default_workers()
        self.padding = padding or BoxPadding()
        self.last_stats: RenderStats | None = None

    @property
    def device(self) -> str:
        return self._engine.device

    @property
    def fp16(self) -> bool:
        return self._engine.fp16

    @property
    def version(self) -> str:
        return f"wav2lip-{CODE_VERSION}+{self.sha256[:16]}"

    def prepare(self, track: FaceTrack) -> Wav2LipPrepared:
        """Face boxes for every frame of the track (cheap; the pipeline may cache it per avatar)."""
        boxes = face_boxes(track.landmarks, track.present, track.width, track.height, self.padding)
        return Wav2LipPrepared(track=track, boxes=boxes)

    def render(
        self,
        prepared: Any,
        frames: Iterable[TemplateFrame],
        audio: AudioSource,
        fps: float,
    ) -> Iterator[NDArray[np.uint8]]:
        """Yield one BGR frame per template frame; frame ``i`` is lip-synced to the audio at ``i / fps``."""
        if not isinstance(prepared, Wav2LipPrepared):
            raise ConfigurationError(
                f"expected the result of Wav2LipBackend.prepare, got {type(prepared).__name__}"
            )
        if not fps > 0:
            raise ConfigurationError(f"fps must be positive, got {fps}")
        return self._run(prepared, frames, at_rate(audio, SAMPLE_RATE), float(fps))

    # -- pipeline ----------------------------------------------------------------------------

    def _run(
        self, prepared: Wav2LipPrepared, frames: Iterable[TemplateFrame], audio: AudioSource, fps: float
    ) -> Iterator[NDArray[np.uint8]]:
        stats = RenderStats()
        self.last_stats = stats
        stop = threading.Event()
        to_infer, to_paste = _Channel(stop), _Channel(stop)
        pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="wav2lip-cpu") if self.workers > 1 else None
        )

        def pmap(fn: Callable[[_T], _R], items: list[_T]) -> list[_R]:
            return (
                list(pool.map(fn, items)) if pool is not None and len(items) > 1 else [fn(x) for x in items]
            )

        def prepare_stage() -> None:
            try:
                it, first = iter(frames), 0
                while not stop.is_set():
                    chunk = list(islice(it, self.batch_size))
                    if not chunk:
                        break
                    t0 = time.perf_counter()
                    batch = self._prepare_batch(prepared, chunk, first, audio, fps, pmap)
                    stats.prepare_s += time.perf_counter() - t0
                    first += len(chunk)
                    if not to_infer.put(batch):
                        return
                to_infer.put(_END)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                to_infer.put(_Failure(exc))

        def infer_stage() -> None:
            try:
                while True:
                    item = to_infer.get()
                    if isinstance(item, _Batch):
                        t0 = time.perf_counter()
                        pad = self.batch_size if self._engine.device.startswith("cuda") else None
                        item.out = self._engine.infer(item.mel, item.faces, pad_to=pad)
                        stats.infer_s += time.perf_counter() - t0
                    if not to_paste.put(item) or not isinstance(item, _Batch):
                        return
            except BaseException as exc:
                to_paste.put(_Failure(exc))

        threads = [
            threading.Thread(target=prepare_stage, name="wav2lip-prepare", daemon=True),
            threading.Thread(target=infer_stage, name="wav2lip-infer", daemon=True),
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        try:
            while True:
                item = to_paste.get()
                if isinstance(item, _Failure):
                    raise item.error
                if not isinstance(item, _Batch):
                    break
                t0 = time.perf_counter()
                outputs = self._paste_batch(prepared, item, pmap)
                stats.paste_s += time.perf_counter() - t0
                stats.batches += 1
                stats.faces += len(item.present)
                for frame in outputs:
                    stats.frames += 1
                    yield frame
        finally:
            stats.wall_s = time.perf_counter() - start
            stop.set()
            to_infer.drain()
            to_paste.drain()
            for t in threads:
                t.join(timeout=30)
            if pool is not None:
                pool.shutdown(wait=True)

    def _prepare_batch(
        self,
        prepared: Wav2LipPrepared,
        chunk: list[TemplateFrame],
        first: int,
        audio: AudioSource,
        fps: float,
        pmap: Callable[
            [Callable[[TemplateFrame], NDArray[np.uint8]], list[TemplateFrame]], list[NDArray[np.uint8]]
        ],
    ) -> _Batch:
        track = prepared.track
        present: list[int] = []
        for pos, frame in enumerate(chunk):
            if not 0 <= frame.index < track.num_frames:
                raise ConfigurationError(
                    f"template frame index {frame.index} outside the face track ({track.num_frames} frames)",
                    subject=track.content_hash,
                )
            if frame.image.shape != (track.height, track.width, 3):
                raise ConfigurationError(
                    f"frame {first + pos} is {frame.image.shape}, "
                    f"the face track is {track.height}x{track.width}x3",
                    subject=track.content_hash,
                )
            if track.present[frame.index]:
                present.append(pos)

        def crop(frame: TemplateFrame) -> NDArray[np.uint8]:
            x0, y0, x1, y1 = (int(v) for v in prepared.boxes[frame.index])
            face = crop_face(frame.image, (x0, y0, x1, y1), IMG_SIZE)
            masked = face.copy()
            masked[IMG_SIZE // 2 :] = 0  # the model sees the upper half and must draw the mouth
            return np.concatenate([masked, face], axis=2)

        crops = pmap(crop, [chunk[p] for p in present])
        faces = np.stack(crops) if crops else np.zeros((0, IMG_SIZE, IMG_SIZE, 6), dtype=np.uint8)
        mel = mel_windows(audio, [first + p for p in present], fps)
        return _Batch(first=first, frames=chunk, present=present, faces=faces, mel=mel)

    def _paste_batch(
        self,
        prepared: Wav2LipPrepared,
        batch: _Batch,
        pmap: Callable[[Callable[[int], NDArray[np.uint8]], list[int]], list[NDArray[np.uint8]]],
    ) -> list[NDArray[np.uint8]]:
        assert batch.out is not None
        out_faces = batch.out
        landmarks = prepared.track.landmarks

        def paste(k: int) -> NDArray[np.uint8]:
            frame = batch.frames[batch.present[k]]
            x0, y0, x1, y1 = (int(v) for v in prepared.boxes[frame.index])
            return paste_face(
                frame.image,
                out_faces[k],
                (x0, y0, x1, y1),
                landmarks[frame.index],
                colour_match=self.colour_match,
                reference=batch.faces[k, :, :, 3:],  # the crop the model saw, not cropped twice
            )

        pasted = pmap(paste, list(range(len(batch.present))))
        result: list[NDArray[np.uint8]] = [f.image for f in batch.frames]  # no face: passed through as is
        for k, pos in enumerate(batch.present):
            result[pos] = pasted[k]
        return result
