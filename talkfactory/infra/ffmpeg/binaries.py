"""Which ffmpeg and ffprobe executables to run.

Resolution order, decided once per process (``clear_cache`` resets it, for tests):

* ``ffmpeg_exe``: ``$TALKFACTORY_FFMPEG``, else ``ffmpeg`` on ``PATH``, else the static binary bundled
  with the ``imageio-ffmpeg`` wheel (a pip-only way to get libx264 and NVENC on slim worker images).
* ``ffprobe_exe``: ``$TALKFACTORY_FFPROBE``, else ``ffprobe`` on ``PATH``, else ``None``: imageio-ffmpeg
  ships no ffprobe, and ``talkfactory.infra.media.probe`` then falls back to PyAV.
"""

from __future__ import annotations

import functools
import os
import shutil

from talkfactory.errors import ConfigurationError

FFMPEG_ENV = "TALKFACTORY_FFMPEG"
FFPROBE_ENV = "TALKFACTORY_FFPROBE"


def _from_env(var: str) -> str | None:
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    found = shutil.which(value)
    if found is None:
        raise ConfigurationError(f"{var}={value!r} is not an executable file or a command on PATH")
    return found


@functools.cache
def ffmpeg_exe() -> str:
    """Absolute path of the ffmpeg to run."""
    from_env = _from_env(FFMPEG_ENV)
    if from_env is not None:
        return from_env
    on_path = shutil.which("ffmpeg")
    if on_path is not None:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - imageio-ffmpeg is a hard dependency
        raise ConfigurationError("no ffmpeg: not on PATH and imageio-ffmpeg is not installed") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@functools.cache
def ffprobe_exe() -> str | None:
    """Absolute path of the ffprobe to run, or ``None`` when there is none (probe then uses PyAV)."""
    from_env = _from_env(FFPROBE_ENV)
    if from_env is not None:
        return from_env
    return shutil.which("ffprobe")


def clear_cache() -> None:
    """Forget the resolved paths (after changing the environment variables)."""
    ffmpeg_exe.cache_clear()
    ffprobe_exe.cache_clear()


__all__ = ["FFMPEG_ENV", "FFPROBE_ENV", "clear_cache", "ffmpeg_exe", "ffprobe_exe"]
