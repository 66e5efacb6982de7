"""Running one push: files back to back into one RTMP(S) connection, bounded in time, key kept secret.

``push_files`` links the sources into a private folder as ``000.mp4``, ``001.mp4`` ... (so the concat
list holds only plain names, and a source can name nothing outside this push), starts one ffmpeg
(``push_args``) and follows its ``-progress`` output: which file is on air and how much has been sent.

Nothing can hang. A write or read that blocks ``rw_timeout_s`` fails inside ffmpeg (a dead socket: the
server stopped answering); a push whose progress stands still ``stall_timeout_s`` (a connect that never
completes, a stuck read) is killed from here; and the whole run is bounded by the playlist's length plus
slack, under ``TALKFACTORY_FFMPEG_TIMEOUT_S`` like every ffmpeg. A refused or closed connection fails at
once. Every failure is a ``LivePushError`` naming the URL with its key masked, saying how far the push
got (``files_finished``, ``file_on_air``, ``pushed_s``) so a retry can resume at a file boundary. The key
is never in its message, its notes, its ``stderr`` or its chain (``__context__`` is cleared).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from talkfactory.errors import ConfigurationError, FFmpegError, PermanentError, TalkfactoryError
from talkfactory.infra.ffmpeg.args import concat, global_options, progress_output
from talkfactory.infra.ffmpeg.runner import classify, open_ffmpeg
from talkfactory.infra.live.push_args import (
    LiveEncode,
    concat_input,
    copy_streams,
    ffconcat,
    flv_output,
    live_encode,
)
from talkfactory.infra.live.urls import PushTarget

log = logging.getLogger(__name__)

DEFAULT_RW_TIMEOUT_S = 10.0
"""A socket read or write blocked this long fails the push (ffmpeg ``-rw_timeout``)."""
START_SLACK_S = 60.0
"""Allowance over the playlist's length for connecting and for pacing drift."""
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")

# What ffmpeg says, lower case, and what it means for the push (first match wins).
_CAUSES: tuple[tuple[str, str], ...] = (
    ("connection refused", "the server refused the connection (nothing listening, or it is down)"),
    ("connection timed out", "the server stopped answering (no progress within the read/write timeout)"),
    ("broken pipe", "the server closed the connection mid-push"),
    ("connection reset", "the server reset the connection mid-push"),
    ("end of file", "the server closed the connection"),
    ("already publishing", "the server says this stream is already being published"),
    ("server error", "the server rejected the stream"),
    ("no route to host", "the server cannot be reached (no route to host)"),
    ("network is unreachable", "the server cannot be reached (network unreachable)"),
    ("name or service not known", "the server's host name does not resolve"),
    ("failed to resolve", "the server's host name does not resolve"),
    ("handshake", "the RTMP handshake failed"),
    ("input/output error", "the connection failed (input/output error)"),
)


@dataclass(frozen=True)
class PushFile:
    """One source: a local file and its duration (the concat offsets and progress hang on it)."""

    path: Path
    duration_s: float


@dataclass(frozen=True)
class PushProgress:
    """Where a running push is; ``file_index`` counts within this run's files."""

    file_index: int
    out_time_s: float
    total_s: float
    bytes_sent: int
    speed: float | None


@dataclass(frozen=True)
class PushRun:
    """A run that pushed all its files."""

    files: int
    pushed_s: float
    bytes_sent: int
    wall_s: float


class LivePushError(FFmpegError, ConnectionError):
    """A push failed: connection refused or closed, dead socket, stalled. Retrying may succeed.

    ``subject`` is the masked URL. ``files_finished``: files of this run sent whole; ``file_on_air``:
    the file being sent when it failed (None when nothing was sent); ``pushed_s``: media time sent.
    """

    def __init__(
        self,
        message: str,
        *,
        subject: str,
        stderr: str = "",
        files_finished: int = 0,
        file_on_air: int | None = None,
        pushed_s: float = 0.0,
        wall_s: float = 0.0,
    ) -> None:
        super().__init__(message, subject=subject, stderr=stderr)
        self.files_finished = files_finished
        self.file_on_air = file_on_air
        self.pushed_s = pushed_s
        self.wall_s = wall_s


class LivePushTimeoutError(LivePushError, TimeoutError):
    """The push stopped making progress (dead socket, stuck connect) and was stopped at its bound."""


def file_position(
    durations: Sequence[float], out_time_s: float, *, tolerance_s: float = 0.05
) -> tuple[int, int | None]:
    """(files sent whole, index of the file on air or None) after ``out_time_s`` of media was sent."""
    finished = 0
    start = 0.0
    for duration in durations:
        if start + duration <= out_time_s + tolerance_s:
            finished += 1
            start += duration
        else:
            break
    if finished == len(durations) or out_time_s <= start + tolerance_s:
        return finished, None
    return finished, finished


def parse_progress(block: dict[str, str]) -> tuple[float | None, int | None, float | None]:
    """(out_time seconds, total_size bytes, speed) from one ``-progress`` block; None where absent."""

    def number(key: str) -> float | None:
        text = block.get(key, "").strip().rstrip("x").strip()
        try:
            value = float(text)
        except ValueError:
            return None
        return value if value >= 0 else None

    us = number("out_time_us")
    if us is None:
        us = number("out_time_ms")  # ffmpeg's out_time_ms is in microseconds too
    size = number("total_size")
    return (None if us is None else us / 1e6), (None if size is None else int(size)), number("speed")


def push_files(
    files: Sequence[PushFile],
    target: PushTarget,
    *,
    encode: LiveEncode | None = None,
    rw_timeout_s: float = DEFAULT_RW_TIMEOUT_S,
    stall_timeout_s: float | None = None,
    send_buffer_bytes: int | None = None,
    verify_tls: bool = True,
    ca_file: Path | None = None,
    realtime: bool = True,
    on_progress: Callable[[PushProgress], None] | None = None,
    work_dir: Path | None = None,
) -> PushRun:
    """Push ``files`` back to back to ``target`` as one stream; copy, or re-encode with ``encode``.

    Returns when the last file has been sent; raises ``LivePushError`` (transient) when the connection
    fails or stalls, or a permanent error when a source cannot be read.
    ``stall_timeout_s`` defaults to ``rw_timeout_s + 5``.
    """
    if not files:
        raise ValueError("nothing to push")
    stall = stall_timeout_s if stall_timeout_s is not None else rw_timeout_s + 5.0
    durations = [max(0.0, f.duration_s) for f in files]
    total = sum(durations)
    folder = Path(tempfile.mkdtemp(prefix="tf-push-", dir=work_dir))
    try:
        names = _link_sources(files, folder)
        listing = folder / "list.ffconcat"
        listing.write_text(ffconcat(names))
        argv = concat(
            global_options(loglevel="error"),
            concat_input(listing, realtime=realtime),
            live_encode(encode) if encode is not None else copy_streams(),
            progress_output("pipe:1"),
            flv_output(
                target.url,
                rw_timeout_s=rw_timeout_s,
                send_buffer_bytes=send_buffer_bytes,
                verify_tls=verify_tls,
                ca_file=ca_file,
            ),
        )
        limit = (total if realtime else 0.0) * 1.1 + START_SLACK_S
        return _run(argv, listing, target, durations, total, limit, stall, on_progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link_sources(files: Sequence[PushFile], folder: Path) -> list[str]:
    names: list[str] = []
    for i, f in enumerate(files):
        source = f.path.resolve()
        if not source.is_file():
            from talkfactory.errors import MediaNotFoundError

            raise MediaNotFoundError("no such file", subject=str(f.path))
        suffix = source.suffix.lower() if _SAFE_SUFFIX.match(source.suffix.lower()) else ".media"
        name = f"{i:04d}{suffix}"
        os.symlink(source, folder / name)
        names.append(name)
    return names


class _Progress:
    """The latest ``-progress`` values, updated by the reader thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.out_time_s = 0.0
        self.bytes_sent = 0
        self.speed: float | None = None
        self.advanced_at = time.monotonic()
        self.ended = False


def _read_progress(
    stream: object,
    state: _Progress,
    durations: Sequence[float],
    total: float,
    on_progress: Callable[[PushProgress], None] | None,
) -> None:
    block: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        for raw in stream:  # type: ignore[attr-defined]
            line = raw.decode("utf-8", errors="replace").strip()
            key, sep, value = line.partition("=")
            if not sep:
                continue
            block[key] = value
            if key != "progress":
                continue
            out_time, size, speed = parse_progress(block)
            with state.lock:
                if out_time is not None and out_time > state.out_time_s + 1e-6:
                    state.out_time_s = out_time
                    state.advanced_at = time.monotonic()
                if size is not None:
                    state.bytes_sent = size
                state.speed = speed
                state.ended = value == "end"
                snapshot = PushProgress(
                    file_index=min(file_position(durations, state.out_time_s)[0], len(durations) - 1),
                    out_time_s=state.out_time_s,
                    total_s=total,
                    bytes_sent=state.bytes_sent,
                    speed=speed,
                )
            block = {}
            if on_progress is not None:
                try:
                    on_progress(snapshot)
                except Exception:  # noqa: BLE001 - a progress report must never stop the push
                    log.warning("progress callback failed", exc_info=True)


def _run(
    argv: list[str],
    listing: Path,
    target: PushTarget,
    durations: Sequence[float],
    total: float,
    limit: float,
    stall: float,
    on_progress: Callable[[PushProgress], None] | None,
) -> PushRun:
    state = _Progress()
    started = time.monotonic()
    stalled = False
    failure: TalkfactoryError | None = None
    stderr = ""
    returncode: int | None = None
    with open_ffmpeg(argv, stdout=True, timeout=limit, subject=target.masked, inputs=[listing]) as proc:
        reader = threading.Thread(
            target=_read_progress,
            args=(proc.stdout, state, durations, total, on_progress),
            name="push-progress",
            daemon=True,
        )
        reader.start()
        while not proc.exited(0.25):
            with state.lock:
                idle = time.monotonic() - state.advanced_at
            if idle > stall:
                stalled = True
                proc.kill()
                break
        try:
            proc.wait()
        except TalkfactoryError as exc:
            # Kept outside this block's exception chain: the original names the URL with its key.
            failure = exc
        reader.join(timeout=5)
        stderr = target.redact(proc.stderr_tail)
        returncode = proc.returncode
    wall = time.monotonic() - started
    with state.lock:
        pushed, sent = state.out_time_s, state.bytes_sent
    if failure is None and not stalled:
        return PushRun(files=len(durations), pushed_s=pushed, bytes_sent=sent, wall_s=wall)
    raise _push_error(failure, stalled, stderr, returncode, target, durations, pushed, wall, stall)


def _push_error(
    failure: TalkfactoryError | None,
    stalled: bool,
    stderr: str,
    returncode: int | None,
    target: PushTarget,
    durations: Sequence[float],
    pushed: float,
    wall: float,
    stall: float,
) -> TalkfactoryError:
    finished, on_air = file_position(durations, pushed)
    where = _where(finished, on_air, len(durations), pushed)
    lowered = stderr.lower()
    detail = " | ".join(line.strip() for line in stderr.splitlines() if line.strip())[-600:] or "no message"
    kwargs = dict(
        subject=target.masked,
        stderr=stderr,
        files_finished=finished,
        file_on_air=on_air,
        pushed_s=pushed,
        wall_s=wall,
    )
    error: TalkfactoryError
    if stalled:
        error = LivePushTimeoutError(
            f"the push made no progress for {stall:g} s and was stopped ({where}; ffmpeg: {detail})",
            **kwargs,  # type: ignore[arg-type]
        )
    elif "certificate" in lowered and "verif" in lowered:
        # A certificate that does not verify will not verify on the next attempt either.
        error = ConfigurationError(
            "the server's TLS certificate did not verify: give the CA that signed it (--ca-file), or skip "
            f"the check (--insecure) for a server you trust ({where}; ffmpeg: {detail})",
            subject=target.masked,
        )
    else:
        cause = next((why for phrase, why in _CAUSES if phrase in lowered), None)
        classified = classify(stderr, returncode=returncode, subject=target.masked)
        if cause is None and isinstance(classified, PermanentError):
            # A source that cannot be read, or arguments ffmpeg refused: another attempt cannot help.
            error = type(classified)(f"{classified.message} ({where})", subject=target.masked)
        else:
            kind = (
                LivePushTimeoutError
                if "timed out" in lowered or (failure is not None and isinstance(failure, TimeoutError))
                else LivePushError
            )
            cause = cause or (failure.message if failure is not None else "ffmpeg failed")
            error = kind(f"{target.redact(cause)} ({where}; ffmpeg: {detail})", **kwargs)  # type: ignore[arg-type]
    if stderr:
        error.add_note(f"ffmpeg stderr (last {len(stderr)} chars, key masked):\n{stderr}")
    return error


def _where(finished: int, on_air: int | None, count: int, pushed: float) -> str:
    if on_air is None and finished == 0:
        return "nothing was sent"
    if on_air is None:
        return f"{finished} of {count} files sent whole, {pushed:.1f} s"
    return f"{finished} of {count} files sent whole, cut during file {on_air + 1} at {pushed:.1f} s"


__all__ = [
    "DEFAULT_RW_TIMEOUT_S",
    "LivePushError",
    "LivePushTimeoutError",
    "PushFile",
    "PushProgress",
    "PushRun",
    "file_position",
    "parse_progress",
    "push_files",
]
