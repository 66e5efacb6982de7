"""Running ffmpeg and ffprobe: own process group, enforced timeouts, bounded stderr, classified errors.

Every process starts in a new session (its own process group; a Ctrl-C in the terminal reaches
talkfactory, which stops it) with a parent-death signal (a ``kill -9`` of talkfactory kills it too),
so a timeout, a cancelled Prefect
task or an exception in the caller kills ffmpeg and anything it spawned with one ``killpg``,
and nothing is left running or unreaped. stderr is always drained by a thread into a bounded
tail (``STDERR_TAIL_BYTES``): a damaged recording can make ffmpeg print an error per packet,
which must neither fill memory nor block ffmpeg on a full pipe.

Failed runs are classified from that tail: input that ffmpeg says is not valid media becomes
``InvalidMediaError`` (permanent, never retried), as is a file whose demuxer is not on the input
whitelist ("not a media file we accept"); a full disk (``DiskFullError``) and refused arguments
(``FFmpegUsageError``) are permanent too; anything else is ``FFmpegError`` (transient).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import IO

from talkfactory.errors import (
    DiskFullError,
    FFmpegError,
    FFmpegTimeoutError,
    FFmpegUsageError,
    InvalidMediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    OutputNotWritableError,
    TalkfactoryError,
)
from talkfactory.infra.children import die_with_parent
from talkfactory.infra.ffmpeg.binaries import ffmpeg_exe, ffprobe_exe
from talkfactory.infra.settings import get_settings

STDERR_TAIL_BYTES = 64 * 1024
"""How much of a process's stderr is kept (the end of it) for error messages."""
MAX_CAPTURED_STDOUT = 64 * 1024 * 1024
"""Refuse to hold more than this from a captured stdout (ffprobe JSON is a few KB)."""
PIPE_BYTES = 1 << 20
"""Requested pipe capacity: fewer wake-ups per 2.7 MB 720p frame than the 64 KB default."""

# Phrases ffmpeg/ffprobe print when the *input* is the problem; lower case, matched case-insensitively.
_INVALID_INPUT_PHRASES: tuple[tuple[str, str], ...] = (
    ("invalid data found when processing input", "not a media file ffmpeg can read"),
    (
        "moov atom not found",
        "MP4/MOV index (moov atom) missing: the file is truncated or still being written",
    ),
    ("could not find codec parameters", "no decodable stream parameters (truncated or corrupt)"),
    ("does not contain any stream", "the file holds no audio or video stream"),
    ("error opening input", "the input could not be opened as media"),
    ("ebml header parsing failed", "not a valid Matroska/WebM file"),
    ("invalid frame dimensions", "the video stream has invalid frame dimensions"),
    ("decoder (codec none) not found", "a stream uses a codec ffmpeg cannot decode"),
    ("no decoder found", "a stream uses a codec ffmpeg cannot decode"),
    ("unknown format", "the container format is not recognised"),
    ("matches no streams", "the file has no stream of the kind asked for"),
)
_NO_AUDIO_PHRASE = "matches no streams"
# "[hls @ 0x55d0c2a8e6c0] Format not on whitelist 'flv,mov,...'": the demuxer ffmpeg chose and refused.
_NOT_WHITELISTED = re.compile(r"\[([\w,]+) @ 0x[0-9a-f]+\] format not on whitelist")
_PROTOCOL_NOT_WHITELISTED = re.compile(r"protocol '([^']*)' not on whitelist")
# Phrases that mean the same run will fail the same way again, though the input may be fine.
_DISK_FULL_PHRASE = "no space left on device"
_USAGE_PHRASES = (
    "unrecognized option",
    "option not found",
    "error splitting the argument list",
    "missing argument for option",
    "unsafe file name",
    "provided as input filename",  # ffprobe given two inputs (a name it did not take as an option)
)


class _Tail:
    """The last ``limit`` bytes written to it (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self.total = 0

    def append(self, chunk: bytes) -> None:
        with self._lock:
            self.total += len(chunk)
            self._chunks.append(chunk)
            self._size += len(chunk)
            while self._size - len(self._chunks[0]) >= self._limit:
                self._size -= len(self._chunks.popleft())

    def data(self) -> bytes:
        with self._lock:
            data = b"".join(self._chunks)
        return data[-self._limit :]

    def text(self) -> str:
        return self.data().decode("utf-8", errors="replace")


def _drain(stream: IO[bytes], sink: _Tail) -> None:
    with contextlib.suppress(OSError, ValueError):
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                break
            sink.append(chunk)


def _grow_pipe(stream: IO[bytes] | None) -> None:
    if stream is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _last_lines(stderr: str, count: int = 3) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def classify(
    stderr: str,
    *,
    returncode: int | None,
    subject: str | None = None,
    tool: str = "ffmpeg",
    audio_required: bool = False,
) -> TalkfactoryError:
    """The error for a failed run, from its stderr: ``InvalidMediaError`` when the input is at fault.

    ``audio_required`` marks runs that mapped ``0:a:...``: "matches no streams" then means the input
    has no audio stream (``NoAudioStreamError``).
    """
    lowered = stderr.lower()
    detail = _last_lines(stderr) or "(no stderr)"
    error: TalkfactoryError
    refused = _NOT_WHITELISTED.search(lowered)
    protocol = _PROTOCOL_NOT_WHITELISTED.search(lowered)
    if refused is not None:
        error = InvalidMediaError(f"not a media file we accept (format {refused.group(1)})", subject=subject)
    elif protocol is not None:
        error = InvalidMediaError(
            f"not a media file we accept (it refers to {protocol.group(1)!r} input, which is not read)",
            subject=subject,
        )
    elif audio_required and _NO_AUDIO_PHRASE in lowered:
        error = NoAudioStreamError(f"the file has no audio stream ({tool}: {detail})", subject=subject)
    elif _DISK_FULL_PHRASE in lowered:
        error = DiskFullError(f"no space left on device ({tool}: {detail})", subject=subject)
    elif "read-only file system" in lowered:
        error = OutputNotWritableError(
            f"the output is on a read-only file system ({tool}: {detail})", subject=subject
        )
    elif "unsafe file name" in lowered:
        error = InvalidMediaError(
            f"the file names other files, which are not read ({tool}: {detail})", subject=subject
        )
    elif any(phrase in lowered for phrase in _USAGE_PHRASES) and (returncode or 0) > 0:
        error = FFmpegUsageError(f"{tool} refused its arguments ({detail})", subject=subject)
    else:
        cause = next((why for phrase, why in _INVALID_INPUT_PHRASES if phrase in lowered), None)
        if cause is not None:
            error = InvalidMediaError(f"{cause} ({tool}: {detail})", subject=subject)
        elif returncode is not None and returncode < 0:
            name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else "?"
            error = FFmpegError(
                f"{tool} was killed by signal {-returncode} ({name}): {detail}",
                subject=subject,
                stderr=stderr,
            )
        else:
            error = FFmpegError(
                f"{tool} exited with code {returncode}: {detail}", subject=subject, stderr=stderr
            )
    if stderr:
        error.add_note(f"{tool} stderr (last {len(stderr)} chars):\n{stderr}")
    return error


def check_inputs(inputs: Sequence[str | PathLike[str]]) -> None:
    """``MediaNotFoundError`` for the first input path that does not exist (ffmpeg says it vaguer)."""
    for path in inputs:
        if not os.path.exists(path):
            raise MediaNotFoundError("no such file", subject=str(path))


def capped_timeout(timeout: float | None) -> float:
    """``timeout``, never above ``TALKFACTORY_FFMPEG_TIMEOUT_S``: the one limit every ffmpeg and
    ffprobe process runs under, whatever its caller asked (``None`` included)."""
    limit = get_settings().ffmpeg_timeout_s
    return limit if timeout is None else min(timeout, limit)


class FFmpegProcess:
    """A running ffmpeg/ffprobe in its own process group; see ``open_ffmpeg``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        stdin: bool = False,
        stdout: bool = False,
        timeout: float | None = None,
        subject: str | None = None,
        audio_required: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.subject = subject
        self.tool = os.path.basename(self.argv[0])
        self._audio_required = audio_required
        self._stderr = _Tail(STDERR_TAIL_BYTES)
        self._timed_out = threading.Event()
        self._finished = False
        self.started = time.monotonic()
        self.timeout = capped_timeout(timeout)
        self.deadline = self.started + self.timeout
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                # A kill -9 of talkfactory must not leave ffmpeg running on its own.
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            raise FFmpegError(f"cannot start {self.argv[0]}: {exc}", subject=subject) from exc
        self.pid = self._popen.pid
        _grow_pipe(self._popen.stdin)
        _grow_pipe(self._popen.stdout)
        assert self._popen.stderr is not None
        self._stderr_thread = threading.Thread(
            target=_drain, args=(self._popen.stderr, self._stderr), name=f"{self.tool}-stderr", daemon=True
        )
        self._stderr_thread.start()
        self._watchdog: threading.Timer | None = None
        if timeout is not None:
            self._watchdog = threading.Timer(timeout, self._on_timeout)
            self._watchdog.daemon = True
            self._watchdog.start()

    # -- pipes

    @property
    def stdin(self) -> IO[bytes]:
        if self._popen.stdin is None:
            raise RuntimeError("process was opened without a stdin pipe")
        return self._popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        if self._popen.stdout is None:
            raise RuntimeError("process was opened without a stdout pipe")
        return self._popen.stdout

    @property
    def stderr_tail(self) -> str:
        return self._stderr.text()

    @property
    def timed_out(self) -> bool:
        return self._timed_out.is_set()

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    # -- lifecycle

    def exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit on its own; True if it has."""
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _on_timeout(self) -> None:
        self._timed_out.set()
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (no-op once the process has been reaped)."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def _close_stdin(self) -> None:
        if self._popen.stdin is not None and not self._popen.stdin.closed:
            # A broken pipe here means ffmpeg already exited; wait() reports why.
            with contextlib.suppress(OSError, ValueError):
                self._popen.stdin.close()

    def wait(self) -> int:
        """Close stdin, wait for exit within the deadline, raise the classified error on failure.

        Returns 0. Callers reading stdout must read it to EOF first (ffmpeg blocks on a full pipe).
        """
        self._close_stdin()
        remaining = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        try:
            returncode = self._popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self._timed_out.set()
            self.kill()
            returncode = self._popen.wait()
        self._finished = True
        self._cancel_watchdog()
        self._stderr_thread.join(timeout=5)
        if self.timed_out:
            tail = self.stderr_tail
            last = _last_lines(tail) or "-"
            error = FFmpegTimeoutError(
                f"{self.tool} ran past its {self.timeout:g} s limit (TALKFACTORY_FFMPEG_TIMEOUT_S caps"
                f" every ffmpeg process) and was killed: {last}",
                subject=self.subject,
                stderr=tail,
            )
            raise error
        if returncode != 0:
            raise classify(
                self.stderr_tail,
                returncode=returncode,
                subject=self.subject,
                tool=self.tool,
                audio_required=self._audio_required,
            )
        return 0

    def _cancel_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()

    def close(self) -> None:
        """Kill the group if it is still running, reap it, close every pipe. Safe to call twice."""
        self._cancel_watchdog()
        if self._popen.poll() is None:
            self.kill()
        for stream in (self._popen.stdin, self._popen.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=10)
        self._stderr_thread.join(timeout=5)
        if self._popen.stderr is not None and not self._popen.stderr.closed:
            with contextlib.suppress(OSError, ValueError):
                self._popen.stderr.close()


@contextlib.contextmanager
def open_ffmpeg(
    args: Sequence[str],
    *,
    stdin: bool = False,
    stdout: bool = False,
    timeout: float | None = None,
    subject: str | None = None,
    inputs: Sequence[str | PathLike[str]] = (),
    exe: str | None = None,
    audio_required: bool = False,
) -> Iterator[FFmpegProcess]:
    """Start a long-running ffmpeg with pipes; on leaving the block it is always killed and reaped.

    Call ``proc.wait()`` inside the block to finish normally and learn whether it succeeded;
    leaving the block without it (early ``break``, an exception, a closed generator) kills the
    process group and is not an error.

    ``args`` exclude the executable (``exe`` defaults to ``ffmpeg_exe()``). ``timeout`` bounds the
    process's whole life; when it passes the group is killed and ``wait`` raises ``FFmpegTimeoutError``.
    """
    check_inputs(inputs)
    proc = FFmpegProcess(
        [exe or ffmpeg_exe(), *args],
        stdin=stdin,
        stdout=stdout,
        timeout=timeout,
        subject=subject,
        audio_required=audio_required,
    )
    try:
        yield proc
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.close()


@dataclass(frozen=True)
class RunResult:
    """A finished ffmpeg/ffprobe run."""

    returncode: int
    stdout: bytes
    stderr: str
    """The last ``STDERR_TAIL_BYTES`` of stderr."""
    wall_seconds: float


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout: float,
    subject: str | None = None,
    inputs: Sequence[str | PathLike[str]] = (),
    capture_stdout: bool = False,
    check: bool = True,
    exe: str | None = None,
    audio_required: bool = False,
) -> RunResult:
    """Run to completion within ``timeout`` seconds.

    With ``check`` a non-zero exit raises the classified error; without it the result is returned
    for the caller to judge (a timeout always raises ``FFmpegTimeoutError``).
    """
    out = _Tail(MAX_CAPTURED_STDOUT + 1)
    with open_ffmpeg(
        args,
        stdout=capture_stdout,
        timeout=timeout,
        subject=subject,
        inputs=inputs,
        exe=exe,
        audio_required=audio_required,
    ) as proc:
        reader: threading.Thread | None = None
        if capture_stdout:
            reader = threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True)
            reader.start()
        try:
            proc.wait()
            returncode = 0
        except FFmpegTimeoutError:
            raise
        except TalkfactoryError:
            if check:
                raise
            returncode = proc.returncode if proc.returncode is not None else -1
        if reader is not None:
            reader.join()
        if out.total > MAX_CAPTURED_STDOUT:
            raise FFmpegError(
                f"{proc.tool} wrote more than {MAX_CAPTURED_STDOUT} bytes to stdout", subject=subject
            )
        return RunResult(
            returncode=returncode,
            stdout=out.data(),
            stderr=proc.stderr_tail,
            wall_seconds=time.monotonic() - proc.started,
        )


def run_ffprobe(
    args: Sequence[str],
    *,
    timeout: float,
    subject: str | None = None,
    inputs: Sequence[str | PathLike[str]] = (),
) -> RunResult:
    """Run ffprobe (``FFmpegError`` when there is none; ``probe`` checks ``ffprobe_exe()`` first)."""
    exe = ffprobe_exe()
    if exe is None:
        raise FFmpegError("no ffprobe executable available", subject=subject)
    return run_ffmpeg(args, timeout=timeout, subject=subject, inputs=inputs, capture_stdout=True, exe=exe)


def read_exact(stream: IO[bytes], view: memoryview) -> int:
    """Fill ``view`` from ``stream``; returns the bytes read (less than ``len(view)`` only at EOF)."""
    filled = 0
    total = len(view)
    while filled < total:
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            break
        filled += n
    return filled


__all__ = [
    "MAX_CAPTURED_STDOUT",
    "STDERR_TAIL_BYTES",
    "FFmpegProcess",
    "RunResult",
    "check_inputs",
    "classify",
    "open_ffmpeg",
    "read_exact",
    "run_ffmpeg",
    "run_ffprobe",
]
