"""Which H.264 encoder this machine can use: NVENC only when a real trial encode works.

``h264_nvenc`` being listed by ``ffmpeg -encoders`` proves nothing: the Debian build lists it on
machines with no GPU ("Cannot load libcuda.so.1"), and A100/H100/H200 have no NVENC units at all.
So a 0.1 s lavfi encode to the null muxer decides, once per process and ffmpeg binary.
``$TALKFACTORY_VIDEO_ENCODER`` (``libx264`` or ``h264_nvenc``) overrides the choice.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from talkfactory.errors import ConfigurationError, FFmpegTimeoutError, TalkfactoryError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.binaries import ffmpeg_exe
from talkfactory.infra.ffmpeg.runner import run_ffmpeg

ENCODER_ENV = "TALKFACTORY_VIDEO_ENCODER"
TRIAL_TIMEOUT_S = 30.0
_CONTEXT_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder to use and why (goes into logs and lineage)."""

    name: str
    reason: str


def trial_args(encoder: str) -> a.Argv:
    """A tiny encode: 0.1 s of test pattern (NVENC's minimum frame size is well below 256x256)."""
    return a.concat(
        a.global_options(),
        a.lavfi_input("testsrc=size=256x256:rate=25"),
        a.output_duration(0.1),
        ["-c:v", encoder],
        a.pixel_format("yuv420p"),
        a.null_output(),
    )


def _reason(stderr: str, encoder: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith(f"[{encoder} @")]
    chosen = (own or lines or ["no error output"])[0]
    return _CONTEXT_PREFIX.sub("", chosen)


@functools.cache
def _trial(exe: str, encoder: str) -> tuple[bool, str]:
    try:
        result = run_ffmpeg(trial_args(encoder), timeout=TRIAL_TIMEOUT_S, exe=exe, check=False)
    except FFmpegTimeoutError:
        return False, f"trial encode ran past {TRIAL_TIMEOUT_S:g} s"
    except TalkfactoryError as exc:  # could not even start the binary
        return False, exc.message
    if result.returncode != 0:
        return False, _reason(result.stderr, encoder)
    return True, "trial encode succeeded"


def choose_h264_encoder(ffmpeg: str | None = None) -> EncoderChoice:
    """``h264_nvenc`` when a trial encode succeeds, else ``libx264`` with the reason.

    Raises ``ConfigurationError`` when ``$TALKFACTORY_VIDEO_ENCODER`` names an unknown encoder, or
    forces ``h264_nvenc`` on a machine where it cannot encode.
    """
    exe = ffmpeg or ffmpeg_exe()
    forced = os.environ.get(ENCODER_ENV, "").strip()
    if forced:
        if forced not in a.H264_ENCODERS:
            raise ConfigurationError(f"{ENCODER_ENV}={forced!r}: use one of {', '.join(a.H264_ENCODERS)}")
        if forced == "libx264":
            return EncoderChoice("libx264", f"{ENCODER_ENV}=libx264")
        ok, why = _trial(exe, forced)
        if not ok:
            raise ConfigurationError(f"{ENCODER_ENV}={forced} but its trial encode failed: {why}")
        return EncoderChoice(forced, f"{ENCODER_ENV}={forced} ({why})")
    ok, why = _trial(exe, "h264_nvenc")
    if ok:
        return EncoderChoice("h264_nvenc", f"h264_nvenc {why}")
    return EncoderChoice("libx264", f"h264_nvenc trial failed: {why}")


def clear_cache() -> None:
    """Forget trial results (tests, or after installing a driver)."""
    _trial.cache_clear()


__all__ = ["ENCODER_ENV", "EncoderChoice", "choose_h264_encoder", "clear_cache", "trial_args"]
