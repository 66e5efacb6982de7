"""Frames in: decoded video through a pipe, still images, and a ping-pong looping template.

Video is decoded by ffmpeg to bgr24 on stdout, through the ``fps`` filter so every source
(variable-rate phone video included) becomes constant-rate frames: frame ``i`` shows time
``i / fps``. A reader thread keeps a few decoded frames ready in a bounded queue so decoding
overlaps the consumer (face tracking, rendering).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import FFmpegError, InvalidMediaError, MediaNotFoundError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.runner import open_ffmpeg, read_exact, run_ffmpeg
from talkfactory.infra.media.prefetch import Prefetcher
from talkfactory.infra.media.probe import MediaInfo

Frame = NDArray[np.uint8]
NEUTRAL_BACKGROUND = (128, 128, 128)
"""BGR mid-grey that transparent image areas are composited over."""


# ---------------------------------------------------------------- video decode


BLOCK_BUDGET_BYTES = 96 * 1024 * 1024
"""Default memory for one backward block (35 frames at 720p, 16 at 1080p): bigger blocks mean fewer
seeks (each one starts ffmpeg and decodes from the previous keyframe)."""
CACHE_BUDGET_BYTES = 400 * 1024 * 1024
"""A template whose frames fit in this much memory is decoded once and looped from memory (145
frames at 720p, about 6 s at 25 fps): typical avatar loops are that short, and decoding them again
for every pass costs as much CPU as rendering. The bound is the template's, never the recording's."""
MIN_BLOCK_FRAMES = 8
MAX_BLOCK_FRAMES = 250
SEEK_MARGIN_FRAMES = 2
"""A seek starts decoding this many frames early so the frame for the first slot is among those decoded."""


def _decode_args(
    path: str,
    *,
    fps: a.Rate,
    width: int,
    height: int,
    start_frame: int,
    count: int | None,
    exact: bool,
) -> a.Argv:
    rate = a.to_fraction(fps)
    seek = start_frame > 0 and not exact
    # Slot i of the output is file time i / fps: the fps filter's start_time=0 pins slot 0 to time 0
    # (padding with the first frame if the video starts late). A seek keeps that timeline (-copyts
    # -start_at_zero instead of shifting by -ss) and no start_time, so the fps filter numbers its output
    # with absolute slots (its pts, in units of 1/fps) and rounds exactly as a full decode does, ties
    # included; select then drops the margin slots before start_frame.
    if seek:
        filters = [a.fps_filter(rate), f"select=gte(pts\\,{start_frame})"]
    else:
        filters = [f"{a.fps_filter(rate)}:start_time=0"]
        if start_frame > 0:
            # Counting frames after the fps filter is exact by construction (decodes from the start).
            filters.append(f"select=gte(n\\,{start_frame})")
    filters.append(a.scale_filter(width, height))
    seek_from = float(max(0, start_frame - SEEK_MARGIN_FRAMES) / rate) if seek else None
    return a.concat(
        a.global_options(),
        ["-copyts", "-start_at_zero"] if seek else [],
        a.input_file(path, start=seek_from),
        a.map_video(0, 0),
        a.no_audio(),
        a.video_filter(*filters),
        a.passthrough_timing(),
        a.frame_limit(count) if count is not None else [],
        a.rawvideo_output("bgr24"),
    )


def _decode(
    path: str,
    *,
    fps: a.Rate,
    width: int,
    height: int,
    start_frame: int = 0,
    count: int | None = None,
    exact: bool = False,
    prefetch: int = 4,
    timeout: float | None = None,
    fingerprint: bool = False,
) -> Iterator[tuple[Frame, int]]:
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if start_frame < 0:
        raise ValueError(f"start_frame must not be negative, got {start_frame}")
    if count is not None and count <= 0:
        return
    argv = _decode_args(
        path, fps=fps, width=width, height=height, start_frame=start_frame, count=count, exact=exact
    )
    shape = (height, width, 3)
    with open_ffmpeg(argv, stdout=True, timeout=timeout, subject=path, inputs=[path]) as proc:

        def read_one() -> tuple[Frame, int] | None:
            frame = np.empty(shape, dtype=np.uint8)
            view = frame.data.cast("B")
            if read_exact(proc.stdout, view) < len(view):
                return None  # EOF (a partial trailing frame only happens when ffmpeg failed)
            # crc32 releases the GIL, so fingerprinting costs the consumer nothing.
            return frame, (zlib.crc32(view) if fingerprint else 0)

        reader: Prefetcher[tuple[Frame, int]] = Prefetcher(read_one, depth=prefetch, name="video-frames")
        try:
            yield from reader
            proc.wait()
        finally:
            proc.kill()
            reader.close()


def iter_video_frames(
    path: str | PathLike[str],
    *,
    fps: a.Rate,
    width: int,
    height: int,
    start_frame: int = 0,
    count: int | None = None,
    exact: bool = False,
    prefetch: int = 4,
    timeout: float | None = None,
) -> Iterator[Frame]:
    """Decode the first video stream as ``height x width x 3`` BGR uint8 frames at constant ``fps``.

    ``start_frame`` seeks with ffmpeg's input ``-ss`` (fast; frame-exact for constant-rate sources
    at their own rate); ``exact=True`` instead decodes from the start and drops frames, which always
    equals the frames a full decode yields. ``count`` stops after that many frames. The frame size is
    scaled to ``width x height`` when it differs from the source. ``timeout`` bounds the whole decode
    including the consumer's time (``None``: no limit).

    Raises ``MediaNotFoundError``, ``InvalidMediaError`` (not a video), ``FFmpegError``.
    """
    for frame, _ in _decode(
        os.fspath(path),
        fps=fps,
        width=width,
        height=height,
        start_frame=start_frame,
        count=count,
        exact=exact,
        prefetch=prefetch,
        timeout=timeout,
    ):
        yield frame


def count_video_frames(path: str | PathLike[str], *, fps: a.Rate, timeout: float = 600.0) -> int:
    """How many frames ``iter_video_frames`` yields at ``fps`` (decodes the file once, writes nothing)."""
    name = os.fspath(path)
    argv = a.concat(
        a.global_options(),
        a.input_file(name),
        a.map_video(0, 0),
        a.no_audio(),
        a.video_filter(f"{a.fps_filter(fps)}:start_time=0"),
        a.passthrough_timing(),
        a.progress_output("pipe:1"),
        a.null_output(),
    )
    result = run_ffmpeg(argv, timeout=timeout, subject=name, inputs=[name], capture_stdout=True)
    frames = [
        line for line in result.stdout.decode(errors="replace").splitlines() if line.startswith("frame=")
    ]
    if not frames:
        raise FFmpegError("ffmpeg reported no frame count", subject=name, stderr=result.stderr)
    return int(frames[-1].split("=", 1)[1].strip())


# ---------------------------------------------------------------- still images


def load_image(path: str | PathLike[str], *, background: tuple[int, int, int] = NEUTRAL_BACKGROUND) -> Frame:
    """Decode an image file by its content (not its extension) to BGR uint8.

    Transparency is composited over ``background``; 16-bit and greyscale images are converted;
    JPEG EXIF orientation is applied. Raises ``MediaNotFoundError`` or ``InvalidMediaError``.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise MediaNotFoundError("no such file", subject=name)
    data = np.fromfile(name, dtype=np.uint8)
    if data.size == 0:
        raise InvalidMediaError("file is empty (0 bytes)", subject=name)
    # JPEG carries no alpha or 16-bit data, and only IMREAD_COLOR applies its EXIF orientation.
    is_jpeg = data.size > 2 and data[0] == 0xFF and data[1] == 0xD8
    image = cv2.imdecode(data, cv2.IMREAD_COLOR if is_jpeg else cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InvalidMediaError("not an image OpenCV can decode (PNG, JPEG, WebP, BMP, TIFF)", subject=name)
    return to_bgr8(image, background=background)


def to_bgr8(image: NDArray[np.generic], *, background: tuple[int, int, int] = NEUTRAL_BACKGROUND) -> Frame:
    """Any OpenCV-decoded image (grey, grey+alpha, BGR, BGRA; 8/16-bit or float) as BGR uint8."""
    img8: NDArray[np.uint8]
    if image.dtype == np.uint16:
        img8 = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif image.dtype.kind == "f":
        img8 = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        img8 = image.astype(np.uint8, copy=False)
    if img8.ndim == 2:
        img8 = img8[:, :, None]
    channels = img8.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        grey = img8[:, :, :1]
        img8 = np.concatenate([grey, grey, grey, img8[:, :, 1:]], axis=2)
        channels += 2
    if channels == 3:
        return np.ascontiguousarray(img8)
    alpha = img8[:, :, 3:4].astype(np.float32) / 255.0
    bg = np.array(background, dtype=np.float32).reshape(1, 1, 3)
    out = img8[:, :, :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------- ping-pong template


@dataclass
class PingPongStats:
    """How ``PingPongFrames`` got its backward frames (for tests and logs)."""

    forward_passes: int = 0
    backward_blocks: int = 0
    seek_blocks: int = 0
    """Blocks decoded by seeking and verified frame-exact against the forward pass."""
    fallback_blocks: int = 0
    """Blocks whose seek decode did not match and were decoded exactly from the start instead."""
    cached: bool = False
    """The whole template fit in ``cache_bytes`` and later passes came from memory."""


class PingPongFrames:
    """A template looped forward then backward (0..N-1, N-2..1, 0..), with bounded memory.

    Forward passes stream. Backward passes decode blocks of ``block_frames`` by seeking to the
    block (with a small margin), then check every frame against the crc32 fingerprints taken in
    the first forward pass, so the reversed frames are byte-identical to the forward decode; a
    block that does not match is decoded exactly (from the start, frames dropped) instead.
    Memory: ``block_frames`` frames (default: ``BLOCK_BUDGET_BYTES`` worth) plus the reader queue;
    a template that fits in ``cache_bytes`` is kept from its first pass and never decoded again.
    A still image (``info.is_image``) repeats one frame; a one-frame video repeats it too.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        info: MediaInfo,
        fps: a.Rate,
        *,
        block_frames: int | None = None,
        cache_bytes: int = CACHE_BUDGET_BYTES,
        prefetch: int = 4,
        timeout: float | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.cache_bytes = cache_bytes
        if info.video is None:
            raise InvalidMediaError("a template needs a video stream or an image", subject=self.path)
        frame_bytes = info.video.display_width * info.video.display_height * 3
        if block_frames is None:
            block_frames = min(
                MAX_BLOCK_FRAMES, max(MIN_BLOCK_FRAMES, BLOCK_BUDGET_BYTES // max(1, frame_bytes))
            )
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        self.info = info
        self.fps = a.to_fraction(fps)
        self._still: Frame | None = None
        if info.is_image:
            # Decoded here: the EXIF orientation load_image applies can swap the probed width and height.
            self._still = load_image(self.path)
            self._still.setflags(write=False)
            self.height, self.width = self._still.shape[:2]
        else:
            self.width = info.video.display_width
            self.height = info.video.display_height
        self.block_frames = block_frames
        self.prefetch = prefetch
        self.timeout = timeout
        self.stats = PingPongStats()
        self._num_frames: int | None = 1 if info.is_image else None
        self._fingerprints: list[int] | None = None

    @property
    def is_still(self) -> bool:
        return self.info.is_image

    @property
    def num_frames(self) -> int:
        """Frames in one forward pass at ``fps`` (an extra decode pass the first time, unless known)."""
        if self._num_frames is None:
            self._num_frames = count_video_frames(self.path, fps=self.fps)
        return self._num_frames

    @property
    def period(self) -> int:
        """Frames before the sequence repeats: ``2N - 2`` (1 for a single frame)."""
        n = self.num_frames
        return 1 if n == 1 else 2 * n - 2

    @staticmethod
    def index_at(i: int, num_frames: int) -> int:
        """Template frame shown at output frame ``i``."""
        if num_frames <= 1:
            return 0
        k = i % (2 * num_frames - 2)
        return k if k < num_frames else 2 * num_frames - 2 - k

    def _stream(
        self,
        *,
        start_frame: int = 0,
        count: int | None = None,
        exact: bool = False,
        fingerprint: bool = False,
    ) -> Iterator[tuple[Frame, int]]:
        return _decode(
            self.path,
            fps=self.fps,
            width=self.width,
            height=self.height,
            start_frame=start_frame,
            count=count,
            exact=exact,
            prefetch=self.prefetch,
            timeout=self.timeout,
            fingerprint=fingerprint,
        )

    def frames(self, n: int) -> Iterator[tuple[int, Frame]]:
        """Exactly ``n`` ``(template_index, frame)`` pairs; a still is yielded as one read-only array."""
        if n <= 0:
            return
        if self._still is not None:
            for _ in range(n):
                yield 0, self._still
            return
        emitted = 0
        # First forward pass: the reference. Its fingerprints validate every later backward block.
        fingerprints: list[int] = []
        first: Frame | None = None
        cache: list[Frame] | None = [] if self.cache_bytes > 0 else None
        self.stats.forward_passes += 1
        for frame, crc in self._stream(fingerprint=True):
            if first is None:
                first = frame
            if cache is not None:
                if (len(cache) + 1) * frame.nbytes <= self.cache_bytes:
                    frame.setflags(write=False)  # shared by every later pass
                    cache.append(frame)
                else:
                    cache = None
            yield len(fingerprints), frame
            fingerprints.append(crc)
            emitted += 1
            if emitted == n:
                return
        total = len(fingerprints)
        if total == 0 or first is None:
            raise InvalidMediaError("the template video decoded to no frames", subject=self.path)
        self._num_frames = total
        self._fingerprints = fingerprints
        if total == 1:
            first.setflags(write=False)
            for _ in range(n - emitted):
                yield 0, first
            return
        if cache is not None and len(cache) == total:
            self.stats.cached = True
            for i in range(emitted, n):
                index = self.index_at(i, total)
                yield index, cache[index]
            return
        while emitted < n:
            # Backward: N-2 down to 1, one block at a time.
            hi = total - 2
            while hi >= 1 and emitted < n:
                lo = max(1, hi - self.block_frames + 1)
                block = self._block(lo, hi)
                for index in range(hi, lo - 1, -1):
                    yield index, block[index - lo]
                    emitted += 1
                    if emitted == n:
                        return
                hi = lo - 1
            # Forward again: 0..N-1, streamed; ffmpeg stops by itself after the frames still needed.
            self.stats.forward_passes += 1
            wanted = min(total, n - emitted)
            got = 0
            for index, (frame, _) in enumerate(self._stream(count=wanted)):
                yield index, frame
                got += 1
            emitted += got
            if got < wanted:
                raise FFmpegError(f"forward pass ended early at frame {got} of {total}", subject=self.path)

    def _block(self, lo: int, hi: int) -> list[Frame]:
        """Frames ``lo..hi`` (inclusive), verified against the first pass's fingerprints."""
        assert self._fingerprints is not None
        reference = self._fingerprints[lo : hi + 1]
        self.stats.backward_blocks += 1
        decoded = list(self._stream(start_frame=lo, count=hi - lo + 1, fingerprint=True))
        if [crc for _, crc in decoded] == reference:
            self.stats.seek_blocks += 1
            return [frame for frame, _ in decoded]
        # A variable-rate source with a long held frame can defeat the seek margin: decode exactly.
        del decoded
        self.stats.fallback_blocks += 1
        exact = list(self._stream(start_frame=lo, count=hi - lo + 1, exact=True, fingerprint=True))
        if [crc for _, crc in exact] != reference:
            raise FFmpegError(
                f"decoding frames {lo}..{hi} again did not reproduce the first pass", subject=self.path
            )
        return [frame for frame, _ in exact]


__all__ = [
    "NEUTRAL_BACKGROUND",
    "PingPongFrames",
    "PingPongStats",
    "count_video_frames",
    "iter_video_frames",
    "load_image",
    "to_bgr8",
]
