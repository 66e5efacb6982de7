"""The live-push job: sources -> plan (copy or re-encode) -> attempts with backoff -> lineage.

A push plays a playlist of exports back to back into one RTMP(S) stream (``infra.live.push``). The plan
copies the files as they are when every one already fits the channel's live limits (H.264 + AAC, size,
frame rate, keyframe spacing, peak bitrate, audio rate) and all share one format (a stream cannot change
size mid-way); otherwise it re-encodes the whole playlist to one format inside the limits, and says why.

When the connection fails (refused, closed, dead socket) the push is tried again after a growing wait, a
bounded number of times, resuming at a file boundary: files already sent whole are not sent again; the
file that was cut is skipped (``resume="next"``, the default: the stream carries on with what comes
next, as a broadcast would) or sent again from its start (``resume="restart"``). A connection that never
sent anything starts again at the same file either way. A source that cannot be read stops the push at
once (retrying cannot help). Each push and each attempt is a lineage row; none holds the stream key.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

from talkfactory.errors import (
    ConfigurationError,
    InterruptedRunError,
    InvalidMediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    PermanentError,
    TalkfactoryError,
)
from talkfactory.infra.lineage.base import Provenance
from talkfactory.infra.lineage.pushes import PushableExport
from talkfactory.infra.live.packets import PacketStats, packet_stats
from talkfactory.infra.live.push import (
    DEFAULT_RW_TIMEOUT_S,
    START_SLACK_S,
    LivePushError,
    PushFile,
    PushProgress,
    push_files,
)
from talkfactory.infra.live.push_args import LiveEncode, LiveEncoder, LiveLimits, plan_encode
from talkfactory.infra.live.urls import PushTarget, redact, resolve_target
from talkfactory.infra.media.probe import probe

log = logging.getLogger(__name__)

PushMode = Literal["copy", "encode"]
ResumeAt = Literal["next", "restart"]
PushStatus = Literal["done", "partial", "failed"]

COPY_VIDEO_CODECS = ("h264",)
COPY_AUDIO_CODECS = ("aac",)
"""What FLV over RTMP carries that every ingest server takes (enhanced RTMP's HEVC/AV1 is not assumed)."""
_BITRATE_SLACK = 1.10
"""A 2-s peak up to 10 % over the cap still passes: ingest servers buffer a few seconds."""


@dataclass(frozen=True)
class SourceFacts:
    """What the plan needs to know of one source."""

    uri: str
    """How the user or lineage names it (shown in reasons and stored in lineage)."""
    path: Path
    duration_s: float
    video_codec: str
    width: int
    height: int
    fps: Fraction
    pix_fmt: str | None
    audio_codec: str
    audio_rate: int
    audio_channels: int
    stats: PacketStats
    export_id: int | None = None

    def shape(self) -> tuple[Any, ...]:
        """What must be equal across files copied into one stream."""
        return (
            self.video_codec,
            self.width,
            self.height,
            self.fps,
            self.pix_fmt,
            self.audio_codec,
            self.audio_rate,
            self.audio_channels,
        )


@dataclass(frozen=True)
class PushPlan:
    mode: PushMode
    reasons: tuple[str, ...]
    """Why the files are re-encoded (empty for ``copy``)."""
    encode: LiveEncode | None
    files: tuple[PushFile, ...]
    total_s: float


@dataclass(frozen=True)
class PushPolicy:
    """How hard a push tries."""

    attempts: int = 3
    """Connections tried in all, the first included."""
    backoff_s: float = 2.0
    """Wait before the second attempt; doubles after each failure, up to ``backoff_cap_s``."""
    backoff_cap_s: float = 30.0
    resume: ResumeAt = "next"
    rw_timeout_s: float = DEFAULT_RW_TIMEOUT_S
    stall_timeout_s: float | None = None
    """No progress for this long stops an attempt (default ``rw_timeout_s + 5``)."""
    send_buffer_bytes: int | None = None
    """A smaller socket send buffer finds a dead server sooner (see ``push_args.flv_output``)."""
    verify_tls: bool = True
    """Check an rtmps server's certificate (against the system's CAs, or ``ca_file``)."""
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.backoff_cap_s < 0 or self.rw_timeout_s <= 0:
            raise ConfigurationError(f"impossible push policy: {self}")


@dataclass(frozen=True)
class AttemptReport:
    number: int
    first_file: int
    files_done: int
    file_on_air: int | None
    status: Literal["succeeded", "failed"]
    error: str | None
    pushed_s: float
    wall_s: float


@dataclass
class PushReport:
    """How a push went; ``target`` is the masked URL."""

    target: str
    mode: PushMode
    reasons: tuple[str, ...]
    files: tuple[str, ...]
    total_s: float
    channel: str | None = None
    push_id: int | None = None
    status: PushStatus = "failed"
    attempts: list[AttemptReport] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    files_done: int = 0
    pushed_s: float = 0.0
    bytes_sent: int = 0
    error: str | None = None
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def summary(self) -> str:
        tries = f"{len(self.attempts)} attempt{'s' if len(self.attempts) != 1 else ''}"
        head = f"{self.status}: {self.files_done} of {len(self.files)} files sent whole"
        cut = f", {len(self.skipped)} cut and skipped" if self.skipped else ""
        return f"{head}{cut}, {self.pushed_s:.1f} of {self.total_s:.1f} s, {self.mode}, {tries}"


class PushLineage(Protocol):
    """The lineage writes a push makes (``infra.lineage.pushes.PushQueries``)."""

    def start_push(
        self,
        *,
        target: str,
        channel: str | None,
        mode: str,
        reasons: list[str],
        sources: list[dict[str, Any]],
        total_s: float,
        prov: Provenance,
    ) -> int: ...

    def begin_push_attempt(self, push_id: int, *, number: int, first_file: int, prov: Provenance) -> int: ...

    def finish_push_attempt(
        self,
        attempt_id: int,
        *,
        files_done: int,
        pushed_s: float,
        bytes_sent: int,
        file_on_air: int | None = None,
        error: BaseException | None = None,
    ) -> None: ...

    def finish_push(
        self,
        push_id: int,
        *,
        status: str,
        files_done: int,
        skipped: list[int],
        pushed_s: float,
        bytes_sent: int,
        error: BaseException | str | None = None,
    ) -> None: ...


class ExportLookup(Protocol):
    def pushable_exports(self, ref: str, channel: str | None = None) -> list[PushableExport]: ...


# ------------------------------------------------------------------------------------------ limits


def live_limits_of(spec: object) -> LiveLimits:
    """``LiveLimits`` from a channel preset (``ChannelSpec``): its ``rtmp_*`` fields where set, else the
    limits it has for files (size, frame rate, bitrate cap, keyframe interval, audio rate)."""

    def pick(*names: str) -> Any:
        for name in names:
            value = getattr(spec, name, None)
            if value is not None:
                return value
        return None

    defaults = LiveLimits()
    return LiveLimits(
        max_width=pick("rtmp_max_width", "width"),
        max_height=pick("rtmp_max_height", "height"),
        max_fps=pick("rtmp_max_fps", "max_fps"),
        video_maxrate_kbps=pick(
            "rtmp_max_bitrate_kbps", "rtmp_video_maxrate_kbps", "rtmp_maxrate_kbps", "video_maxrate_kbps"
        ),
        keyframe_interval_s=pick("rtmp_keyframe_interval_s", "keyframe_interval_s")
        or defaults.keyframe_interval_s,
        audio_rate=pick("rtmp_audio_rate", "audio_rate"),
        audio_bitrate_kbps=pick("rtmp_audio_bitrate_kbps", "audio_bitrate_kbps")
        or defaults.audio_bitrate_kbps,
    )


def channel_target(spec: object) -> str | None:
    """The push URL a channel preset of kind ``rtmp`` names: ``rtmp_url`` + ``/`` + ``rtmp_key`` (a
    reference, ``env:NAME`` or ``file:/path``, that ``urls.resolve_target`` reads); None without one."""
    url = getattr(spec, "rtmp_url", None)
    if not url:
        return None
    key = getattr(spec, "rtmp_key", None)
    return f"{str(url).rstrip('/')}/{key}" if key else str(url)


def channel_preset(name: str, user_file: Path | None = None) -> Any:
    """The channel preset ``name`` (``pipeline.exports.channels``, the user's file included)."""
    try:
        channels = importlib.import_module("talkfactory.pipeline.exports.channels")
    except ImportError:
        raise ConfigurationError(
            "channel presets are not available in this installation", subject=name
        ) from None
    return channels.load_channels(user_file).get(name)


def channel_limits(name: str, user_file: Path | None = None) -> LiveLimits:
    """The live limits of the channel preset ``name``."""
    return live_limits_of(channel_preset(name, user_file))


# ------------------------------------------------------------------------------------------ sources


def resolve_sources(
    refs: Sequence[str],
    *,
    channel: str | None = None,
    lineage: ExportLookup | None = None,
    fetch: Callable[[str], Path] | None = None,
) -> list[tuple[str, Path, int | None]]:
    """``(name, local path, export id)`` per file to play, in order.

    A ref is a local file, a store URL (``fetch`` makes a local copy), or a lineage reference (a
    recording or an export's name: that recording's published exports of ``channel`` in speaking order).
    """
    found: list[tuple[str, Path, int | None]] = []
    for ref in refs:
        path = Path(ref).expanduser()
        if path.is_file():
            found.append((ref, path, None))
            continue
        if "://" in ref:
            if fetch is None:
                raise ConfigurationError("store URLs need a fetcher (settings)", subject=ref)
            found.append((ref, fetch(ref), None))
            continue
        exports = lineage.pushable_exports(ref, channel) if lineage is not None else []
        if not exports:
            where = f" (channel {channel})" if channel else ""
            raise MediaNotFoundError(
                f"no such file, and no published exports in lineage for it{where}", subject=ref
            )
        for e in exports:
            local = fetch(e.uri) if fetch is not None and "://" in e.uri else Path(e.uri)
            found.append((e.uri, local, e.export_id))
    return found


def source_facts(name: str, path: Path, export_id: int | None = None) -> SourceFacts:
    """Probe one source (container, streams, video packets); errors name ``name``."""
    try:
        info = probe(path)
        stats = packet_stats(path)
    except TalkfactoryError as exc:
        raise type(exc)(exc.message, subject=name) from None
    if info.video is None:
        raise InvalidMediaError("has no video stream; a live stream needs one", subject=name)
    if info.audio is None:
        raise NoAudioStreamError("has no audio stream; a live stream needs one", subject=name)
    duration = info.duration or info.video.duration
    if not duration or duration <= 0:
        raise InvalidMediaError("has no duration (an empty or unfinished file)", subject=name)
    return SourceFacts(
        uri=name,
        path=path,
        duration_s=float(duration),
        video_codec=info.video.codec,
        width=info.video.display_width,
        height=info.video.display_height,
        fps=info.video.rate,
        pix_fmt=info.video.pix_fmt,
        audio_codec=info.audio.codec,
        audio_rate=info.audio.sample_rate,
        audio_channels=info.audio.channels,
        stats=stats,
        export_id=export_id,
    )


# ------------------------------------------------------------------------------------------ plan


def copy_blockers(src: SourceFacts, limits: LiveLimits) -> list[str]:
    """Why ``src`` cannot be pushed as it is (empty: it can)."""
    name = Path(src.uri).name or src.uri
    why: list[str] = []
    if src.video_codec not in COPY_VIDEO_CODECS:
        why.append(f"{name}: video is {src.video_codec}; FLV ingest takes H.264")
    if src.audio_codec not in COPY_AUDIO_CODECS:
        why.append(f"{name}: audio is {src.audio_codec}; FLV ingest takes AAC")
    if src.pix_fmt not in (None, "yuv420p", "yuvj420p"):
        why.append(f"{name}: pixel format {src.pix_fmt}; players expect yuv420p")
    if (limits.max_width is not None and src.width > limits.max_width) or (
        limits.max_height is not None and src.height > limits.max_height
    ):
        why.append(f"{name}: {src.width}x{src.height} is larger than {limits.max_width}x{limits.max_height}")
    if limits.max_fps is not None and float(src.fps) > limits.max_fps + 0.01:
        why.append(f"{name}: {float(src.fps):g} fps is over {limits.max_fps:g}")
    gap = src.stats.max_keyframe_gap_s
    if gap is None:
        if src.duration_s > limits.keyframe_interval_s:
            why.append(
                f"{name}: one keyframe only; the channel wants one every {limits.keyframe_interval_s:g} s"
            )
    elif gap > limits.keyframe_interval_s + max(src.stats.frame_s, 0.001) + 1e-3:
        why.append(
            f"{name}: keyframes {gap:.2f} s apart; the channel wants at most {limits.keyframe_interval_s:g} s"
        )
    cap = limits.video_maxrate_kbps
    if cap is not None and src.stats.peak_kbps > cap * _BITRATE_SLACK:
        why.append(f"{name}: video peaks at {src.stats.peak_kbps:,.0f} kb/s; the cap is {cap:,} kb/s")
    if limits.audio_rate is not None and src.audio_rate != limits.audio_rate:
        why.append(f"{name}: audio at {src.audio_rate} Hz; the channel wants {limits.audio_rate} Hz")
    if src.audio_channels > 2:
        why.append(f"{name}: {src.audio_channels} audio channels; live ingest takes stereo")
    return why


def plan_push(
    sources: Sequence[SourceFacts],
    limits: LiveLimits,
    *,
    force_encode: bool = False,
    encoder: LiveEncoder = "libx264",
) -> PushPlan:
    """Copy when every file fits ``limits`` and all share one format; else re-encode all, saying why."""
    if not sources:
        raise ConfigurationError("nothing to push: no source files")
    reasons: list[str] = []
    if force_encode:
        reasons.append("re-encoding was asked for")
    for src in sources:
        reasons += copy_blockers(src, limits)
    first = sources[0]
    for src in sources[1:]:
        if src.shape() != first.shape():
            reasons.append(
                f"{Path(src.uri).name}: {_shape_text(src)} differs from {Path(first.uri).name}'s "
                f"{_shape_text(first)}; one stream keeps one format"
            )
    files = tuple(PushFile(path=s.path, duration_s=s.duration_s) for s in sources)
    total = sum(s.duration_s for s in sources)
    if not reasons:
        return PushPlan(mode="copy", reasons=(), encode=None, files=files, total_s=total)
    encode = plan_encode(limits, width=first.width, height=first.height, fps=first.fps, encoder=encoder)
    return PushPlan(mode="encode", reasons=tuple(reasons), encode=encode, files=files, total_s=total)


def _shape_text(s: SourceFacts) -> str:
    return (
        f"{s.video_codec} {s.width}x{s.height} {float(s.fps):g} fps, "
        f"{s.audio_codec} {s.audio_rate} Hz {s.audio_channels} ch"
    )


# ------------------------------------------------------------------------------------------ attempts


def backoff_delay(policy: PushPolicy, failures: int) -> float:
    """The wait after the ``failures``-th failed attempt: ``backoff_s * 2**(failures-1)``, capped."""
    return float(min(policy.backoff_cap_s, policy.backoff_s * 2 ** max(0, failures - 1)))


def next_start(first: int, error: LivePushError, resume: ResumeAt) -> tuple[int, int | None]:
    """(playlist index the next attempt starts at, index of a file skipped or None) after ``error``.

    ``error.files_finished`` counts files of the failed attempt sent whole; ``file_on_air`` the one cut.
    """
    done = first + error.files_finished
    if error.file_on_air is None or resume == "restart":
        return done, None
    return done + 1, done


def run_push(
    plan: PushPlan,
    target: PushTarget,
    *,
    names: Sequence[str] | None = None,
    export_ids: Sequence[int | None] | None = None,
    channel: str | None = None,
    policy: PushPolicy | None = None,
    lineage: PushLineage | None = None,
    prov: Provenance | None = None,
    on_progress: Callable[[PushProgress], None] | None = None,
    on_attempt: Callable[[AttemptReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    work_dir: Path | None = None,
    realtime: bool = True,
) -> PushReport:
    """Push ``plan`` to ``target``, retrying per ``policy``; every attempt recorded when ``lineage``."""
    policy = policy or PushPolicy()
    prov = prov or Provenance()
    count = len(plan.files)
    shown = tuple(names) if names is not None else tuple(str(f.path) for f in plan.files)
    report = PushReport(
        target=target.masked,
        mode=plan.mode,
        reasons=plan.reasons,
        files=shown,
        total_s=plan.total_s,
        channel=channel,
    )
    if lineage is not None:
        ids = list(export_ids) if export_ids is not None else [None] * count
        report.push_id = lineage.start_push(
            target=target.masked,
            channel=channel,
            mode=plan.mode,
            reasons=list(plan.reasons),
            sources=[
                {"uri": shown[i], "duration_s": round(f.duration_s, 3), "export_id": ids[i]}
                for i, f in enumerate(plan.files)
            ],
            total_s=round(plan.total_s, 3),
            prov=prov,
        )
    first = 0
    last_error: BaseException | None = None
    for number in range(1, policy.attempts + 1):
        if first >= count:
            break
        attempt_id = (
            lineage.begin_push_attempt(report.push_id, number=number, first_file=first, prov=prov)
            if lineage is not None and report.push_id is not None
            else None
        )
        started = time.monotonic()
        offset = first

        def progress(p: PushProgress, offset: int = offset) -> None:
            if on_progress is not None:
                on_progress(replace(p, file_index=p.file_index + offset))

        try:
            run = push_files(
                plan.files[first:],
                target,
                encode=plan.encode,
                rw_timeout_s=policy.rw_timeout_s,
                stall_timeout_s=policy.stall_timeout_s,
                send_buffer_bytes=policy.send_buffer_bytes,
                verify_tls=policy.verify_tls,
                ca_file=policy.ca_file,
                realtime=realtime,
                on_progress=progress,
                work_dir=work_dir,
            )
        except TalkfactoryError as exc:
            error: TalkfactoryError = exc
        except BaseException:
            # Ctrl-C, SIGTERM, a cancelled run: ffmpeg is already killed (open_ffmpeg); say so in lineage.
            stop = InterruptedRunError("the push was stopped on request", subject=target.masked)
            _close_attempt(lineage, attempt_id, 0, 0.0, 0, None, stop)
            if lineage is not None and report.push_id is not None:
                lineage.finish_push(
                    report.push_id, status="interrupted", files_done=report.files_done,
                    skipped=list(report.skipped), pushed_s=round(report.pushed_s, 3),
                    bytes_sent=report.bytes_sent, error=str(stop),
                )  # fmt: skip
            raise
        else:
            report.files_done += run.files
            report.pushed_s += run.pushed_s
            report.bytes_sent += run.bytes_sent
            _close_attempt(lineage, attempt_id, run.files, run.pushed_s, run.bytes_sent, None, None)
            _note(report, on_attempt, AttemptReport(number, first, run.files, None, "succeeded", None,
                                                    run.pushed_s, time.monotonic() - started))  # fmt: skip
            first = count
            last_error = None
            break
        text = redact(str(error), target)
        last_error = error
        if isinstance(error, LivePushError):
            done, on_air = error.files_finished, error.file_on_air
            pushed, sent = error.pushed_s, 0
            report.files_done += done
            report.pushed_s += pushed
            next_first, skipped = next_start(first, error, policy.resume)
            on_air_index = None if on_air is None else first + on_air
        else:
            done, on_air_index, pushed, sent, next_first, skipped = 0, None, 0.0, 0, first, None
        _close_attempt(lineage, attempt_id, done, pushed, sent, on_air_index, error)
        _note(report, on_attempt, AttemptReport(number, first, done, on_air_index, "failed", text, pushed,
                                                time.monotonic() - started))  # fmt: skip
        log.warning("push to %s, attempt %d of %d failed: %s", target.masked, number, policy.attempts, text)
        if skipped is not None:
            report.skipped.append(skipped)
        first = next_first
        if isinstance(error, PermanentError):
            report.permanent = True
            break
        if number < policy.attempts and first < count:
            sleep(backoff_delay(policy, number))
    if first >= count and not report.permanent:
        report.status = "partial" if report.skipped else "done"
        report.error = None if last_error is None else redact(str(last_error), target)
    else:
        report.status = "failed"
        report.error = redact(str(last_error), target) if last_error is not None else "no attempt was made"
    if lineage is not None and report.push_id is not None:
        lineage.finish_push(
            report.push_id,
            status=report.status,
            files_done=report.files_done,
            skipped=list(report.skipped),
            pushed_s=round(report.pushed_s, 3),
            bytes_sent=report.bytes_sent,
            error=report.error if report.status != "done" else None,
        )
    return report


def _close_attempt(
    lineage: PushLineage | None,
    attempt_id: int | None,
    done: int,
    pushed: float,
    sent: int,
    on_air: int | None,
    error: BaseException | None,
) -> None:
    if lineage is None or attempt_id is None:
        return
    lineage.finish_push_attempt(
        attempt_id,
        files_done=done,
        pushed_s=round(pushed, 3),
        bytes_sent=sent,
        file_on_air=on_air,
        error=error,
    )


def _note(report: PushReport, on_attempt: Callable[[AttemptReport], None] | None, a: AttemptReport) -> None:
    report.attempts.append(a)
    if on_attempt is not None:
        on_attempt(a)


# ------------------------------------------------------------------------------------------ all of it


def push_live(
    refs: Sequence[str],
    url: str,
    *,
    limits: LiveLimits | None = None,
    channel: str | None = None,
    source_channel: str | None = None,
    policy: PushPolicy | None = None,
    lineage: Any = None,
    prov: Provenance | None = None,
    fetch: Callable[[str], Path] | None = None,
    force_encode: bool = False,
    encoder: LiveEncoder = "libx264",
    max_run_s: float | None = None,
    on_progress: Callable[[PushProgress], None] | None = None,
    on_attempt: Callable[[AttemptReport], None] | None = None,
    on_plan: Callable[[PushPlan], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    work_dir: Path | None = None,
) -> PushReport:
    """Resolve ``url`` and ``refs``, probe and plan, then ``run_push``.

    ``lineage`` is a ``LineageRepository`` (``PushQueries``): it resolves lineage references and
    records the push. ``channel`` names the live channel preset ``limits`` came from (recorded);
    ``source_channel`` picks which channel's exports a lineage reference plays. ``max_run_s``
    (``TALKFACTORY_FFMPEG_TIMEOUT_S``) bounds one attempt: a longer playlist is refused up front.
    A source that cannot be used is recorded as a failed push (when ``lineage``) and raised.
    """
    target = resolve_target(url)
    limits = limits or LiveLimits()
    try:
        resolved = resolve_sources(refs, channel=source_channel, lineage=lineage, fetch=fetch)
        facts = [source_facts(name, path, export_id) for name, path, export_id in resolved]
        plan = plan_push(facts, limits, force_encode=force_encode, encoder=encoder)
        needed = plan.total_s * 1.1 + START_SLACK_S
        if max_run_s is not None and needed > max_run_s:
            raise ConfigurationError(
                f"the playlist runs {plan.total_s:.0f} s, longer than one ffmpeg run may last "
                f"({max_run_s:.0f} s, TALKFACTORY_FFMPEG_TIMEOUT_S): raise it or push fewer files"
            )
    except PermanentError as exc:
        if lineage is not None:
            _record_unusable(lineage, target, channel, refs, exc, prov or Provenance())
        raise
    if on_plan is not None:
        on_plan(plan)
    return run_push(
        plan,
        target,
        names=[f.uri for f in facts],
        export_ids=[f.export_id for f in facts],
        channel=channel,
        policy=policy,
        lineage=lineage,
        prov=prov,
        on_progress=on_progress,
        on_attempt=on_attempt,
        sleep=sleep,
        work_dir=work_dir,
    )


def _record_unusable(
    lineage: PushLineage,
    target: PushTarget,
    channel: str | None,
    refs: Sequence[str],
    exc: BaseException,
    prov: Provenance,
) -> None:
    push_id = lineage.start_push(
        target=target.masked,
        channel=channel,
        mode="none",
        reasons=[],
        sources=[{"uri": r} for r in refs],
        total_s=0.0,
        prov=prov,
    )
    lineage.finish_push(
        push_id, status="failed", files_done=0, skipped=[], pushed_s=0.0, bytes_sent=0,
        error=redact(f"{type(exc).__name__}: {exc}", target),
    )  # fmt: skip


__all__ = [
    "AttemptReport",
    "ExportLookup",
    "PushLineage",
    "PushMode",
    "PushPlan",
    "PushPolicy",
    "PushReport",
    "SourceFacts",
    "backoff_delay",
    "channel_limits",
    "channel_preset",
    "channel_target",
    "copy_blockers",
    "live_limits_of",
    "next_start",
    "plan_push",
    "push_live",
    "resolve_sources",
    "run_push",
    "source_facts",
]
