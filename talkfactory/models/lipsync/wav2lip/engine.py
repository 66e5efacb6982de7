"""Running the generator: a torch engine (CPU, or CUDA with fp16) and an onnxruntime engine.

Both take what the render pipeline produces (uint8 crops, float32 mel windows) and give uint8
faces back, so pixel scaling and layout changes happen on the device, not in Python. Engines
are cached per process by (checkpoint sha256, device, precision): a worker loads its model
once and every later render reuses it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from talkfactory.errors import ConfigurationError
from talkfactory.models.lipsync.wav2lip.checkpoint import (
    check_file,
    file_sha256,
    is_onnx,
    load_state_dict,
    open_onnx,
)
from talkfactory.models.lipsync.wav2lip.network import IMG_SIZE, Wav2LipNetwork, fold_batchnorm

CPU_BATCH_SIZE = 16
"""Batch on CPU: larger batches gain nothing there and delay the first frame."""
GPU_BATCH_LIMITS = (16, 128)
"""Smallest and largest batch chosen on a GPU; the cap bounds host memory for frames in flight."""
GPU_BYTES_PER_SAMPLE = {True: 8 << 20, False: 16 << 20}
"""Conservative device memory per sample in flight (activations + skips + workspace), by fp16."""
GPU_RESERVED_BYTES = 1 << 30


class Engine(Protocol):
    """Runs the generator on batches."""

    device: str
    fp16: bool

    def infer(
        self, mel: NDArray[np.float32], faces: NDArray[np.uint8], *, pad_to: int | None = None
    ) -> NDArray[np.uint8]:
        """``mel`` (n, 1, 80, 16) and ``faces`` (n, 96, 96, 6) -> faces (n, 96, 96, 3), all BGR uint8.

        ``faces`` channels 0-2 are the crop with its lower half zeroed, 3-5 the reference crop.
        """
        ...

    def default_batch_size(self) -> int:
        """Batch size to use when the caller gives none."""
        ...


def choose_batch_size(
    free_bytes: int,
    *,
    fp16: bool,
    limits: tuple[int, int] = GPU_BATCH_LIMITS,
    reserved: int = GPU_RESERVED_BYTES,
) -> int:
    """The largest power of two whose activations fit in half the free device memory, within ``limits``."""
    budget = free_bytes // 2 - reserved
    fits = max(1, budget // GPU_BYTES_PER_SAMPLE[fp16])
    size = 1 << (int(fits).bit_length() - 1)
    return int(min(max(size, limits[0]), limits[1]))


def resolve_device(device: str) -> str:
    """Device name: "auto" -> "cuda" when torch sees a GPU, else "cpu"; a CUDA device asked for must exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} requested but torch sees no CUDA GPU")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigurationError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
    return device


class TorchEngine:
    """The generator in torch: BatchNorm folded, fp16 and channels-last on CUDA."""

    def __init__(self, state_dict: dict[str, torch.Tensor], *, device: str, fp16: bool) -> None:
        if fp16 and not device.startswith("cuda"):
            raise ConfigurationError("fp16 inference needs a CUDA device")
        net = Wav2LipNetwork()
        # strict=False only forgives absent num_batches_tracked counters; validation caught the rest.
        net.load_state_dict(state_dict, strict=False)
        model = fold_batchnorm(net.eval())
        self.device = device
        self.fp16 = fp16
        self._dtype = torch.float16 if fp16 else torch.float32
        self._cuda = device.startswith("cuda")
        model = model.to(device=device, dtype=self._dtype)
        if self._cuda:
            # Tensor cores want NHWC; Module.to accepts memory_format though its stubs do not say so.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: pick the fastest kernels once
        self.model = model.eval()
        self._pinned: dict[str, torch.Tensor] = {}
        # One batch at a time: the pinned staging buffers are shared, and so is the GPU.
        self._lock = threading.Lock()

    def _to_device(self, name: str, array: NDArray[Any]) -> torch.Tensor:
        """Host array -> device tensor; on CUDA through a reused pinned buffer so the copy is async."""
        host = torch.from_numpy(np.ascontiguousarray(array))
        if not self._cuda:
            return host
        buf = self._pinned.get(name)
        if buf is None or buf.numel() < host.numel() or buf.dtype != host.dtype:
            buf = torch.empty(host.numel(), dtype=host.dtype).pin_memory()
            self._pinned[name] = buf
        staged = buf[: host.numel()].view(host.shape)
        staged.copy_(host)
        # The previous batch's .cpu() synchronised the stream, so reusing the buffer is safe.
        return staged.to(self.device, non_blocking=True)

    def default_batch_size(self) -> int:
        if not self._cuda:
            return CPU_BATCH_SIZE
        free, _total = torch.cuda.mem_get_info(torch.device(self.device))
        return choose_batch_size(free, fp16=self.fp16)

    def infer(
        self, mel: NDArray[np.float32], faces: NDArray[np.uint8], *, pad_to: int | None = None
    ) -> NDArray[np.uint8]:
        n = faces.shape[0]
        if n == 0:
            return np.zeros((0, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
        if pad_to is not None and n < pad_to:
            # Same shape every call: cudnn keeps its chosen kernels and nothing recompiles.
            faces = np.concatenate([faces, np.zeros((pad_to - n, *faces.shape[1:]), dtype=faces.dtype)])
            mel = np.concatenate([mel, np.zeros((pad_to - n, *mel.shape[1:]), dtype=mel.dtype)])
        with self._lock, torch.inference_mode():
            face_t = self._to_device("face", faces)
            mel_t = self._to_device("mel", mel.astype(np.float32, copy=False))
            # uint8 NHWC -> float NCHW in [0, 1]; channels_last keeps the memory order as it came.
            face_in = face_t.permute(0, 3, 1, 2).to(self._dtype).div_(255.0)
            if not self._cuda:
                face_in = face_in.contiguous()
            out = self.model(mel_t.to(self._dtype), face_in)
            pixels = out.float().mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
            result = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return np.asarray(result[:n])


class OnnxEngine:
    """An ONNX export of the generator through onnxruntime (CUDA execution provider when present)."""

    def __init__(self, session: Any, roles: dict[str, str]) -> None:
        self.session = session
        self._roles = roles
        self._output = session.get_outputs()[0].name
        self.fp16 = False
        self.device = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"

    def default_batch_size(self) -> int:
        if self.device == "cuda" and torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return choose_batch_size(free, fp16=False)
        return GPU_BATCH_LIMITS[1] if self.device == "cuda" else CPU_BATCH_SIZE

    def infer(
        self, mel: NDArray[np.float32], faces: NDArray[np.uint8], *, pad_to: int | None = None
    ) -> NDArray[np.uint8]:
        n = faces.shape[0]
        if n == 0:
            return np.zeros((0, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
        face_in = np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        feeds = {
            self._roles["audio"]: np.ascontiguousarray(mel, dtype=np.float32),
            self._roles["face"]: face_in,
        }
        (out,) = self.session.run([self._output], feeds)
        pixels = np.clip(np.rint(np.asarray(out, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


@dataclass(frozen=True)
class LoadedModel:
    engine: Engine
    sha256: str
    path: Path


_cache: dict[tuple[str, str, bool], LoadedModel] = {}
_cache_lock = threading.Lock()


def load_model(checkpoint: str | Path, *, device: str = "auto", fp16: bool | None = None) -> LoadedModel:
    """The engine for ``checkpoint`` on ``device``, loaded once per process and then reused.

    ``fp16=None`` means fp16 on CUDA and fp32 elsewhere. ONNX files run in the precision they
    were exported in. Raises ``CheckpointError`` for a missing, unreadable or mismatched file and
    ``ConfigurationError`` for a device that is not there.
    """
    path = Path(checkpoint)
    check_file(path)
    sha = file_sha256(path)
    if is_onnx(path):
        if fp16:
            raise ConfigurationError(
                "fp16 applies to PyTorch checkpoints; export the ONNX model in fp16 instead"
            )
        if device.startswith("cuda"):
            resolve_device(device)
        key = (sha, f"onnx:{device}", False)
        with _cache_lock:
            if key not in _cache:
                session, roles, sha = open_onnx(path, device)
                _cache[key] = LoadedModel(OnnxEngine(session, roles), sha, path)
            return _cache[key]

    resolved = resolve_device(device)
    half = resolved.startswith("cuda") if fp16 is None else fp16
    key = (sha, resolved, half)
    with _cache_lock:
        if key not in _cache:
            state, sha = load_state_dict(path)
            _cache[key] = LoadedModel(TorchEngine(state, device=resolved, fp16=half), sha, path)
            del state
        return _cache[key]


def clear_model_cache() -> None:
    """Forget every loaded engine (tests; a worker switching models to free GPU memory)."""
    with _cache_lock:
        _cache.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cached_models() -> int:
    """How many engines this process holds."""
    with _cache_lock:
        return len(_cache)
