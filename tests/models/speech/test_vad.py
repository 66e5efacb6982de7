from __future__ import annotations

import numpy as np
import pytest
from pyannote.core import Segment, Timeline

from talkfactory.errors import ConfigurationError
from talkfactory.models.speech.denoise import denoise
from talkfactory.models.speech.vad import (
    FRAME_SECONDS,
    StreamingVad,
    VadParams,
    detect_speech,
    hysteresis,
    segments_from_probabilities,
)
from tests.fixtures.speech import (
    RATE,
    SENTENCES_A,
    boundary_errors,
    frame_f1,
    mix_at_snr,
    monologue,
    music_like,
    pink_noise,
    white_noise,
)


@pytest.fixture(scope="module")
def scene():
    return monologue(SENTENCES_A[:5], lead=1.0, pause=0.8, tail=1.0)


def test_streaming_in_odd_chunks_equals_one_pass(scene) -> None:
    whole = StreamingVad()
    whole.process(scene.clean)
    chunked = StreamingVad(max_frames=7)
    i = 0
    for n in [1, 511, 513, 10000, 3, 99999]:
        chunked.process(scene.clean[i : i + n])
        i += n
    chunked.process(scene.clean[i:])
    np.testing.assert_allclose(chunked.finish(), whole.finish(), atol=1e-6)
    assert abs(chunked.duration - scene.duration) < 1e-9


def test_clean_speech_f1_and_boundaries(scene) -> None:
    hyp = detect_speech(scene.clean, RATE)
    f1 = frame_f1(scene.speech, hyp, scene.duration)
    errors = boundary_errors(scene.speech, hyp)
    print(f"clean: F1 {f1:.3f}, boundary errors max {max(errors) * 1000:.0f} ms")
    assert f1 >= 0.9
    assert max(errors) <= 0.1


@pytest.mark.parametrize("noise", [white_noise, pink_noise, music_like])
def test_speech_at_5_db_snr(scene, noise) -> None:
    noisy = mix_at_snr(scene.clean, noise(scene.clean.size, seed=1), 5.0, scene.speech)
    for label, x in [("raw", noisy), ("dfn3", denoise(noisy, RATE, "dfn3"))]:
        hyp = detect_speech(x, RATE)
        f1 = frame_f1(scene.speech, hyp, scene.duration)
        errors = np.array(boundary_errors(scene.speech, hyp))
        starts, ends = errors[0::2], errors[1::2]
        print(
            f"{noise.__name__} 5 dB {label}: F1 {f1:.3f}, start err max {starts.max() * 1000:.0f} ms, "
            f"end err median {np.median(ends) * 1000:.0f} max {ends.max() * 1000:.0f} ms"
        )
        assert f1 >= 0.8
        assert starts.max() <= 0.1
        # a sentence's last consonant can drown in the noise: ends are held to 100 ms in the median
        assert np.median(ends) <= 0.1


@pytest.mark.parametrize("name", ["silence", "white", "pink", "music"])
def test_no_speech_in_silence_noise_or_music(name: str) -> None:
    n = 20 * RATE
    x = {
        "silence": np.zeros(n, np.float32),
        "white": 0.05 * white_noise(n),
        "pink": 0.1 * pink_noise(n),
        "music": 0.3 * music_like(n),
    }[name]
    assert detect_speech(x, RATE).duration() < 0.5


def test_other_rates_are_resampled(scene) -> None:
    import soxr

    x8 = np.asarray(soxr.resample(scene.clean, RATE, 8000), dtype=np.float32)
    assert frame_f1(scene.speech, detect_speech(x8, 8000), scene.duration) >= 0.85


def test_hysteresis_needs_onset_and_holds_to_offset() -> None:
    p = np.array([0.1, 0.5, 0.7, 0.5, 0.46, 0.3, 0.55, 0.2])
    np.testing.assert_array_equal(hysteresis(p, 0.6, 0.45), [0, 1, 1, 1, 1, 0, 0, 0])


def test_tail_cuts_the_hangover_after_the_voice_stops() -> None:
    p = np.array([0.1, 0.9, 0.95, 0.85, 0.7, 0.6, 0.5, 0.2])
    np.testing.assert_array_equal(hysteresis(p, 0.6, 0.45, tail=0.8), [0, 1, 1, 1, 0, 0, 0, 0])
    # a run that never reaches the tail level ends after its peak
    q = np.array([0.1, 0.65, 0.7, 0.5, 0.2])
    np.testing.assert_array_equal(hysteresis(q, 0.6, 0.45, tail=0.8), [0, 1, 1, 0, 0])


def test_min_silence_min_speech_pad_and_offset() -> None:
    f = FRAME_SECONDS
    p = np.zeros(200, np.float32)
    p[10:40] = 0.9  # 0.96 s
    p[42:60] = 0.9  # after a 64 ms gap: bridged
    p[100:104] = 0.9  # 128 ms: too short
    p[150:170] = 0.9
    tl = segments_from_probabilities(p, VadParams(min_silence=0.1, min_speech=0.25, pad=0.05), offset=100.0)
    got = [(round(s.start, 3), round(s.end, 3)) for s in tl]
    assert got == [
        (round(100 + 10 * f - 0.05, 3), round(100 + 60 * f + 0.05, 3)),
        (round(100 + 150 * f - 0.05, 3), round(100 + 170 * f + 0.05, 3)),
    ]


def test_padding_merges_and_stays_inside_the_audio() -> None:
    p = np.zeros(50, np.float32)
    p[0:10] = 0.9
    p[14:50] = 0.9
    tl = segments_from_probabilities(p, VadParams(min_silence=0.0, pad=0.1), duration=50 * FRAME_SECONDS)
    assert tl == Timeline([Segment(0.0, 50 * FRAME_SECONDS)])


def test_bad_thresholds_are_rejected() -> None:
    with pytest.raises(ConfigurationError):
        VadParams(onset=0.3, offset=0.5)
