from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talkfactory.models.speech.loudness import (
    frame_powers,
    integrated_loudness,
    k_weighting_sos,
    normalise,
    snr_db,
    true_peak,
)
from tests.fixtures.speech import SENTENCES_A, monologue, pink_noise, write_wav


def ffmpeg_ebur128(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) as ffmpeg's ebur128 filter measures them."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-nostats",
            "-hide_banner",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stderr
    summary = out[out.rindex("Summary:") :]
    lufs = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]
    peak = float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))  # type: ignore[union-attr]
    return lufs, peak


@pytest.fixture(scope="module")
def speech():
    sc = monologue(SENTENCES_A[:3], lead=0.5, pause=0.7, tail=0.5)
    return sc.clean


def test_k_weighting_matches_the_bs1770_table_at_48k() -> None:
    sos = k_weighting_sos(48000)
    # ITU-R BS.1770-4, Annex 1, Tables 1 and 2
    np.testing.assert_allclose(sos[0, :3], [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-9)
    np.testing.assert_allclose(sos[0, 4:], [-1.69065929318241, 0.73248077421585], atol=1e-9)
    np.testing.assert_allclose(sos[1, 4:], [-1.99004745483398, 0.99007225036621], atol=1e-9)


def test_a_1_khz_sine_at_minus_20_dbfs_reads_minus_23_lufs() -> None:
    # BS.1770: a 0 dBFS 1 kHz sine in one channel reads -3.01 LKFS
    t = np.arange(48000 * 5) / 48000
    x = 0.1 * np.sin(2 * np.pi * 1000 * t)
    assert integrated_loudness(x, 48000) == pytest.approx(-23.01, abs=0.05)
    assert true_peak(x, 48000) == pytest.approx(-20.0, abs=0.05)


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_matches_ffmpeg_ebur128_within_half_a_lu(tmp_path: Path, speech: np.ndarray, rate: int) -> None:
    import soxr

    x = np.asarray(soxr.resample(speech, 16000, rate), dtype=np.float32)
    for name, signal in [
        ("speech", 0.6 * x),
        ("pink", 0.05 * pink_noise(x.size)),
        ("quiet speech", 0.05 * x),
    ]:
        path = write_wav(tmp_path / f"{rate}.wav", signal, rate)
        ref_lufs, ref_peak = ffmpeg_ebur128(path)
        ours = integrated_loudness(signal, rate)
        print(f"{rate} {name}: ours {ours:.2f} ffmpeg {ref_lufs:.2f} LUFS")
        assert abs(ours - ref_lufs) <= 0.5
        assert abs(true_peak(signal, rate) - ref_peak) <= 0.5


def test_gating_ignores_silence_and_silence_is_minus_infinity(speech: np.ndarray) -> None:
    padded = np.concatenate([np.zeros(16000 * 20, np.float32), speech, np.zeros(16000 * 20, np.float32)])
    assert integrated_loudness(padded, 16000) == pytest.approx(integrated_loudness(speech, 16000), abs=0.1)
    assert integrated_loudness(np.zeros(16000 * 3), 16000) == -math.inf
    assert integrated_loudness(np.ones(100), 16000) == -math.inf  # shorter than one 400 ms block


@pytest.mark.parametrize("level", [0.05, 0.3, 0.95])
def test_normalise_hits_target_under_the_ceiling(tmp_path: Path, speech: np.ndarray, level: float) -> None:
    x = speech * (level / np.abs(speech).max())
    out = normalise(x, 16000, target_lufs=-16.0, ceiling_dbtp=-1.5)
    assert out.output_lufs == pytest.approx(-16.0, abs=0.2)
    assert out.true_peak_dbtp <= -1.4
    ref_lufs, ref_peak = ffmpeg_ebur128(write_wav(tmp_path / "n.wav", out.samples, 16000))
    assert abs(ref_lufs + 16.0) <= 1.0
    assert ref_peak <= -1.0


def test_normalise_caps_the_gain(speech: np.ndarray) -> None:
    whisper = speech * (0.01 / np.abs(speech).max())  # about -60 LUFS
    out = normalise(whisper, 16000, max_gain_db=30.0)
    assert out.gain_db == pytest.approx(30.0)
    assert out.output_lufs < -25.0


def test_normalise_leaves_silence_alone() -> None:
    out = normalise(np.zeros(16000, np.float32), 16000)
    assert out.gain_db == 0.0 and not np.any(out.samples)


def test_normalise_survives_clipped_audio(speech: np.ndarray) -> None:
    x = np.clip(speech * 20, -1, 1)
    out = normalise(x, 16000)
    assert np.isfinite(out.samples).all()
    assert out.output_lufs == pytest.approx(-16.0, abs=0.5)


def test_snr_estimate() -> None:
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal(48000).astype(np.float32)
    tone = 0.1 * np.sin(np.arange(48000) / 10).astype(np.float32)
    speech_p = frame_powers(tone + noise, 480)
    noise_p = frame_powers(noise, 480)
    # tone power 0.005, noise 1e-4: 17 dB
    assert snr_db(speech_p, noise_p) == pytest.approx(17.0, abs=0.5)
    assert snr_db(speech_p, np.zeros(0)) is None
    assert snr_db(speech_p, np.zeros(10)) == 100.0
