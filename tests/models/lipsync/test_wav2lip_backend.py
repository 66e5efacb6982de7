from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from talkfactory.errors import CheckpointError, ConfigurationError
from talkfactory.models.lipsync.base import LipSyncBackend, TemplateFrame
from talkfactory.models.lipsync.wav2lip import Wav2LipBackend
from talkfactory.models.lipsync.wav2lip.engine import cached_models, choose_batch_size
from tests.fixtures.lipsync import (
    checkpoint_file,
    random_state_dict,
    save_checkpoint,
    speech_like_audio,
    synthetic_track,
    template_frames,
)


def _wav2lip_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wav2lip")]


def test_renders_frames_of_the_right_shape_through_the_whole_path():
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", batch_size=4)
    assert isinstance(backend, LipSyncBackend)
    assert backend.name == "wav2lip" and backend.device == "cpu" and backend.fp16 is False
    assert re.fullmatch(r"wav2lip-\d+\.\d+\.\d+\+[0-9a-f]{16}", backend.version)
    assert backend.version.endswith(backend.sha256[:16])
    track = synthetic_track(frames=6, absent=(2,))
    prepared = backend.prepare(track)
    frames = template_frames(track, count=11)  # loops past the track's end, like ping-pong playback
    out = list(backend.render(prepared, iter(frames), speech_like_audio(0.5), 25.0))
    assert len(out) == len(frames)
    for src, got in zip(frames, out, strict=True):
        assert got.shape == (track.height, track.width, 3) and got.dtype == np.uint8
        if not track.present[src.index]:
            assert got is src.image  # no face: passed through untouched
            continue
        x0, y0, x1, y1 = prepared.boxes[src.index]
        outside = np.ones(got.shape[:2], dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(got[outside], src.image[outside])
        assert (got[y0:y1, x0:x1] != src.image[y0:y1, x0:x1]).any()
    stats = backend.last_stats
    assert stats is not None and stats.frames == 11 and stats.faces == 9 and stats.batches == 3


def test_both_checkpoint_layouts_give_identical_frames_and_the_model_is_loaded_once():
    track = synthetic_track(frames=4)
    frames = template_frames(track)
    audio = speech_like_audio(0.3)
    a = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", batch_size=2)
    b = Wav2LipBackend(checkpoint_file("bare"), device="cpu", batch_size=2)
    out_a = list(a.render(a.prepare(track), frames, audio, 25.0))
    out_b = list(b.render(b.prepare(track), frames, audio, 25.0))
    for x, y in zip(out_a, out_b, strict=True):
        assert np.array_equal(x, y)
    assert a.version != b.version  # different files
    held = cached_models()
    t0 = time.perf_counter()
    again = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu")
    assert time.perf_counter() - t0 < 0.5 and cached_models() == held
    assert again._engine is a._engine


def test_bad_checkpoint_fails_before_any_frame_is_read(tmp_path):
    state = random_state_dict(0)
    state["audio_encoder.0.conv_block.0.weight"] = state["audio_encoder.0.conv_block.0.weight"][:16]
    path = save_checkpoint(tmp_path / "bad.pth", state, module_prefix=True)
    pulled = []

    def frames() -> Iterator[TemplateFrame]:
        track = synthetic_track(frames=2)
        for f in template_frames(track):
            pulled.append(f)
            yield f

    with pytest.raises(CheckpointError, match=r"audio_encoder\.0\.conv_block\.0\.weight"):
        backend = Wav2LipBackend(path, device="cpu")
        list(
            backend.render(backend.prepare(synthetic_track(frames=2)), frames(), speech_like_audio(0.1), 25.0)
        )
    assert pulled == []


def test_other_frame_rates_and_sample_rates():
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", batch_size=8)
    track = synthetic_track(frames=5, fps=29.97)
    audio = speech_like_audio(0.4, sample_rate=44_100)
    out = list(backend.render(backend.prepare(track), template_frames(track, 12), audio, 30000 / 1001))
    assert len(out) == 12


def test_memory_stays_bounded_while_the_consumer_is_slow():
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", batch_size=2)
    track = synthetic_track(frames=4)
    base = template_frames(track)
    pulled = 0

    def endless() -> Iterator[TemplateFrame]:
        nonlocal pulled
        while True:
            pulled += 1
            yield base[pulled % len(base)]

    gen = backend.render(backend.prepare(track), endless(), speech_like_audio(60.0), 25.0)
    next(gen)
    time.sleep(1.5)  # the stages fill their one-batch queues and wait
    # prepare (1 batch) + queue (1) + inference (1) + queue (1) + the batch being yielded (1)
    assert pulled <= 5 * 2 + 1
    gen.close()
    deadline = time.time() + 5
    while _wav2lip_threads() and time.time() < deadline:
        time.sleep(0.05)
    assert _wav2lip_threads() == []


def test_errors_inside_the_frame_source_reach_the_caller():
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", batch_size=2)
    track = synthetic_track(frames=3)

    def broken() -> Iterator[TemplateFrame]:
        yield from template_frames(track)
        raise OSError("decoder died")

    with pytest.raises(OSError, match="decoder died"):
        list(backend.render(backend.prepare(track), broken(), speech_like_audio(0.5), 25.0))


def test_frames_that_do_not_match_the_track_are_refused():
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu")
    track = synthetic_track(frames=2)
    wrong = [TemplateFrame(index=0, image=np.zeros((10, 10, 3), dtype=np.uint8))]
    with pytest.raises(ConfigurationError, match="face track"):
        list(backend.render(backend.prepare(track), wrong, speech_like_audio(0.1), 25.0))
    with pytest.raises(ConfigurationError):
        list(backend.render("not prepared", wrong, speech_like_audio(0.1), 25.0))
    with pytest.raises(ConfigurationError):
        Wav2LipBackend(checkpoint_file("wrapped-module"), device="tpu")
    with pytest.raises(ConfigurationError):
        Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", fp16=True)


def test_batch_size_from_free_gpu_memory():
    gib = 1 << 30
    assert choose_batch_size(80 * gib, fp16=True) == 128  # capped: host memory for frames in flight
    assert choose_batch_size(3 * gib, fp16=True) == 64  # (1.5 GiB - 1 GiB reserve) / 8 MiB
    assert choose_batch_size(3 * gib, fp16=False) == 32  # fp32 needs twice the memory per sample
    assert choose_batch_size(int(3.4 * gib), fp16=True) == 64  # rounded down to a power of two
    assert choose_batch_size(2 * gib, fp16=True) == 16  # never below the floor
