"""Every error talkfactory raises on purpose, in one place.

The tree (retries key off the first split: a ``TransientError`` may succeed if tried again,
a ``PermanentError`` never will, so it is recorded and the item is quarantined)::

    TalkfactoryError
    ├── PermanentError                      bad input or configuration: never retried
    │   ├── InvalidMediaError (ValueError)  unreadable, empty, not media, or truncated beyond use
    │   │   └── NoAudioStreamError          a recording with no audio stream
    │   ├── MediaNotFoundError (FileNotFoundError)
    │   ├── NoFaceError (ValueError)        an avatar with no usable face at all
    │   ├── NoSpeechError (ValueError)      a recording with no usable speech
    │   ├── CheckpointError (ValueError)    a model checkpoint that is missing, truncated or mismatched
    │   ├── ConfigurationError (ValueError) settings that cannot work
    │   │   └── LineageDatabaseError        the lineage database is unreadable, read-only or unreachable
    │   ├── OutputNotWritableError (PermissionError)  an output folder that cannot be written
    │   ├── DiskFullError (OSError)         no space left on the device being written
    │   ├── FFmpegUsageError (RuntimeError) ffmpeg/ffprobe rejected the arguments it was given
    │   ├── InterruptedRunError             the user stopped the run (Ctrl-C, SIGTERM): not a failure
    │   ├── SyncCheckError (ValueError)     a render failed the sync check under --qc-strict
    │   └── StorePermanentError             object store: no such key/bucket, access denied, bad key
    │       ├── ObjectNotFoundError (FileNotFoundError)
    │       ├── StoreAccessError (PermissionError)
    │       └── InvalidKeyError (ValueError)  unusable key: `..`, control characters, > 1024 bytes
    └── TransientError                      worth another attempt
        ├── FFmpegError (RuntimeError)      ffmpeg/ffprobe failed for a reason other than bad input
        │   └── FFmpegTimeoutError (TimeoutError)
        ├── StoreUnavailableError (ConnectionError)
        ├── DatabaseUnavailableError (ConnectionError)
        ├── RenderBusyError                 another live process is rendering the same render now
        ├── RunCrashedError (RuntimeError)  a worker died under a render run; it is resubmitted
        ├── ExecutorUnavailableError (ConnectionError)  the Ray cluster cannot be reached or placed on
        └── ExecutorTimeoutError (TimeoutError)  a job got no free executor, or no result, in time

Leaves also subclass the matching built-in (the PyAV habit), so ``except ValueError`` and
``except FileNotFoundError`` keep working for callers who do not know this module.
Every error carries the input it concerns (``subject``) so messages and lineage name it.
"""

from __future__ import annotations


class TalkfactoryError(Exception):
    """Base of every deliberate talkfactory error."""

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        self.subject = subject
        self.message = message
        super().__init__(f"{subject}: {message}" if subject else message)


class PermanentError(TalkfactoryError):
    """Trying again cannot help; record it and quarantine the item."""


class TransientError(TalkfactoryError):
    """Another attempt may succeed (a flaky process, a server restarting)."""


class InvalidMediaError(PermanentError, ValueError):
    """The file is not media we can use: empty, not a container, no decodable frames."""


class NoAudioStreamError(InvalidMediaError):
    """The recording has no audio stream, so there is no speech to re-use."""


class MediaNotFoundError(PermanentError, FileNotFoundError):
    """An input path does not exist."""


class NoFaceError(PermanentError, ValueError):
    """No face was found in any frame of an avatar."""


class NoSpeechError(PermanentError, ValueError):
    """The recording holds no usable speech (silence, music only)."""


class CheckpointError(PermanentError, ValueError):
    """A model checkpoint is missing, truncated, or does not match the network."""


class ConfigurationError(PermanentError, ValueError):
    """Settings that cannot work (unknown backend, bad URL, impossible bounds)."""


class SyncCheckError(PermanentError, ValueError):
    """A render's mouth is out of sync with its speech (or the check could not run) and --qc-strict is on."""


class LineageDatabaseError(ConfigurationError):
    """The lineage database cannot be used as configured: corrupt, read-only, unreachable, wrong schema.

    ``subject`` is the database URL with its password masked; the message says what to do.
    """


class OutputNotWritableError(PermanentError, PermissionError):
    """A folder talkfactory must write to is read-only or not ours."""


class DiskFullError(PermanentError, OSError):
    """The device being written has no space left; trying the same write again cannot help."""


class FFmpegUsageError(PermanentError, RuntimeError):
    """ffmpeg or ffprobe refused its arguments (an unknown option, an unsafe file name)."""


class InterruptedRunError(PermanentError):
    """The run was stopped on request (Ctrl-C, SIGTERM). Recorded as ``interrupted``, never retried."""


class StorePermanentError(PermanentError):
    """An object-store request that will fail the same way again."""


class ObjectNotFoundError(StorePermanentError, FileNotFoundError):
    """The key or bucket does not exist."""


class StoreAccessError(StorePermanentError, PermissionError):
    """Credentials are wrong or lack the permission."""


class InvalidKeyError(StorePermanentError, ValueError):
    """An object key that no store may use: traversal, empty or dot segments, control characters, too long."""


class FFmpegError(TransientError, RuntimeError):
    """ffmpeg or ffprobe exited with an error that does not point at the input."""

    def __init__(self, message: str, *, subject: str | None = None, stderr: str = "") -> None:
        self.stderr = stderr
        super().__init__(message, subject=subject)


class FFmpegTimeoutError(FFmpegError, TimeoutError):
    """ffmpeg ran past its time limit and was killed."""


class StoreUnavailableError(TransientError, ConnectionError):
    """The object store could not be reached or answered with a server error."""


class DatabaseUnavailableError(TransientError, ConnectionError):
    """The lineage database dropped the connection or asked us to retry."""


class RenderBusyError(TransientError):
    """Another live process holds this render (same recording, avatar, backend and parameters)."""


class RunCrashedError(TransientError, RuntimeError):
    """A fanned-out run ended Crashed (its worker or machine went away), not by its own failure."""


class ExecutorUnavailableError(TransientError, ConnectionError):
    """The executors' cluster (Ray) cannot be reached, or its actors cannot be placed in time."""


class ExecutorTimeoutError(TransientError, TimeoutError):
    """A job waited past its limit for a free executor or for its result; the executor was restarted."""


def is_transient(exc: BaseException) -> bool:
    """True when another attempt may succeed; what Prefect's retry condition asks."""
    return isinstance(exc, TransientError)


__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "ExecutorTimeoutError",
    "ExecutorUnavailableError",
    "DiskFullError",
    "FFmpegUsageError",
    "InterruptedRunError",
    "LineageDatabaseError",
    "OutputNotWritableError",
    "FFmpegError",
    "FFmpegTimeoutError",
    "InvalidKeyError",
    "RenderBusyError",
    "RunCrashedError",
    "InvalidMediaError",
    "MediaNotFoundError",
    "NoAudioStreamError",
    "NoFaceError",
    "NoSpeechError",
    "ObjectNotFoundError",
    "PermanentError",
    "StoreAccessError",
    "StorePermanentError",
    "StoreUnavailableError",
    "TalkfactoryError",
    "TransientError",
    "is_transient",
]
