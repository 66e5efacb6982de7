"""Export a Wav2Lip checkpoint to ONNX (dynamic batch) and check onnxruntime against torch.

Uses torch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx`` package,
where the newer exporter also needs ``onnxscript``. The graph has inputs ``audio`` (N, 1, 80, 16)
and ``face`` (N, 6, 96, 96) and output ``frames`` (N, 3, 96, 96), all float32, as
``network.py`` describes; ``Wav2LipBackend`` loads the file like a ``.pth``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from talkfactory.models.lipsync.wav2lip.checkpoint import load_state_dict, open_onnx
from talkfactory.models.lipsync.wav2lip.network import IMG_SIZE, MEL_BANDS, MEL_WINDOW, Wav2LipNetwork

DEFAULT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """What ``export_onnx`` wrote and how closely onnxruntime reproduces torch."""

    checkpoint: Path
    checkpoint_sha256: str
    onnx_path: Path
    onnx_sha256: str
    opset: int
    batch_sizes: tuple[int, ...]
    """Batch sizes compared (more than one: the batch axis really is dynamic)."""
    max_abs_diff: float
    """Largest |onnxruntime - torch| over every output pixel compared, on the [0, 1] scale."""
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def _sample_inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    audio = torch.rand(batch, 1, MEL_BANDS, MEL_WINDOW, generator=gen) * 8.0 - 4.0  # the mel range
    face = torch.rand(batch, 6, IMG_SIZE, IMG_SIZE, generator=gen)
    face[:, :3, IMG_SIZE // 2 :] = 0.0
    return audio, face


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path,
    *,
    opset: int = 17,
    batch_sizes: tuple[int, ...] = (1, 4),
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportReport:
    """Write ``checkpoint`` as ONNX to ``out_path`` and compare onnxruntime (CPU) with torch (CPU).

    The file is written to a temporary name and moved into place, so a failed export leaves no
    partial model behind. The report says whether the match is within ``tolerance``; it does not
    raise for a mismatch, so the caller decides (the CLI exits non-zero).
    """
    state, sha = load_state_dict(checkpoint)
    net = Wav2LipNetwork()
    net.load_state_dict(state, strict=False)
    net.eval()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp.onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        example = _sample_inputs(2, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                net,
                example,
                os.fspath(tmp),
                dynamo=False,
                input_names=["audio", "face"],
                output_names=["frames"],
                dynamic_axes={"audio": {0: "batch"}, "face": {0: "batch"}, "frames": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                external_data=False,
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

    session, roles, onnx_sha = open_onnx(out, device="cpu")
    worst = 0.0
    for i, batch in enumerate(batch_sizes):
        audio, face = _sample_inputs(batch, seed=1 + i)
        with torch.inference_mode():
            expected = net(audio, face).numpy()
        (got,) = session.run(None, {roles["audio"]: audio.numpy(), roles["face"]: face.numpy()})
        worst = max(worst, float(np.abs(np.asarray(got) - expected).max()))
    return ExportReport(
        checkpoint=Path(checkpoint),
        checkpoint_sha256=sha,
        onnx_path=out,
        onnx_sha256=onnx_sha,
        opset=opset,
        batch_sizes=tuple(batch_sizes),
        max_abs_diff=worst,
        tolerance=tolerance,
    )
