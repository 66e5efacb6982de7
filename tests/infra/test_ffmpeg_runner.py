"""Running ffmpeg: timeouts kill the process group, stderr is bounded, failures are classified."""

from __future__ import annotations

import os
import sys
import time

import pytest

from talkfactory.errors import (
    ConfigurationError,
    DiskFullError,
    FFmpegError,
    FFmpegTimeoutError,
    FFmpegUsageError,
    InvalidMediaError,
    MediaNotFoundError,
    NoAudioStreamError,
    OutputNotWritableError,
    PermanentError,
    TransientError,
    is_transient,
)
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg import binaries
from talkfactory.infra.ffmpeg.runner import STDERR_TAIL_BYTES, classify, open_ffmpeg, run_ffmpeg
from tests.fixtures.media_io import children_of, media_files_fixture  # noqa: F401

ENDLESS = a.concat(a.global_options(), a.lavfi_input("testsrc=size=64x64:rate=25"), a.null_output())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ---------------------------------------------------------------- classify (pure)


@pytest.mark.parametrize(
    "stderr",
    [
        "notes.flv: Invalid data found when processing input",
        "[mov,mp4 @ 0x55] moov atom not found\ncut.mp4: Invalid data found when processing input",
        "[flv @ 0x1] Could not find codec parameters for stream 0 (Video: h264, none): unspecified size",
        "Output file #0 does not contain any stream",
        "Error opening input file x.flv.",
        "Stream map '0:v:0' matches no streams.",
    ],
)
def test_classify_input_problems_as_invalid_media(stderr):
    error = classify(stderr, returncode=1, subject="x.flv")
    assert isinstance(error, InvalidMediaError) and isinstance(error, PermanentError)
    assert error.subject == "x.flv"
    assert stderr.splitlines()[-1].strip() in str(error)


def test_classify_missing_audio_map_as_no_audio_stream():
    error = classify(
        "Stream map '0:a:0' matches no streams.", returncode=1, subject="s.flv", audio_required=True
    )
    assert isinstance(error, NoAudioStreamError)


@pytest.mark.parametrize(
    "stderr",
    [
        "[h264_nvenc @ 0x55] Cannot load libcuda.so.1",
        "Conversion failed!",
        "",
    ],
)
def test_classify_other_failures_as_transient_ffmpeg_error(stderr):
    error = classify(stderr, returncode=1, subject="x")
    assert type(error) is FFmpegError and isinstance(error, TransientError)
    assert error.stderr == stderr


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("av_interleaved_write_frame(): No space left on device", DiskFullError),
        ("file:/ro/.x.partial.mp4: Read-only file system", OutputNotWritableError),
        ("[concat @ 0x55ef1d0ea840] Unsafe file name '/etc/passwd'", InvalidMediaError),
        (
            "Unrecognized option 'x.flv'.\nError splitting the argument list: Option not found",
            FFmpegUsageError,
        ),
        ("Missing argument for option 'x.flv'", FFmpegUsageError),
        ("Argument 'b' provided as input filename, but 'a' was already specified.", FFmpegUsageError),
    ],
)
def test_classify_what_a_retry_cannot_fix_as_permanent(stderr, kind):
    error = classify(stderr, returncode=1, subject="x")
    assert type(error) is kind and isinstance(error, PermanentError) and not is_transient(error)


def test_classify_a_refused_demuxer_names_the_format():
    stderr = "[hls @ 0x55a429df26c0] Format not on whitelist 'flv,mov'\nfile:x.flv: Invalid argument"
    error = classify(stderr, returncode=1, subject="x.flv")
    assert type(error) is InvalidMediaError
    assert "not a media file we accept (format hls)" in str(error)


def test_classify_signal_death_names_the_signal():
    error = classify("", returncode=-9, subject="x")
    assert isinstance(error, FFmpegError) and "SIGKILL" in str(error)


def test_classified_error_carries_the_stderr_tail_as_a_note():
    error = classify("line one\nnotes.flv: Invalid data found when processing input", returncode=1)
    assert any("line one" in note for note in error.__notes__)


# ---------------------------------------------------------------- binaries


def test_ffmpeg_binary_resolution_and_env_override(monkeypatch, tmp_path):
    binaries.clear_cache()
    try:
        assert os.path.basename(binaries.ffmpeg_exe()) == "ffmpeg"
        assert binaries.ffprobe_exe() is not None
        fake = tmp_path / "myffmpeg"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        monkeypatch.setenv(binaries.FFMPEG_ENV, str(fake))
        binaries.clear_cache()
        assert binaries.ffmpeg_exe() == str(fake)
        monkeypatch.setenv(binaries.FFMPEG_ENV, str(tmp_path / "missing"))
        binaries.clear_cache()
        with pytest.raises(ConfigurationError):
            binaries.ffmpeg_exe()
    finally:
        monkeypatch.undo()
        binaries.clear_cache()


def test_imageio_binary_is_the_fallback_without_ffmpeg_on_path(monkeypatch):
    binaries.clear_cache()
    try:
        monkeypatch.setenv("PATH", "/nonexistent")
        assert "imageio_ffmpeg" in binaries.ffmpeg_exe()
        assert binaries.ffprobe_exe() is None
    finally:
        monkeypatch.undo()
        binaries.clear_cache()


# ---------------------------------------------------------------- run_ffmpeg


def test_run_checks_inputs_exist_before_starting(tmp_path):
    missing = tmp_path / "gone.flv"
    with pytest.raises(MediaNotFoundError) as info:
        run_ffmpeg(
            a.concat(a.global_options(), a.input_file(missing), a.null_output()), timeout=10, inputs=[missing]
        )
    assert info.value.subject == str(missing)


def test_run_success_and_captured_stdout():
    argv = a.concat(
        a.global_options(),
        a.lavfi_input("sine=sample_rate=8000"),
        a.output_duration(0.5),
        a.pcm_s16le_output(),
    )
    result = run_ffmpeg(argv, timeout=30, capture_stdout=True)
    assert result.returncode == 0
    assert len(result.stdout) == 8000  # 0.5 s x 8000 Hz x 2 bytes


def test_run_classifies_a_text_file(media_files):
    with pytest.raises(InvalidMediaError) as info:
        run_ffmpeg(
            a.concat(a.global_options(), a.input_file(media_files.text_flv), a.null_output()),
            timeout=30,
            subject=str(media_files.text_flv),
            inputs=[media_files.text_flv],
        )
    assert "Invalid data found" in str(info.value)


def test_timeout_kills_the_process_group():
    started = time.monotonic()
    with pytest.raises(FFmpegTimeoutError) as info:
        run_ffmpeg(ENDLESS, timeout=0.5, subject="endless")
    assert time.monotonic() - started < 10
    assert isinstance(info.value, TimeoutError) and info.value.subject == "endless"
    # Killed and reaped: no ffmpeg child left, not even a zombie.
    assert not [p for p in children_of(os.getpid()) if _is_ffmpeg(p)]


def _is_ffmpeg(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:  # readable for zombies too
            return "ffmpeg" in f.read()
    except OSError:
        return False


def test_stderr_tail_is_bounded():
    noisy = ["-c", "import sys; sys.stderr.write('x' * 300000 + '\\nlast words\\n'); sys.exit(3)"]
    with pytest.raises(FFmpegError) as info:
        run_ffmpeg(noisy, timeout=30, exe=sys.executable)
    assert len(info.value.stderr) <= STDERR_TAIL_BYTES
    assert info.value.stderr.endswith("last words\n")
    assert "code 3" in str(info.value)


def test_run_without_check_returns_the_failure():
    result = run_ffmpeg(["-c", "import sys; sys.exit(2)"], timeout=30, exe=sys.executable, check=False)
    assert result.returncode == 2


# ---------------------------------------------------------------- open_ffmpeg


def test_open_ffmpeg_kills_and_reaps_on_exception():
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match="consumer failed"):
        with open_ffmpeg(a.concat(ENDLESS[:-3], a.rawvideo_output("gray")), stdout=True) as proc:
            proc.stdout.read(4096)
            pid = proc.pid
            raise RuntimeError("consumer failed")
    assert _gone(pid)  # killed and reaped: not even a zombie left
    assert pid not in children_of(os.getpid())
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_open_ffmpeg_leaving_early_is_not_an_error():
    with open_ffmpeg(a.concat(ENDLESS[:-3], a.rawvideo_output("gray")), stdout=True) as proc:
        assert len(proc.stdout.read(64 * 64)) == 64 * 64
        pid = proc.pid
    assert _gone(pid)


def test_open_ffmpeg_stdin_pipe_round_trip():
    argv = a.concat(
        a.global_options(), ["-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "pipe:0"], a.pcm_s16le_output()
    )
    with open_ffmpeg(argv, stdin=True, stdout=True, timeout=30) as proc:
        proc.stdin.write(b"\x01\x00" * 800)
        proc.stdin.close()
        data = proc.stdout.read()
        proc.wait()
    assert data == b"\x01\x00" * 800


def test_open_ffmpeg_timeout_while_streaming():
    with pytest.raises(FFmpegTimeoutError):
        with open_ffmpeg(a.concat(ENDLESS[:-3], a.rawvideo_output("gray")), stdout=True, timeout=0.5) as proc:
            while proc.stdout.read(65536):
                pass
            proc.wait()


# ---------------------------------------------------------------- the ffmpeg timeout setting


def test_the_timeout_setting_caps_every_process(tf_home: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from talkfactory.infra.settings import get_settings

    monkeypatch.setenv("TALKFACTORY_FFMPEG_TIMEOUT_S", "1.5")
    get_settings.cache_clear()
    t0 = time.monotonic()
    with pytest.raises(FFmpegTimeoutError, match="TALKFACTORY_FFMPEG_TIMEOUT_S"):
        # The caller asks for no limit at all (as the speech step's audio stream does).
        with open_ffmpeg(ENDLESS, timeout=None) as proc:
            proc.wait()
    assert time.monotonic() - t0 < 10
    get_settings.cache_clear()
