from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

from talkfactory.errors import CheckpointError, ConfigurationError
from talkfactory.models.audio import ArrayAudio
from talkfactory.models.speech.denoise import denoise
from talkfactory.models.speech.diarize import (
    PyannoteDiarizer,
    ResemblyzerDiarizer,
    mel_frames,
    speech_windows,
    split_overlap,
)
from talkfactory.models.speech.vad import detect_speech
from tests.fixtures.speech import (
    RATE,
    SENTENCES_A,
    SENTENCES_B,
    compose,
    conversation,
    espeak,
    mix_at_snr,
    monologue,
    piper,
    white_noise,
)

TURNS = [
    ("A", SENTENCES_A[0]),
    ("B", SENTENCES_B[0]),
    ("A", SENTENCES_A[1]),
    ("A", SENTENCES_A[2]),
    ("B", SENTENCES_B[1]),
    ("A", SENTENCES_A[3]),
    ("B", SENTENCES_B[2]),
    ("A", SENTENCES_A[4]),
    ("B", SENTENCES_B[3]),
    ("A", SENTENCES_A[5]),
]


@pytest.fixture(scope="module")
def talk():
    return conversation(TURNS)


def _host(truth: Annotation) -> str:
    return max(truth.labels(), key=truth.label_duration)


@pytest.mark.parametrize("condition", ["clean", "10 dB denoised"])
def test_two_voices_main_speaker_and_der(talk, condition: str) -> None:
    x = talk.clean
    if condition != "clean":
        x = denoise(mix_at_snr(talk.clean, white_noise(talk.clean.size, seed=2), 10.0, talk.speech), RATE)
    speech = detect_speech(x, RATE)
    result = ResemblyzerDiarizer().diarize(ArrayAudio(x, RATE), speech)
    metric = DiarizationErrorRate()
    der = metric(talk.truth, result.annotation)
    mapping = metric.optimal_mapping(talk.truth, result.annotation)
    ambiguous = result.ambiguous.duration()
    print(f"{condition}: DER {der:.3f}, speakers {result.speakers}, ambiguous {ambiguous:.2f} s")
    assert len(result.speakers) == 2
    assert der < 0.15
    assert mapping[result.main_speaker] == _host(talk.truth) == "A"


def test_one_voice_is_one_speaker() -> None:
    sc = monologue(SENTENCES_A[:5])
    result = ResemblyzerDiarizer().diarize(ArrayAudio(sc.clean, RATE), detect_speech(sc.clean, RATE))
    assert result.speakers == ["SPEAKER_00"]
    assert result.speech_seconds("SPEAKER_00") > 0.9 * sc.speech.duration()


def test_overlapped_speech_does_not_count_as_the_host() -> None:
    a, b = piper(SENTENCES_A[1]), espeak(SENTENCES_B[1])
    placed = [
        (0.5, "A", piper(SENTENCES_A[0])),
        (3.5, "B", espeak(SENTENCES_B[0])),
        (7.0, "A", a),
        (7.3, "B", b),
    ]
    t = 11.0
    for s in SENTENCES_A[2:6]:
        placed.append((t, "A", piper(s)))
        t += piper(s).size / RATE + 0.6
    sc = compose(placed, t + 0.5)
    result = ResemblyzerDiarizer().diarize(ArrayAudio(sc.clean, RATE), detect_speech(sc.clean, RATE))
    crosstalk = Segment(7.3, 7.0 + a.size / RATE)
    host = result.annotation.label_timeline(result.main_speaker)
    assert host.crop(crosstalk).duration() < 0.3 * crosstalk.duration
    assert result.main_speaker is not None
    assert DiarizationErrorRate().optimal_mapping(sc.truth, result.annotation)[result.main_speaker] == "A"


def test_no_speech_no_speakers() -> None:
    result = ResemblyzerDiarizer().diarize(ArrayAudio(np.zeros(RATE * 3, np.float32), RATE), Timeline())
    assert result.speakers == [] and result.main_speaker is None


def test_other_rates_are_resampled_for_embedding(talk) -> None:
    import soxr

    x = np.asarray(soxr.resample(talk.clean, RATE, 48000), dtype=np.float32)
    result = ResemblyzerDiarizer().diarize(ArrayAudio(x, 48000), detect_speech(talk.clean, RATE))
    assert DiarizationErrorRate()(talk.truth, result.annotation) < 0.15


def test_mel_matches_librosa() -> None:
    import librosa

    x = piper(SENTENCES_A[0])[:RATE]
    ours = mel_frames(x)
    ref = librosa.feature.melspectrogram(y=x, sr=RATE, n_fft=400, hop_length=160, n_mels=40).T
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6 * float(ref.max()))


def test_windows_tile_each_region() -> None:
    speech = Timeline([Segment(0.0, 1.0), Segment(2.0, 6.1), Segment(7.0, 7.3)])
    ws = list(speech_windows(speech, window=1.5, hop=0.75, min_window=0.5))
    assert (ws[0].start, ws[0].end) == (0.0, 1.0)  # shorter than a window: one of its own length
    inner = [w for w in ws if w.region == 1]
    assert inner[0].core_start == 2.0 and inner[-1].core_end == 6.1
    for w1, w2 in zip(inner, inner[1:], strict=False):
        assert w2.core_start == pytest.approx(w1.core_end)
        assert w1.end - w1.start == pytest.approx(1.5)
        assert w2.start - w1.start <= 0.75 + 1e-9
    assert all(w.region != 2 for w in ws)  # 0.3 s: too short to embed


def test_split_overlap_takes_crosstalk_out_and_orders_speakers() -> None:
    ann = Annotation()
    ann[Segment(0, 10)] = "x"
    ann[Segment(8, 12)] = "y"
    ann[Segment(12, 30), "b"] = "y"
    d = split_overlap(ann)
    assert d.ambiguous == Timeline([Segment(8, 10)])
    assert d.main_speaker == "SPEAKER_00" and d.speech_seconds("SPEAKER_00") == pytest.approx(20.0)
    assert d.speech_seconds("SPEAKER_01") == pytest.approx(8.0)


def test_pyannote_needs_a_local_pipeline(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        PyannoteDiarizer(tmp_path / "missing")
    (tmp_path / "config.yaml").write_text("pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n")
    diarizer = PyannoteDiarizer(tmp_path, device="cpu")
    # pyannote.audio cannot be installed beside mediapipe: this environment reports it plainly
    with pytest.raises(ConfigurationError, match="pyannote.audio is not usable"):
        diarizer.diarize(ArrayAudio(np.zeros(RATE, np.float32), RATE), Timeline([Segment(0, 1)]))
