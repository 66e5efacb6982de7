from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from talkfactory.errors import CheckpointError, ConfigurationError
from talkfactory.models.lipsync.wav2lip import ExportReport, Wav2LipBackend, export_onnx
from talkfactory.models.lipsync.wav2lip.checkpoint import file_sha256
from tests.fixtures.lipsync import checkpoint_file, speech_like_audio, synthetic_track, template_frames


@cache
def _exported() -> ExportReport:
    src = checkpoint_file("wrapped-module")
    return export_onnx(src, src.parent / "export" / "wav2lip.onnx", batch_sizes=(1, 3))


@pytest.mark.slow
def test_export_matches_torch_with_a_dynamic_batch():
    report = _exported()
    assert report.onnx_path.is_file()
    assert report.max_abs_diff < 1e-3 and report.passed
    assert report.batch_sizes == (1, 3) and report.opset == 17
    assert report.onnx_sha256 == file_sha256(report.onnx_path)
    assert report.checkpoint_sha256 == file_sha256(checkpoint_file("wrapped-module"))
    assert not list(report.onnx_path.parent.glob("*.tmp.onnx"))  # no partial files left


def test_backend_runs_the_onnx_export_like_the_checkpoint():
    report = _exported()
    onnx = Wav2LipBackend(report.onnx_path, device="cpu", batch_size=4)
    torch_backend = Wav2LipBackend(checkpoint_file("wrapped-module"), device="cpu", batch_size=4)
    assert onnx.version.endswith(report.onnx_sha256[:16])
    with pytest.raises(ConfigurationError):  # no CUDA here: asking for it is an error, not a fallback
        Wav2LipBackend(report.onnx_path, device="cuda")
    track = synthetic_track(frames=5)
    frames = template_frames(track)
    audio = speech_like_audio(0.3)
    got = list(onnx.render(onnx.prepare(track), frames, audio, 25.0))
    want = list(torch_backend.render(torch_backend.prepare(track), frames, audio, 25.0))
    assert len(got) == 5
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == np.uint8
        assert np.abs(a.astype(np.int16) - b).max() <= 2  # a rounding step either side


def test_truncated_onnx_names_the_file(tmp_path: Path):
    data = _exported().onnx_path.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        Wav2LipBackend(path, device="cpu")
    assert str(path) in str(info.value)


def test_export_refuses_a_bad_checkpoint(tmp_path: Path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope" * 10)
    with pytest.raises(CheckpointError):
        export_onnx(bad, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
