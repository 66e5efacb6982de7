"""Frames out: BGR frames piped into ffmpeg and muxed with the source audio into a web-ready MP4.

The output is H.264 (High profile with libx264), yuv420p (limited-range BT.601 matrix, tagged;
odd sizes padded by repeating the last row/column), AAC, ``+faststart``. It is written to a
temporary sibling and renamed onto ``out_path`` only when ffmpeg succeeded, so a crash never leaves
a half file where a good one (or nothing) was. Frames go to ffmpeg's stdin from a writer thread fed
by a bounded queue: encoding overlaps rendering, memory holds at most ``queue_frames`` frames, and
frames never touch the disk.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from types import TracebackType
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import FFmpegError, FFmpegTimeoutError, TalkfactoryError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.binaries import ffmpeg_exe
from talkfactory.infra.ffmpeg.runner import FFmpegProcess, check_inputs
from talkfactory.infra.files import partial_name
from talkfactory.infra.media.channel_encode import (
    ChannelEncodeOptions,
    audio_chain,
    audio_output_argv,
    options_argv,
)
from talkfactory.infra.media.encoders import choose_h264_encoder


@dataclass(frozen=True)
class AudioInput:
    """Audio to mux into the output: one stream of a file, from ``start`` for ``duration`` seconds."""

    path: str | PathLike[str]
    stream_index: int | None = None
    """The stream's index in the container (``AudioStreamInfo.index``); ``None``: the first audio stream."""
    start: float | None = None
    duration: float | None = None

    @property
    def map_spec(self) -> str:
        """The ``-map`` value, the audio being ffmpeg's input 1."""
        return "1:a:0" if self.stream_index is None else f"1:{self.stream_index}"


@dataclass(frozen=True)
class EncodeStats:
    """What a finished ``FrameEncoder`` did."""

    frames_written: int
    encoder: str
    wall_seconds: float
    output_bytes: int
    width: int
    """Output width (the input width rounded up to even)."""
    height: int
    max_queued: int
    """Most frames ever waiting for the writer thread (never above ``queue_frames``)."""
    queue_frames: int


def even(n: int) -> int:
    return n + (n % 2)


def encode_args(
    target: str,
    *,
    width: int,
    height: int,
    fps: a.Rate,
    audio: AudioInput | None = None,
    duration: float | None = None,
    video_codec: str = "libx264",
    crf: int = 20,
    preset: str = "veryfast",
    audio_bitrate: str = "128k",
    options: ChannelEncodeOptions | None = None,
) -> a.Argv:
    """The ffmpeg arguments ``FrameEncoder`` runs (pure).

    Input 0 is the frame pipe: yuv420p at the even-rounded size (the writer thread pads and converts
    each BGR frame with OpenCV, so ffmpeg runs no scaler); input 1 is the audio file.
    ``options`` (a channel's GOP, bitrate cap, audio format and loudness filters) are added after
    the defaults; without them the arguments are exactly the master's.
    """
    parts: list[a.Argv] = [
        a.global_options(),
        a.rawvideo_input(width=even(width), height=even(height), fps=fps, pix_fmt="yuv420p"),
    ]
    if audio is not None:
        parts.append(a.input_file(audio.path, start=audio.start, duration=audio.duration))
    parts.append(a.map_video(0, 0))
    if audio is not None:
        parts.append(a.map_stream(audio.map_spec))
    parts += [a.h264_encoder(video_codec, crf=crf, preset=preset)]
    if options is not None:
        parts.append(options_argv(options, video_codec))
    parts += [a.pixel_format("yuv420p"), a.bt601_tags()]
    if audio is not None:
        # Timestamps first (gaps filled, so lip sync holds), then the channel's format and loudness
        # (a gain filter renumbers samples and would close the gaps), and apad only with a fixed
        # duration: without -t it would make the audio endless.
        audio_filters = [a.async_resample_filter()]
        if options is not None:
            audio_filters += audio_chain(options)
        if duration is not None:
            audio_filters.append(a.pad_audio_filter())
        parts.append(a.audio_filter(*audio_filters))
        parts.append(a.aac_audio(audio_bitrate) if options is None else audio_output_argv(options))
    if duration is not None:
        parts.append(a.output_duration(duration))
    parts += [a.faststart(), a.mp4_output(target)]
    return a.concat(*parts)


def to_i420(frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """BGR frame to planar yuv420p (limited-range BT.601), odd sizes padded by repeating the last row/column.

    OpenCV's conversion is exact (grey stays neutral) and fast, where swscale's fast path is biased
    (grey 16 comes back 15,15,13) and its accurate path costs ~3x the CPU in ffmpeg's one filter thread.
    """
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.ascontiguousarray(
            cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE), dtype=np.uint8
        )
    return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)


class _Stop:
    pass


_STOP = _Stop()


class FrameEncoder:
    """Encode BGR frames (``height x width x 3`` uint8) to an MP4, muxing ``audio`` if given.

    Use as a context manager::

        with FrameEncoder("out.mp4", width=w, height=h, fps=Fraction(30000, 1001),
                          audio=AudioInput("rec.flv"), duration=audio_seconds) as enc:
            for frame in frames:
                enc.write(frame)
        enc.stats  # frames_written, encoder, wall_seconds, ...

    Leaving the block normally finishes the file and renames it onto ``out_path``; an exception
    (or ``abort()``) kills ffmpeg and deletes the temporary file, leaving ``out_path`` as it was.
    ``duration`` fixes the output length (the audio's length); frames past it are dropped and
    audio shorter than it is padded with silence. ``video_codec="auto"`` picks NVENC when it works.
    Frames are queued by reference: do not modify a frame after passing it to ``write``.

    ``options`` (``ChannelEncodeOptions``) makes a channel's variant: fixed closed GOP, bitrate cap,
    audio format and loudness filters; ``None`` encodes exactly as before.

    ``transform`` (with ``write_item``) makes each frame from what was queued, in the writer thread.
    ``timeout`` bounds ffmpeg's whole life (``None``: no limit); ``stall_timeout`` fails ``write``
    when ffmpeg has not accepted a frame for that long.
    """

    def __init__(
        self,
        out_path: str | PathLike[str],
        *,
        width: int,
        height: int,
        fps: a.Rate,
        audio: AudioInput | None = None,
        duration: float | None = None,
        video_codec: str = "libx264",
        crf: int = 20,
        preset: str = "veryfast",
        audio_bitrate: str = "128k",
        options: ChannelEncodeOptions | None = None,
        queue_frames: int = 8,
        timeout: float | None = None,
        stall_timeout: float = 120.0,
        transform: Callable[[Any], NDArray[np.uint8]] | None = None,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if queue_frames < 1:
            raise ValueError("queue_frames must be at least 1")
        if duration is not None and duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        self.out_path = os.fspath(out_path)
        self.width, self.height = width, height
        self.fps = a.to_fraction(fps)
        self.audio = audio
        self.duration = duration
        self.video_codec = choose_h264_encoder().name if video_codec == "auto" else video_codec
        self.crf, self.preset, self.audio_bitrate = crf, preset, audio_bitrate
        self.options = options
        self.queue_frames = queue_frames
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        folder, name = os.path.split(os.path.abspath(self.out_path))
        self._tmp = os.path.join(folder, partial_name(name, ".mp4"))
        self._transform = transform
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_frames)
        self._proc: FFmpegProcess | None = None
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        self._frames_queued = 0
        self._frames_written = 0
        self._max_queued = 0
        self._closed = False
        self._started = 0.0
        self.stats: EncodeStats | None = None
        # Validate the arguments now, so a bad preset fails before anything runs.
        self._argv = encode_args(
            self._tmp,
            width=width,
            height=height,
            fps=self.fps,
            audio=audio,
            duration=duration,
            video_codec=self.video_codec,
            crf=crf,
            preset=preset,
            audio_bitrate=audio_bitrate,
            options=options,
        )

    # -- lifecycle

    def __enter__(self) -> FrameEncoder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def start(self) -> None:
        """Start ffmpeg and the writer thread (``__enter__`` does this)."""
        if self._proc is not None:
            raise RuntimeError("encoder already started")
        if self.audio is not None:
            check_inputs([self.audio.path])
        os.makedirs(os.path.dirname(self._tmp), exist_ok=True)
        self._started = time.monotonic()
        self._proc = FFmpegProcess(
            [ffmpeg_exe(), *self._argv],
            stdin=True,
            timeout=self.timeout,
            subject=self.out_path,
            audio_required=self.audio is not None,
        )
        self._writer = threading.Thread(target=self._write_loop, name="frame-encoder", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        assert self._proc is not None
        stdin = self._proc.stdin
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _Stop):
                    return
                if self._transform is not None:
                    item = self._transform(item)
                    if item.shape != (self.height, self.width, 3) or item.dtype != np.uint8:
                        raise ValueError(f"transform made a {item.shape} {item.dtype} frame")
                # cvtColor releases the GIL: conversion overlaps the renderer as well as ffmpeg.
                stdin.write(to_i420(item).data.cast("B"))
                self._frames_written += 1
        except BaseException as exc:  # BrokenPipe when ffmpeg died; reported by write()/close()
            self._writer_error = exc

    def _put(self, item: Any) -> None:
        waited_since = time.monotonic()
        while True:
            if self._writer_error is not None or (self._writer is not None and not self._writer.is_alive()):
                self._fail()
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                if time.monotonic() - waited_since > self.stall_timeout:
                    self._fail(
                        FFmpegTimeoutError(
                            f"ffmpeg accepted no frame for {self.stall_timeout:g} s", subject=self.out_path
                        )
                    )
                continue
            self._max_queued = max(self._max_queued, self._queue.qsize())
            return

    def write(self, frame: NDArray[np.uint8]) -> None:
        """Queue one frame; blocks while ``queue_frames`` frames are already waiting."""
        if self._closed or self._proc is None:
            raise RuntimeError("encoder is not running (use it as a context manager)")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a {self.height}x{self.width}x3 uint8 frame, got {frame.shape} {frame.dtype}"
            )
        self._put(np.ascontiguousarray(frame))
        self._frames_queued += 1

    def write_item(self, item: Any) -> None:
        """Queue ``item`` for the ``transform`` given at construction, which turns it into the frame in
        the writer thread (channel variants crop and resize there, off the render loop)."""
        if self._closed or self._proc is None:
            raise RuntimeError("encoder is not running (use it as a context manager)")
        if self._transform is None:
            raise RuntimeError("write_item needs a transform; use write for frames")
        self._put(item)
        self._frames_queued += 1

    def close(self) -> EncodeStats:
        """Finish: flush frames, wait for ffmpeg, move the file onto ``out_path``. Returns ``stats``."""
        if self.stats is not None:
            return self.stats
        if self._closed or self._proc is None or self._writer is None:
            raise RuntimeError("encoder is not running")
        try:
            self._put(_STOP)
            self._writer.join()
            if self._writer_error is not None:
                self._fail()
            self._proc.wait()
            if not os.path.exists(self._tmp) or os.path.getsize(self._tmp) == 0:
                raise FFmpegError("ffmpeg exited cleanly but wrote no output", subject=self.out_path)
            size = os.path.getsize(self._tmp)
            os.replace(self._tmp, self.out_path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._proc.close()
        self.stats = EncodeStats(
            frames_written=self._frames_written,
            encoder=self.video_codec,
            wall_seconds=time.monotonic() - self._started,
            output_bytes=size,
            width=even(self.width),
            height=even(self.height),
            max_queued=self._max_queued,
            queue_frames=self.queue_frames,
        )
        return self.stats

    def abort(self) -> None:
        """Kill ffmpeg and delete the temporary file; ``out_path`` is left untouched. Safe to repeat."""
        self._closed = True
        if self._proc is not None:
            self._proc.kill()
        # Unblock the writer: drop queued frames and hand it the stop marker.
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        if self._writer is not None:
            self._writer.join(timeout=10)
        if self._proc is not None:
            self._proc.close()
        # Never mask the error being handled: a temporary file on a read-only or vanished folder
        # cannot be removed, and the next run there sweeps it (``sweep_stale_partials``).
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def _fail(self, error: TalkfactoryError | None = None) -> None:
        """Stop everything and raise the most telling error (ffmpeg's own, when it failed)."""
        proc = self._proc
        if error is None and proc is not None and proc.exited(timeout=2.0):
            # ffmpeg died (the writer got a broken pipe): its exit status and stderr say why.
            try:
                proc.wait()
            except TalkfactoryError as exc:
                error = exc
        writer_error = self._writer_error
        self.abort()
        if error is not None:
            raise error from writer_error
        raise FFmpegError(f"writing frames to ffmpeg failed: {writer_error!r}", subject=self.out_path) from (
            writer_error
        )

    # -- introspection

    @property
    def frames_queued(self) -> int:
        return self._frames_queued

    @property
    def max_queued(self) -> int:
        return self._max_queued

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


__all__ = ["AudioInput", "EncodeStats", "FrameEncoder", "encode_args", "even", "to_i420"]
