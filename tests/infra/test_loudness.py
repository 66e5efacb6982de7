"""Loudness: parsing and filter choice (pure), then quiet and loud speech normalised through
``FrameEncoder(options=...)`` and measured on the MP4 with ffmpeg's ebur128 as the reference."""

from __future__ import annotations

import math
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from talkfactory.errors import InvalidMediaError
from talkfactory.infra.media.channel_encode import ChannelEncodeOptions, gop_frames_for
from talkfactory.infra.media.encode import AudioInput, FrameEncoder
from talkfactory.infra.media.loudness import (
    Loudness,
    is_linear,
    measure_args,
    measure_file,
    measure_loudness,
    normalization_for,
    normalize_filter,
    parse_ebur128_summary,
)
from talkfactory.infra.media.probe import probe
from tests.fixtures.long_speech import long_speech
from tests.fixtures.media import write_wav

SUMMARY = """[Parsed_ebur128_0 @ 0x55d5] Summary:

  Integrated loudness:
    I:         -22.7 LUFS
    Threshold: -33.2 LUFS

  Loudness range:
    LRA:         4.1 LU
    Threshold: -43.3 LUFS
    LRA low:   -25.5 LUFS
    LRA high:  -21.4 LUFS

  True peak:
    Peak:       -1.7 dBFS
"""


def test_parse_summary():
    assert parse_ebur128_summary("noise before\n" + SUMMARY) == Loudness(-22.7, -1.7, 4.1, -33.2)


def test_parse_summary_of_silence_and_the_last_block_wins():
    silent = SUMMARY.replace("-22.7", "-70.0").replace("-1.7 dBFS", "-inf dBFS")
    parsed = parse_ebur128_summary(SUMMARY + "\n" + silent)
    assert parsed.integrated_lufs == -70.0 and parsed.true_peak_db == -math.inf and parsed.is_silent
    assert parsed.to_dict()["true_peak_db"] is None


@pytest.mark.parametrize("text", ["", "Summary:\n  Integrated loudness:\n    I: -20 LUFS\n"])
def test_parse_summary_refuses_missing_or_cut_output(text):
    with pytest.raises(ValueError):
        parse_ebur128_summary(text)


def test_linear_gain_when_the_peak_allows_it():
    measured = Loudness(integrated_lufs=-10.0, true_peak_db=-3.0, lra=3.0, threshold=-20.0)
    assert normalize_filter(measured, target_lufs=-14, true_peak_db=-1) == "volume=-4.00dB"


def test_limiter_when_gain_would_push_the_peak_over():
    measured = Loudness(integrated_lufs=-30.0, true_peak_db=-9.0, lra=3.0, threshold=-40.0)
    chain = normalize_filter(measured, target_lufs=-14, true_peak_db=-1)
    assert not is_linear(chain)
    assert chain.startswith("volume=16.00dB,aresample=192000,alimiter=limit=0.8414:")
    assert "level=0" in chain and "latency=1" in chain and chain.endswith("aresample=48000")


def test_silence_gets_no_gain():
    silent = Loudness(integrated_lufs=-math.inf, true_peak_db=-math.inf, lra=0.0, threshold=-70.0)
    assert normalize_filter(silent, target_lufs=-14, true_peak_db=-1) == "anull"


def test_measure_args_read_the_input_under_the_guard():
    argv = measure_args("in.flv", start=1.5, duration=2, stream=3, channels=2, sample_rate=48000)
    i = argv.index("-i")
    assert (
        argv[i + 1] == "file:in.flv" and "-format_whitelist" in argv[:i] and "-protocol_whitelist" in argv[:i]
    )
    assert argv[argv.index("-map") + 1] == "0:3"
    assert argv[argv.index("-af") + 1] == (
        "aformat=channel_layouts=stereo:sample_rates=48000,ebur128=peak=true:framelog=verbose"
    )
    assert argv[-3:] == ["-f", "null", "-"]


# ---------------------------------------------------------------- real audio


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Piper speech (mono, 22.05 kHz) at about -30 LUFS (quiet) and -10 LUFS (loud: saturated, a hot mic)."""
    root = tmp_path_factory.mktemp("loudness")
    samples, rate = long_speech(20.0)
    samples = samples / np.abs(samples).max()
    files: dict[str, Path] = {}

    def at(name: str, x: np.ndarray, target: float) -> Path:
        path = root / f"{name}.wav"
        for _ in range(4):  # scale, measure, correct: lands within ~0.3 LU of the target
            write_wav(path, x / 0.8, rate)
            got = measure_loudness(path).integrated_lufs
            if abs(got - target) < 0.3:
                break
            x = np.clip(x * 10 ** ((target - got) / 20), -1, 1)
        return path

    files["quiet"] = at("quiet", samples * 0.05, -30.0)
    files["loud"] = at("loud", np.tanh(6 * samples) / np.tanh(6), -10.0)
    return files


def _encode(audio: Path, out: Path, audio_filter: str, seconds: float) -> None:
    fps = 25
    opts = ChannelEncodeOptions(gop_frames=gop_frames_for(fps, 2.0), audio_filters=(audio_filter,))
    frame = np.full((64, 64, 3), 90, np.uint8)
    with FrameEncoder(
        out, width=64, height=64, fps=fps, audio=AudioInput(audio), duration=seconds, options=opts
    ) as enc:
        for _ in range(int(seconds * fps)):
            enc.write(frame)


@pytest.mark.parametrize("level", ["quiet", "loud"])
def test_speech_is_normalised_to_minus_14_through_the_encoder(speech, level, tmp_path):
    source = speech[level]
    before = measure_loudness(source)
    assert abs(before.integrated_lufs - (-30.0 if level == "quiet" else -10.0)) < 0.5
    plan = normalization_for(source, target_lufs=-14.0, true_peak_db=-1.0)
    # Quiet speech needs 16 dB: its peaks would clip, so a limiter; loud speech only comes down.
    assert plan.linear == (level == "loud")
    out = tmp_path / f"{level}.mp4"
    _encode(source, out, plan.filter, seconds=20.0)
    after = measure_file(out)
    print(
        f"{level}: {before.integrated_lufs:.1f} LUFS -> {after.integrated_lufs:.2f} LUFS,"
        f" TP {after.true_peak_db:.2f} dBTP"
    )
    assert abs(after.integrated_lufs - -14.0) <= 0.5
    assert after.true_peak_db <= -0.7


def test_measuring_a_minute_is_quick(tmp_path):
    samples, rate = long_speech(60.0)
    wav = tmp_path / "minute.wav"
    write_wav(wav, samples, rate)
    started = time.monotonic()
    result = measure_loudness(wav, channels=2, sample_rate=48000)
    took = time.monotonic() - started
    print(f"loudness of 60 s speech measured in {took:.2f} s: {result}")
    assert -40 < result.integrated_lufs < -10 and took < 10
    quiet = tmp_path / "quiet-minute.wav"
    write_wav(quiet, samples * 0.1, rate)
    started = time.monotonic()
    plan = normalization_for(quiet, target_lufs=-14.0, true_peak_db=-1.0)
    took = time.monotonic() - started
    print(f"limited normalisation of 60 s planned in {took:.2f} s: {plan.filter} -> {plan.predicted}")
    assert not plan.linear and plan.predicted is not None
    assert abs(plan.predicted.integrated_lufs - -14.0) <= 0.3 and took < 30


def test_a_clip_of_a_recording_is_measured_and_encoded_on_the_same_span(speech, tmp_path):
    """The engine's case: a clip (start, duration) of one audio stream of a recording with video."""
    flv = tmp_path / "recording.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-i", str(speech["quiet"]),
         "-map", "0:v", "-map", "1:a", "-t", "20", "-c:v", "libx264", "-preset", "ultrafast",
         "-c:a", "aac", "-ar", "44100", str(flv)],
        check=True, timeout=120,
    )  # fmt: skip
    stream = probe(flv).audio
    assert stream is not None
    start, duration = 4.0, 9.0
    plan = normalization_for(
        flv, target_lufs=-16.0, true_peak_db=-1.5, start=start, duration=duration, stream=stream.index
    )
    out = tmp_path / "clip.mp4"
    opts = ChannelEncodeOptions(gop_frames=50, audio_filters=(plan.filter,))
    audio = AudioInput(flv, stream_index=stream.index, start=start, duration=duration)
    frame = np.zeros((64, 64, 3), np.uint8)
    with FrameEncoder(out, width=64, height=64, fps=25, audio=audio, duration=duration, options=opts) as enc:
        for _ in range(int(duration * 25)):
            enc.write(frame)
    after = measure_file(out)
    print(f"clip: -> {after.integrated_lufs:.2f} LUFS, TP {after.true_peak_db:.2f} dBTP")
    assert abs(after.integrated_lufs - -16.0) <= 0.5 and after.true_peak_db <= -1.2


def test_a_file_without_audio_is_invalid_media(tmp_path):
    out = tmp_path / "silent-video.mp4"
    with FrameEncoder(out, width=64, height=64, fps=25) as enc:
        for _ in range(10):
            enc.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InvalidMediaError):
        measure_file(out)


def test_a_playlist_is_never_followed(tmp_path):
    playlist = tmp_path / "list.m3u8"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    with pytest.raises(InvalidMediaError):
        measure_file(playlist)


def test_the_limited_chain_does_not_move_audio_in_time(tmp_path):
    """Lip sync: a click comes out of the limiter chain at the sample it went in, and nothing is added."""
    rate = 48000
    signal = np.random.default_rng(0).standard_normal(3 * rate) * 0.01
    for t in (1.0, 2.0):
        signal[int(t * rate) : int(t * rate) + 48] += np.hanning(48) * 0.7
    source = tmp_path / "clicks.wav"
    write_wav(source, signal / 0.8, rate)
    loud = Loudness(integrated_lufs=-40.0, true_peak_db=-3.0, lra=1.0, threshold=-50.0)
    chain = normalize_filter(loud, target_lufs=-28.0, true_peak_db=-1.0)
    assert not is_linear(chain)

    def run(audio_filter: str) -> np.ndarray:
        out = tmp_path / "out.wav"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
             "-af", f"aformat=channel_layouts=mono:sample_rates={rate},{audio_filter}",
             "-c:a", "pcm_s16le", str(out)],
            check=True, timeout=60,
        )  # fmt: skip
        with wave.open(str(out)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)

    plain, limited = run("anull"), run(chain)
    assert limited.size == plain.size
    for t in (1.0, 2.0):
        at = int(t * rate)
        ref = plain[at - 1000 : at + 1000]
        # The lag that lines the limited click up with the plain one (the limiter flattens its top).
        lags = range(-200, 201)
        best = max(lags, key=lambda lag: float(np.dot(ref, limited[at - 1000 + lag : at + 1000 + lag])))
        assert best == 0
