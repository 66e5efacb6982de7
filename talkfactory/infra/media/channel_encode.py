"""Encoder options a channel asks for: profile, a fixed closed GOP, a bitrate cap, the audio format.

``FrameEncoder(options=...)`` (and ``encode_args``) add these to the default master encode.
Platforms want a keyframe at a fixed interval (YouTube, live ingest, Bilibili's "at least every
10 s"), a closed GOP (YouTube, Instagram, X), a peak bitrate (Instagram's 25 Mbps VBR, Bilibili's
60 Mbps) and AAC-LC at 48 kHz stereo. The builders are pure and tested by list equality.
"""

from __future__ import annotations

from dataclasses import dataclass

from talkfactory.errors import ConfigurationError
from talkfactory.infra.ffmpeg import args as a

H264_PROFILES = ("baseline", "main", "high")


@dataclass(frozen=True, kw_only=True)
class ChannelEncodeOptions:
    """What one channel's encode adds to the master's (crf and preset stay the caller's)."""

    profile: str = "high"
    gop_frames: int
    """Frames from one keyframe to the next (``gop_frames_for(fps, seconds)``); scene cuts add none."""
    closed_gop: bool = True
    maxrate_kbps: int | None = None
    """Peak video bitrate (VBV); the quality target (crf/cq) still rules below it."""
    bufsize_kbps: int | None = None
    """VBV buffer; ``2 * maxrate_kbps`` when None (a cap over about two seconds)."""
    audio_rate: int = 48_000
    audio_channels: int = 2
    audio_bitrate_kbps: int = 192
    audio_filters: tuple[str, ...] = ()
    """Run after the conversion to ``audio_rate``/``audio_channels`` (the loudness normalisation)."""

    def __post_init__(self) -> None:
        if self.profile not in H264_PROFILES:
            raise ConfigurationError(
                f"unknown H.264 profile {self.profile!r}; use one of {', '.join(H264_PROFILES)}"
            )
        if self.gop_frames < 1:
            raise ConfigurationError(f"gop_frames must be at least 1, got {self.gop_frames}")
        for name in ("maxrate_kbps", "bufsize_kbps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive, got {value}")
        if self.bufsize_kbps is not None and self.maxrate_kbps is None:
            raise ConfigurationError("bufsize_kbps needs maxrate_kbps")
        if self.audio_rate <= 0 or self.audio_channels <= 0 or self.audio_bitrate_kbps <= 0:
            raise ConfigurationError(
                "audio must be positive: "
                f"{self.audio_rate} Hz, {self.audio_channels} ch, {self.audio_bitrate_kbps} kb/s"
            )

    @property
    def effective_bufsize_kbps(self) -> int | None:
        if self.maxrate_kbps is None:
            return None
        return self.bufsize_kbps if self.bufsize_kbps is not None else 2 * self.maxrate_kbps


def gop_frames_for(fps: a.Rate, interval_s: float) -> int:
    """Frames in ``interval_s`` seconds at ``fps`` (at least 1): 2 s at 30000/1001 is 60."""
    if interval_s <= 0:
        raise ConfigurationError(f"keyframe interval must be positive, got {interval_s}")
    return max(1, round(float(a.to_fraction(fps)) * interval_s))


def options_argv(options: ChannelEncodeOptions, encoder: str) -> a.Argv:
    """The video options for ``encoder`` (placed after ``h264_encoder``'s, so these win).

    libx264: ``-g N -keyint_min N -sc_threshold 0`` puts a keyframe exactly every N frames (no
    extra ones at scene cuts), ``-flags +cgop`` closes each GOP. NVENC: ``-g N`` (ffmpeg sets
    NVENC's IDR period to the GOP length, so every GOP starts with an IDR and is closed) and
    ``-no-scenecut 1`` (no extra keyframes when lookahead is on). ``-maxrate/-bufsize`` cap both.
    """
    gop = str(options.gop_frames)
    argv: a.Argv = ["-profile:v", options.profile]
    if encoder == "libx264":
        argv += ["-g", gop, "-keyint_min", gop, "-sc_threshold", "0"]
        if options.closed_gop:
            argv += ["-flags", "+cgop"]
    elif encoder == "h264_nvenc":
        argv += ["-g", gop, "-no-scenecut", "1"]
    else:
        raise ConfigurationError(
            f"unsupported H.264 encoder {encoder!r}; use one of {', '.join(a.H264_ENCODERS)}"
        )
    bufsize = options.effective_bufsize_kbps
    if options.maxrate_kbps is not None and bufsize is not None:
        argv += ["-maxrate", a.kbps(options.maxrate_kbps), "-bufsize", a.kbps(bufsize)]
    return argv


def audio_chain(options: ChannelEncodeOptions) -> list[str]:
    """The format conversion, then the channel's filters (loudness runs on what is encoded)."""
    head = a.aformat_filter(channels=options.audio_channels, sample_rate=options.audio_rate)
    return [head, *options.audio_filters]


def audio_output_argv(options: ChannelEncodeOptions) -> a.Argv:
    """``-ac 2 -ar 48000 -c:a aac -b:a 192k``: AAC-LC (ffmpeg's default AAC profile), the channel's format."""
    return [
        *a.audio_format(sample_rate=options.audio_rate, channels=options.audio_channels),
        *a.aac_audio(a.kbps(options.audio_bitrate_kbps)),
    ]


__all__ = [
    "H264_PROFILES",
    "ChannelEncodeOptions",
    "audio_chain",
    "audio_output_argv",
    "gop_frames_for",
    "options_argv",
]
