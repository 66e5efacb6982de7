"""Two runs extracting the speech of one recording at once into one folder (two avatars, two workers)."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from talkfactory.pipeline.speech import SpeechParams, SpeechResult, extract_speech, load_result
from tests.fixtures.speech import SENTENCES_A, monologue, write_wav


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = monologue(SENTENCES_A[:2], lead=0.5, pause=0.6, tail=0.5)
    return write_wav(tmp_path_factory.mktemp("speech-race") / "talk.wav", scene.clean, 16000)


PARAMS = SpeechParams(min_clip=2.0, max_clip=20.0, denoiser="rnnoise")


def _extract(recording: Path, out: Path, start_at: float) -> SpeechResult:
    time.sleep(max(0.0, start_at - time.time()))
    return extract_speech(recording, out, PARAMS)


def test_concurrent_runs_both_succeed_and_share_one_published_result(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "speech"
    # Two processes (as two `talkfactory run`), started together once both are up.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.0, 0.0]))
        at = time.time() + 0.5
        # the second starts while the first is half way: the old shared work folder broke one of them
        futures = [pool.submit(_extract, recording, out, at + delay) for delay in (0.0, 0.4)]
        results = [f.result() for f in futures]
    assert all(r.clips for r in results)
    # Both name the same published files, all of which exist; no work folder is left.
    assert [c.wav_16k for c in results[0].clips] == [c.wav_16k for c in results[1].clips]
    for c in results[0].clips:
        assert (out / c.wav_16k).stat().st_size > 0 and (out / c.wav_48k).stat().st_size > 0
    published = load_result(out)
    assert published is not None and len(published.clips) == len(results[0].clips)
    assert not list(out.glob(".work-*"))


def test_work_of_a_dead_run_is_swept(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "speech"
    stale = out / ".work-0123456789abcdef-999999999-deadbeef"  # no such pid
    stale.mkdir(parents=True)
    (stale / "denoised-48k.wav").write_bytes(b"half")
    extract_speech(recording, out, SpeechParams(min_clip=2.0, max_clip=20.0, denoiser="none"))
    assert not stale.exists()
