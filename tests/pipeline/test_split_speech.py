"""A four-minute clip for YouTube Shorts (3 minutes at most), split where the speech really pauses.

Real piper speech, recognised by the bundled tiny.en; the cuts are checked against the audio itself
(silence there) and against the words (none straddles a cut)."""

from __future__ import annotations

import numpy as np
import pytest

from talkfactory.models.speech.asr import Transcriber
from talkfactory.pipeline.exports.channels import load_channels
from talkfactory.pipeline.exports.split import plan_parts
from tests.fixtures.long_speech import long_speech

pytestmark = pytest.mark.slow


def test_a_four_minute_clip_is_split_for_shorts_in_pauses() -> None:
    samples, rate = long_speech(240.0)
    duration = samples.size / rate
    words = Transcriber().transcribe_samples(samples, rate).words
    assert len(words) > 400
    shorts = load_channels().get("youtube-shorts")
    plan = plan_parts(duration, shorts.max_duration_s, words, channel=shorts.name)
    assert plan.skipped_reason is None
    assert len(plan.parts) == 2  # as few parts as fit
    assert all(p.duration_s <= 180.0 for p in plan.parts)
    assert plan.parts[0].start_s == 0.0 and plan.parts[-1].end_s == pytest.approx(duration)
    speech_rms = float(np.sqrt(np.mean(samples**2)))
    for left, right in zip(plan.parts, plan.parts[1:], strict=False):
        cut = left.end_s
        assert cut == pytest.approx(right.start_s)
        assert not any(w.start < cut < w.end for w in words)
        # Silence around the cut, measured on the audio, not the recogniser's word times.
        window = samples[int((cut - 0.1) * rate) : int((cut + 0.1) * rate)]
        assert float(np.sqrt(np.mean(window**2))) < 0.05 * speech_rms
