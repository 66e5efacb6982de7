"""Wav2Lip audio features against an independent reference, and frame/mel alignment."""

from __future__ import annotations

from fractions import Fraction

import librosa
import numpy as np
import pytest
from scipy.signal import get_window, lfilter, resample_poly

from talkfactory.errors import ConfigurationError
from talkfactory.models.audio import ArrayAudio
from talkfactory.models.lipsync.wav2lip import mel
from talkfactory.models.lipsync.wav2lip.resample import ResampledAudio, at_rate
from tests.fixtures.lipsync import speech_like_audio


def reference_mel(wav: np.ndarray, pad_mode: str = "constant") -> np.ndarray:
    """The published recipe written out longhand (hparams: 16 kHz, n_fft/win 800, hop 200, ...)."""
    y = lfilter([1.0, -0.97], [1.0], wav.astype(np.float64))  # pre-emphasis
    padded = np.pad(y, 400, mode=pad_mode)  # centred frames
    n_frames = 1 + len(y) // 200
    window = get_window("hann", 800, fftbins=True)
    spec = np.stack(
        [np.abs(np.fft.rfft(padded[m * 200 : m * 200 + 800] * window)) for m in range(n_frames)], 1
    )
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def test_filterbank_matches_librosa_slaney():
    ours = mel.mel_filterbank()
    theirs = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert ours.shape == (80, 401)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8)


def test_mel_matches_reference_and_librosa_stft():
    audio = speech_like_audio(2.0)
    wav = audio.read(0, audio.num_samples)
    ours = mel.mel_frames(audio, 0, mel.num_mel_frames(audio.num_samples))
    ref = reference_mel(wav)
    assert ours.shape == ref.shape == (80, 161)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert ours.min() >= -4 and ours.max() <= 4 and ours.std() > 0.5  # a real spectrum, not a constant
    # librosa's own STFT, as the published audio.py calls it (with zero padding at the ends).
    y = lfilter([1.0, -0.97], [1.0], wav.astype(np.float64))
    stft = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, pad_mode="constant"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    lib = np.clip(8 * ((20 * np.log10(np.maximum(1e-5, basis @ stft)) - 20 + 100) / 100) - 4, -4, 4)
    np.testing.assert_allclose(ours, lib, atol=1e-4)
    # The original's reflect padding differs from ours only in the two frames at each end.
    reflect = reference_mel(wav, pad_mode="reflect")
    np.testing.assert_allclose(ours[:, 2:-2], reflect[:, 2:-2], atol=1e-4)


def test_chunked_equals_whole():
    audio = speech_like_audio(1.5, seed=3)
    total = mel.num_mel_frames(audio.num_samples)
    whole = mel.mel_frames(audio, 0, total)
    chunks = np.concatenate(
        [mel.mel_frames(audio, s, min(s + 37, total)) for s in range(0, total, 37)], axis=1
    )
    np.testing.assert_array_equal(chunks, whole)


def test_resampled_source_chunked_equals_whole_and_feeds_mel():
    source = speech_like_audio(1.0, sample_rate=44_100, seed=5)
    view = at_rate(source, 16_000)
    assert isinstance(view, ResampledAudio) and view.num_samples == 16_000
    whole = resample_poly(source.read(0, source.num_samples).astype(np.float64), 160, 441)
    got = np.concatenate([view.read(s, s + 999) for s in range(-500, 16_500, 999)])[500 : 500 + 16_000]
    np.testing.assert_allclose(got, whole[:16_000], atol=1e-6)
    assert at_rate(view, 16_000) is view
    with pytest.raises(ConfigurationError):
        mel.mel_frames(source, 0, 10)
    assert mel.mel_windows(view, [0, 1, 2], 25.0).shape == (3, 1, 80, 16)


def test_window_start_is_time_based_and_exact_over_ten_minutes_at_2997():
    fps = 29.97
    frames = round(600 * fps)  # 17982 frames = 10 minutes
    exact = Fraction(2997, 100)
    starts = np.array([mel.window_start(i, fps) for i in range(frames)])
    expected = np.array([(80 * i * exact.denominator) // exact.numerator for i in range(frames)])
    np.testing.assert_array_equal(starts, expected)
    # The window starts within one mel hop (12.5 ms) before the frame's time, for every frame.
    times = np.arange(frames) / fps
    assert np.all(starts / 80 <= times + 1e-9) and np.all(times - starts / 80 < 1 / 80)
    assert set(np.diff(starts)) <= {2, 3}
    # Frames at whole 100 s marks start exactly on their mel frame (8000 mel frames per 100 s).
    assert mel.window_start(2997, fps) == 8000
    assert mel.window_start(14_985, fps) == 40_000
    last = frames - 1
    assert mel.window_start(last, fps) == 47_997  # floor(80 * 17981 / 29.97) = floor(47997.33)
    assert mel.window_start(last, 30000 / 1001) == (80 * last * 1001) // 30000


def test_click_lands_in_the_first_column_of_its_frame_window_after_ten_minutes():
    fps = 29.97
    rate = 16_000
    samples = np.zeros(601 * rate, dtype=np.float32)  # a second past the last frame: no end clamp
    frames = [14_985, round(600 * fps) - 1]
    clicks = [round(i * rate / fps) for i in frames]
    for c in clicks:
        samples[c] = 1.0
    audio = ArrayAudio(samples, rate)
    windows = mel.mel_windows(audio, frames, fps)
    for k, (i, c) in enumerate(zip(frames, clicks, strict=True)):
        energy = windows[k, 0].mean(axis=0)  # per mel column
        column = round(c / 200) - mel.window_start(i, fps)
        assert column in (0, 1)
        assert int(np.argmax(energy)) == column
        assert energy[column + 4 :].max() == pytest.approx(-4.0)  # silence elsewhere: the floor


def test_windows_past_the_end_clamp_to_the_last_sixteen_mel_frames():
    audio = speech_like_audio(1.0)
    total = mel.num_mel_frames(audio.num_samples)  # 81
    assert mel.window_start(25, 25.0, audio.num_samples) == total - 16
    last = mel.mel_frames(audio, total - 16, total)
    np.testing.assert_array_equal(mel.mel_windows(audio, [25, 30], 25.0)[1, 0], last)
    short = ArrayAudio(np.zeros(1000, dtype=np.float32), 16_000)
    assert mel.window_start(3, 25.0, short.num_samples) == 0
    assert mel.mel_windows(short, [0, 3], 25.0).shape == (2, 1, 80, 16)
