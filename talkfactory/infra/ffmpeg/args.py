"""Pure ffmpeg argument builders: small functions that return argv fragments.

Nothing here runs a process or touches a file, so every builder is tested by list equality.
Commands are assembled with ``concat``, which also merges repeated ``-vf``/``-af`` fragments
into one filter chain (ffmpeg silently keeps only the last ``-vf`` it is given)::

    concat(
        global_options(),
        input_file("in.flv"),
        video_filter(fps_filter(25)),
        video_filter(scale_filter(320, 240)),
        rawvideo_output(),
    )
    # [..., "-i", "in.flv", "-vf", "fps=25,scale=320:240", "-f", "rawvideo", ...]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from os import PathLike
from typing import Literal

from talkfactory.errors import ConfigurationError

Argv = list[str]
Rate = float | int | Fraction | str
H264Encoder = Literal["libx264", "h264_nvenc"]
H264_ENCODERS: tuple[H264Encoder, ...] = ("libx264", "h264_nvenc")

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
_NVENC_PRESET = {
    "ultrafast": "p1",
    "superfast": "p2",
    "veryfast": "p3",
    "faster": "p3",
    "fast": "p4",
    "medium": "p4",
    "slow": "p5",
    "slower": "p6",
    "veryslow": "p7",
}

_PIPES = frozenset({"pipe:0", "pipe:1", "pipe:2", "-"})

_MERGED_FILTER_FLAGS = {"-vf": "-vf", "-filter:v": "-vf", "-af": "-af", "-filter:a": "-af"}


# ---------------------------------------------------------------- value formatting


def to_fraction(fps: Rate) -> Fraction:
    """An exact frame rate: ``29.97002997`` becomes ``30000/1001``, ``"25"`` becomes ``25``."""
    if isinstance(fps, Fraction):
        value = fps
    elif isinstance(fps, int):
        value = Fraction(fps)
    elif isinstance(fps, str):
        try:
            value = Fraction(fps.strip())
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"not a frame rate: {fps!r}") from exc
    else:
        exact = Fraction(fps)
        # Floats like 29.97002997 stand for NTSC rationals; snap to a small denominator when it is
        # that close, else keep microsecond-level precision.
        value = exact.limit_denominator(1001)
        if abs(value - exact) > exact * Fraction(1, 10**9):
            value = exact.limit_denominator(1_000_000)
    if value <= 0:
        raise ValueError(f"frame rate must be positive, got {fps!r}")
    return value


def rate(fps: Rate) -> str:
    """Frame rate as ffmpeg reads it: ``"25"`` or ``"30000/1001"``."""
    value = to_fraction(fps)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def seconds(value: float) -> str:
    """A time in seconds with microsecond precision and no trailing zeros (``1.5``, ``0.033367``)."""
    if value < 0:
        raise ValueError(f"time must not be negative, got {value}")
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def file_url(path: str | PathLike[str]) -> str:
    """``file:<path>``: always a local file, never an option (``-x.flv``) or a protocol (``http:x``)."""
    text = os.fspath(path)
    return text if text.startswith("file:") else f"file:{text}"


def _output(target: str | PathLike[str]) -> str:
    # Our own pipe targets stay as they are; every other target is a file.
    text = os.fspath(target)
    return text if text in _PIPES else file_url(text)


# ---------------------------------------------------------------- what an input may be

MEDIA_DEMUXERS: tuple[str, ...] = (
    # video containers livestreams are recorded in
    "flv",
    "live_flv",
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "mpegts",
    "avi",
    "asf",
    "mpeg",
    "mxf",
    # audio files
    "wav",
    "w64",
    "mp3",
    "aac",
    "ogg",
    "flac",
    "aiff",
    "caf",
    "ac3",
    "eac3",
    "amr",
    "wv",
    # still images, chosen by content ("image2", chosen by extension for .jpg, see demuxers_for)
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "tiff_pipe",
    "gif",
)
"""Demuxers an input may be read with. Playlists and lists of other files (hls, concat, dash) are
left out: an uploaded text file must never make ffmpeg read files it names."""

_PATTERN_CHARS = frozenset("%*?[]{}")


def demuxers_for(path: str | PathLike[str]) -> tuple[str, ...]:
    """``MEDIA_DEMUXERS``, plus ``image2`` (how ffmpeg opens a ``.jpg`` by its name) when the name is literal.

    ``image2`` expands ``%d`` sequences and glob characters in the file name into other files (an
    upload named ``x%d.jpg`` would read ``x1.jpg``, ``x2.jpg`` beside it), so it is allowed only for
    names without those characters; ffmpeg has no way to turn the expansion off only when image2 is
    the demuxer it picks.
    """
    name = os.fspath(path)
    return MEDIA_DEMUXERS if _PATTERN_CHARS & set(name) else (*MEDIA_DEMUXERS, "image2")


INPUT_PROTOCOLS = "file"
"""Protocols an input may use: the file itself, nothing it refers to over the network."""


def input_guard(formats: Sequence[str] = MEDIA_DEMUXERS, protocols: str = INPUT_PROTOCOLS) -> Argv:
    """``-protocol_whitelist ... -format_whitelist ...`` for the next ``-i``: only real media is read."""
    return ["-protocol_whitelist", protocols, "-format_whitelist", ",".join(formats)]


# ---------------------------------------------------------------- global and input


def global_options(*, loglevel: str = "error", overwrite: bool = True) -> Argv:
    """``-nostdin`` keeps ffmpeg off the terminal; reading ``pipe:0`` as an input still works with it."""
    return ["-hide_banner", "-nostdin", "-loglevel", loglevel, "-y" if overwrite else "-n"]


def input_file(
    path: str | PathLike[str],
    *,
    start: float | None = None,
    duration: float | None = None,
    fmt: str | None = None,
) -> Argv:
    """``[-ss s] [-t d] [-f fmt] <guard> -i file:path``: input-side seek (fast, keyframe then trimmed).

    The guard (``input_guard``) lets ffmpeg read the file only as one of ``MEDIA_DEMUXERS`` (or
    ``fmt`` when given) through the ``file`` protocol.
    """
    argv: Argv = []
    if start is not None and start > 0:
        argv += ["-ss", seconds(start)]
    if duration is not None:
        argv += ["-t", seconds(duration)]
    if fmt is not None:
        argv += ["-f", fmt]
    guard = input_guard((fmt,) if fmt is not None else demuxers_for(path))
    return [*argv, *guard, "-i", file_url(path)]


def probe_args(path: str | PathLike[str]) -> Argv:
    """ffprobe arguments for the container and every stream as JSON, read under ``input_guard``."""
    return [
        "-v",
        "error",
        "-hide_banner",
        *input_guard(demuxers_for(path)),
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        "-i",
        file_url(path),
    ]


def rawvideo_input(
    *, width: int, height: int, fps: Rate, pix_fmt: str = "bgr24", source: str = "pipe:0"
) -> Argv:
    """Raw frames of one size and pixel format read from a pipe at a constant rate."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    guard = input_guard(("rawvideo",), protocols="pipe")
    return [
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-s",
        f"{width}x{height}",
        "-r",
        rate(fps),
        *guard,
        "-i",
        source,
    ]


def lavfi_input(graph: str) -> Argv:
    """A generated source (``testsrc2=size=320x240:rate=25``, ``sine=frequency=440``)."""
    return ["-f", "lavfi", "-i", graph]


# ---------------------------------------------------------------- stream selection


def map_stream(spec: str) -> Argv:
    return ["-map", spec]


def map_video(input_index: int = 0, stream: int = 0, *, optional: bool = False) -> Argv:
    return map_stream(f"{input_index}:v:{stream}{'?' if optional else ''}")


def map_audio(input_index: int = 0, stream: int = 0, *, optional: bool = False) -> Argv:
    return map_stream(f"{input_index}:a:{stream}{'?' if optional else ''}")


def no_video() -> Argv:
    return ["-vn"]


def no_audio() -> Argv:
    return ["-an"]


# ---------------------------------------------------------------- filters


def video_filter(*filters: str) -> Argv:
    """``-vf a,b``; several ``video_filter`` fragments are merged by ``concat``."""
    return ["-vf", ",".join(f for f in filters if f)]


def audio_filter(*filters: str) -> Argv:
    return ["-af", ",".join(f for f in filters if f)]


def fps_filter(fps: Rate) -> str:
    """Constant frame rate by duplicating or dropping frames (variable-rate sources become CFR)."""
    return f"fps={rate(fps)}"


def scale_filter(width: int, height: int) -> str:
    return f"scale={width}:{height}"


def even_pad_filter() -> str:
    """Pad odd widths/heights by one pixel (right/bottom edge): yuv420p needs even dimensions."""
    return "pad=ceil(iw/2)*2:ceil(ih/2)*2"


def bt709_filter() -> str:
    """RGB to limited-range BT.709 (what players assume for HD H.264) instead of swscale's BT.601 default.

    ``accurate_rnd``: swscale's fast RGB->YUV path is biased (grey 16 comes back as 15,15,13; every
    pixel darker and less blue); accurate rounding round-trips grey exactly for ~2 ms/frame at 720p.
    """
    return "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd"


def format_filter(pix_fmt: str = "yuv420p") -> str:
    return f"format={pix_fmt}"


def async_resample_filter(*, first_pts: int | None = 0) -> str:
    """Keep audio on its timestamps: fill gaps with silence, trim overlaps.

    Livestream recordings have timestamp gaps (dropped packets, encoder stalls). Plain decoding
    would butt the pieces together, so everything after a gap plays early and lip sync drifts.
    ``async=1`` makes sample ``i`` sit at time ``i / rate``; ``first_pts=0`` pads a late-starting
    stream so sample 0 is the file's time 0 (or the ``-ss`` point).
    """
    return "aresample=async=1" + ("" if first_pts is None else f":first_pts={first_pts}")


def pad_audio_filter() -> str:
    """Silence after the end, so an output ``-t`` longer than the audio keeps an audio track to the end."""
    return "apad"


# ---------------------------------------------------------------- outputs


def audio_format(*, sample_rate: int, channels: int) -> Argv:
    return ["-ac", str(channels), "-ar", str(sample_rate)]


def audio_extraction(*, stream: int = 0, sample_rate: int, channels: int = 1) -> Argv:
    """Audio only, straight from the container: ``-vn`` means the video is never decoded."""
    return [*no_video(), *map_audio(0, stream), *audio_format(sample_rate=sample_rate, channels=channels)]


def pcm_s16le_output(target: str | PathLike[str] = "pipe:1") -> Argv:
    """Headerless signed 16-bit little-endian PCM."""
    return ["-c:a", "pcm_s16le", "-f", "s16le", _output(target)]


def wav_output(target: str | PathLike[str]) -> Argv:
    return ["-c:a", "pcm_s16le", "-f", "wav", _output(target)]


def passthrough_timing() -> Argv:
    """Emit frames exactly as the filter graph made them (the fps filter already made them CFR)."""
    return ["-fps_mode", "passthrough"]


def rawvideo_output(pix_fmt: str = "bgr24", target: str = "pipe:1") -> Argv:
    return ["-f", "rawvideo", "-pix_fmt", pix_fmt, target]


def pixel_format(pix_fmt: str = "yuv420p") -> Argv:
    return ["-pix_fmt", pix_fmt]


def nvenc_preset(preset: str) -> str:
    """Map an x264 preset name onto NVENC's p1 (fastest) .. p7 (best); ``p1``..``p7`` pass through."""
    if preset in {f"p{i}" for i in range(1, 8)}:
        return preset
    try:
        return _NVENC_PRESET[preset]
    except KeyError:
        raise ConfigurationError(f"unknown encoder preset {preset!r}") from None


def h264_encoder(encoder: str = "libx264", *, crf: int = 20, preset: str = "veryfast") -> Argv:
    """H.264 High profile at constant quality ``crf`` (0-51, lower is better)."""
    if not 0 <= crf <= 51:
        raise ConfigurationError(f"crf must be within 0..51, got {crf}")
    if encoder == "libx264":
        if preset not in X264_PRESETS:
            raise ConfigurationError(f"unknown x264 preset {preset!r}")
        return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-profile:v", "high"]
    if encoder == "h264_nvenc":
        # VBR with a constant-quality target and no bitrate cap is NVENC's equivalent of x264 CRF.
        return [
            "-c:v",
            "h264_nvenc",
            "-preset",
            nvenc_preset(preset),
            "-rc",
            "vbr",
            "-cq",
            str(crf),
            "-b:v",
            "0",
            "-profile:v",
            "high",
        ]
    raise ConfigurationError(f"unsupported H.264 encoder {encoder!r}; use one of {', '.join(H264_ENCODERS)}")


def bt709_tags() -> Argv:
    """Tag the stream as BT.709 so players do not guess."""
    return ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]


def bt601_tags() -> Argv:
    """Limited-range BT.601 matrix (OpenCV's BGR->I420) on sRGB/BT.709 primaries and transfer."""
    return [
        "-colorspace",
        "smpte170m",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-color_range",
        "tv",
    ]


def aac_audio(bitrate: str = "128k") -> Argv:
    return ["-c:a", "aac", "-b:a", bitrate]


def faststart() -> Argv:
    """Move the ``moov`` index before the media data so browsers start playing before the download ends."""
    return ["-movflags", "+faststart"]


def output_duration(duration: float) -> Argv:
    return ["-t", seconds(duration)]


def frame_limit(frames: int) -> Argv:
    return ["-frames:v", str(frames)]


def mp4_output(target: str | PathLike[str]) -> Argv:
    return ["-f", "mp4", _output(target)]


def null_output() -> Argv:
    return ["-f", "null", "-"]


def progress_output(target: str = "pipe:1") -> Argv:
    """Machine-readable ``key=value`` progress (``frame=N`` ...) instead of the terminal status line."""
    return ["-progress", target, "-nostats"]


# ---------------------------------------------------------------- assembly


def concat(*parts: Sequence[str]) -> Argv:
    """Join argv fragments, merging every ``-vf`` (and every ``-af``) into one comma-separated chain.

    The merged chain sits where the first fragment of its kind was, so input/output order is kept.
    """
    flat = [arg for part in parts for arg in part]
    out: Argv = []
    chains: dict[str, list[str]] = {}
    slots: dict[str, int] = {}
    i = 0
    while i < len(flat):
        arg = flat[i]
        flag = _MERGED_FILTER_FLAGS.get(arg)
        if flag is not None and i + 1 < len(flat):
            if flat[i + 1]:
                chains.setdefault(flag, []).append(flat[i + 1])
            if flag not in slots:
                slots[flag] = len(out)
                out += [flag, ""]
            i += 2
            continue
        out.append(arg)
        i += 1
    for flag, slot in sorted(slots.items(), key=lambda kv: kv[1], reverse=True):
        if chains.get(flag):
            out[slot + 1] = ",".join(chains[flag])
        else:
            del out[slot : slot + 2]
    return out


# ---------------------------------------------------------------- channel exports


def channel_layout_name(channels: int) -> str:
    """ffmpeg's layout name for a channel count: ``mono``, ``stereo``, else ``<n>c``."""
    if channels < 1:
        raise ValueError(f"channel count must be positive, got {channels}")
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def aformat_filter(*, channels: int | None = None, sample_rate: int | None = None) -> str:
    """``aformat=channel_layouts=stereo:sample_rates=48000``: convert in the chain ("" when neither given).

    Converting in the chain rather than with output ``-ac``/``-ar`` lets the filters after it
    (loudness gain, a true-peak limiter) see the audio in the layout and rate that is encoded.
    """
    parts = []
    if channels is not None:
        parts.append(f"channel_layouts={channel_layout_name(channels)}")
    if sample_rate is not None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        parts.append(f"sample_rates={sample_rate}")
    return "aformat=" + ":".join(parts) if parts else ""


def kbps(value: int) -> str:
    """A bitrate in kbit/s as ffmpeg reads it: ``8000k``."""
    if value <= 0:
        raise ValueError(f"bitrate must be positive, got {value}")
    return f"{value}k"


def packet_flags_probe_args(path: str | PathLike[str]) -> Argv:
    """ffprobe arguments listing the first video stream's packets (``pts_time,flags`` CSV), guarded.

    Demuxing only: nothing is decoded, so even an hour of video is read in about a second.
    """
    return [
        "-v",
        "error",
        "-hide_banner",
        *input_guard(demuxers_for(path)),
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time,flags",
        "-of",
        "csv=p=0",
        "-i",
        file_url(path),
    ]


__all__ = [
    "H264_ENCODERS",
    "INPUT_PROTOCOLS",
    "MEDIA_DEMUXERS",
    "X264_PRESETS",
    "Argv",
    "H264Encoder",
    "Rate",
    "aac_audio",
    "aformat_filter",
    "async_resample_filter",
    "audio_extraction",
    "audio_filter",
    "audio_format",
    "bt601_tags",
    "bt709_filter",
    "bt709_tags",
    "channel_layout_name",
    "concat",
    "demuxers_for",
    "even_pad_filter",
    "faststart",
    "format_filter",
    "fps_filter",
    "frame_limit",
    "global_options",
    "h264_encoder",
    "file_url",
    "input_file",
    "input_guard",
    "kbps",
    "lavfi_input",
    "map_audio",
    "map_stream",
    "map_video",
    "mp4_output",
    "no_audio",
    "no_video",
    "null_output",
    "nvenc_preset",
    "output_duration",
    "packet_flags_probe_args",
    "pad_audio_filter",
    "passthrough_timing",
    "pcm_s16le_output",
    "pixel_format",
    "probe_args",
    "progress_output",
    "rate",
    "rawvideo_input",
    "rawvideo_output",
    "scale_filter",
    "seconds",
    "to_fraction",
    "video_filter",
    "wav_output",
]
