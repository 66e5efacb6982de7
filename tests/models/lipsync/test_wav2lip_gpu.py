"""CUDA checks for the Wav2Lip backend: run on a GPU machine with ``pytest -m gpu``; never in CI.

They compare CUDA (fp32 and fp16) with the CPU engine on the same random weights, check the batch
size chosen from free GPU memory against what a batch really takes, and render through the
whole backend on the GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkfactory.models.lipsync.wav2lip import Wav2LipBackend
from talkfactory.models.lipsync.wav2lip.checkpoint import load_state_dict
from talkfactory.models.lipsync.wav2lip.engine import (
    GPU_BATCH_LIMITS,
    GPU_BYTES_PER_SAMPLE,
    TorchEngine,
    choose_batch_size,
    load_model,
)
from tests.fixtures.lipsync import checkpoint_file, speech_like_audio, synthetic_track, template_frames

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (select with -m gpu there)"),
]


def _inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-4, 4, (n, 1, 80, 16)).astype(np.float32)
    faces = rng.integers(0, 256, (n, 96, 96, 6), dtype=np.uint8)
    faces[:, 48:, :, :3] = 0
    return mel, faces


def _engines() -> tuple[TorchEngine, TorchEngine, TorchEngine]:
    state, _ = load_state_dict(checkpoint_file("wrapped-module"))
    return (
        TorchEngine(state, device="cpu", fp16=False),
        TorchEngine(state, device="cuda", fp16=False),
        TorchEngine(state, device="cuda", fp16=True),
    )


def test_cuda_fp32_and_fp16_match_cpu():
    cpu, cuda32, cuda16 = _engines()
    mel, faces = _inputs(8)
    want = cpu.infer(mel, faces).astype(np.int16)
    got32 = cuda32.infer(mel, faces)
    got16 = cuda16.infer(mel, faces)
    assert got32.shape == got16.shape == (8, 96, 96, 3) and got16.dtype == np.uint8
    assert np.abs(got32 - want).max() <= 2
    diff16 = np.abs(got16 - want)
    assert diff16.max() <= 8 and diff16.mean() < 1.0
    assert next(cuda16.model.parameters()).dtype == torch.float16


def test_padded_batches_return_only_the_real_rows():
    _, _, cuda16 = _engines()
    mel, faces = _inputs(5, seed=1)
    full = cuda16.infer(mel, faces)
    padded = cuda16.infer(mel, faces, pad_to=32)
    assert padded.shape == (5, 96, 96, 3)
    assert np.abs(padded.astype(np.int16) - full).max() <= 1


def test_backend_defaults_on_cuda_and_batch_size_from_free_memory():
    free, _ = torch.cuda.mem_get_info()
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"))  # device="auto"
    assert backend.device == "cuda" and backend.fp16 is True
    expected = choose_batch_size(free, fp16=True)
    assert GPU_BATCH_LIMITS[0] <= backend.batch_size <= GPU_BATCH_LIMITS[1]
    assert abs(backend.batch_size - expected) <= expected // 2  # free memory moves a little between calls
    # The per-sample estimate behind the choice must not be below what a batch really takes.
    engine = load_model(checkpoint_file("wrapped-module")).engine
    mel, faces = _inputs(backend.batch_size, seed=2)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    engine.infer(mel, faces)
    torch.cuda.synchronize()
    per_sample = (torch.cuda.max_memory_allocated() - base) / backend.batch_size
    assert per_sample <= GPU_BYTES_PER_SAMPLE[True], per_sample


def test_render_on_cuda_through_the_backend():
    backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cuda", batch_size=16)
    track = synthetic_track(frames=8, absent=(3,))
    frames = template_frames(track, count=40)
    out = list(backend.render(backend.prepare(track), frames, speech_like_audio(1.6), 25.0))
    assert len(out) == 40 and all(o.shape == (track.height, track.width, 3) for o in out)
    assert out[3] is frames[3].image
    stats = backend.last_stats
    assert stats is not None and stats.batches == 3 and stats.faces == 35


def test_onnx_uses_the_cuda_provider_when_onnxruntime_has_it(tmp_path):
    import onnxruntime as ort

    from talkfactory.models.lipsync.wav2lip import export_onnx

    report = export_onnx(checkpoint_file("wrapped-module"), tmp_path / "w.onnx")
    assert report.passed
    backend = Wav2LipBackend(report.onnx_path, device="auto", batch_size=8)
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert backend.device == ("cuda" if has_cuda else "cpu")
