"""Reading and checking Wav2Lip checkpoints before any frame is decoded.

Two formats load:

* the public PyTorch checkpoints (``wav2lip.pth``, ``wav2lip_gan.pth``): a dict whose
  ``state_dict`` holds the generator's tensors (optimizer state and step counters alongside are
  ignored), or a bare state_dict; keys with or without the ``module.`` prefix that
  ``DataParallel`` training leaves. Read with ``torch.load(weights_only=True)``: no code runs.
* an ONNX export of the same network (see ``onnx_export.py``), opened with onnxruntime.

The file's sha256 is the model's identity in lineage. Every problem is a ``CheckpointError``
naming the file and what does not match.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from talkfactory.errors import CheckpointError, ConfigurationError
from talkfactory.models.lipsync.wav2lip.network import reference_shapes

_DP_PREFIX = "module."
_OPTIONAL_SUFFIX = ".num_batches_tracked"  # absent from checkpoints of very old torch; unused in eval
_MAX_LISTED = 12

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, remembered per (path, size, mtime) so a worker hashes each file once."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint: {exc.strerror or exc}", subject=str(p)) from exc
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def check_file(path: Path) -> None:
    """``CheckpointError`` unless ``path`` is a non-empty regular file."""
    if not path.exists():
        raise CheckpointError("checkpoint file does not exist", subject=str(path))
    if not path.is_file():
        raise CheckpointError("checkpoint path is not a file", subject=str(path))
    if path.stat().st_size == 0:
        raise CheckpointError("checkpoint file is empty", subject=str(path))


def extract_state_dict(obj: Any, subject: str) -> dict[str, torch.Tensor]:
    """The generator's tensors from a loaded checkpoint object, keys without ``module.``."""
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            "not a Wav2Lip checkpoint: expected a dict with 'state_dict' or a state_dict, "
            f"got {type(obj).__name__}",
            subject=subject,
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = str(key)
        name = name[len(_DP_PREFIX) :] if name.startswith(_DP_PREFIX) else name
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {key!r} is a {type(value).__name__}, not a tensor", subject=subject)
        if name in state:
            raise CheckpointError(
                f"tensor {name!r} appears twice (with and without 'module.')", subject=subject
            )
        state[name] = value
    return state


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def validate_state_dict(state: Mapping[str, torch.Tensor], subject: str) -> None:
    """Raise ``CheckpointError`` listing missing keys, unexpected keys and shape mismatches."""
    expected = reference_shapes()
    missing = sorted(k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = [
        f"{k}: checkpoint {_fmt(tuple(state[k].shape))}, network {_fmt(expected[k])}"
        for k in sorted(expected)
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape: " + "; ".join(wrong[:_MAX_LISTED]))
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listing(unexpected)}")
    if problems:
        raise CheckpointError(
            "does not match the Wav2Lip generator: " + " | ".join(problems), subject=subject
        )
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise CheckpointError(f"non-finite values (NaN/inf) in: {_listing(bad)}", subject=subject)


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read, normalise and validate a PyTorch checkpoint; returns (state_dict, sha256)."""
    p = Path(path)
    check_file(p)
    subject = str(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, pickled code: all unusable the same way
        text = str(exc).strip()
        cause = text.splitlines()[0].split(". ")[0] if text else ""
        raise CheckpointError(
            f"cannot read checkpoint (truncated or not a PyTorch file?): {type(exc).__name__}: {cause}",
            subject=subject,
        ) from exc
    state = extract_state_dict(obj, subject)
    validate_state_dict(state, subject)
    return state, file_sha256(p)


def onnx_providers(device: str) -> list[Any]:
    """Execution providers for onnxruntime: CUDA first (with its device id) when wanted, CPU always.

    ``device="cuda[:N]"`` with an onnxruntime build that has no CUDA provider (the plain
    ``onnxruntime`` wheel) is a ``ConfigurationError``; ``"auto"`` quietly runs on the CPU.
    """
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda"):
        if not has_cuda:
            raise ConfigurationError(
                f"device {device!r} asked for, but this onnxruntime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu)"
            )
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device == "auto" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


ONNX_INPUT_SHAPES = {"audio": (1, 80, 16), "face": (6, 96, 96)}
ONNX_OUTPUT_SHAPE = (3, 96, 96)


def open_onnx(path: str | Path, device: str = "auto") -> tuple[Any, dict[str, str], str]:
    """An onnxruntime session for an exported generator; returns (session, input roles, sha256).

    ``input roles`` maps "audio" and "face" to the graph's input names, told apart by shape so
    exports with other input names load too.
    """
    import onnxruntime as ort

    p = Path(path)
    check_file(p)
    subject = str(p)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(os.fspath(p), sess_options=options, providers=onnx_providers(device))
    except Exception as exc:
        raise CheckpointError(
            f"cannot open ONNX model (truncated or not ONNX?): {type(exc).__name__}: "
            f"{str(exc).strip()[:300]}",
            subject=subject,
        ) from exc
    roles: dict[str, str] = {}
    found = []
    for inp in session.get_inputs():
        dims = tuple(d if isinstance(d, int) else -1 for d in inp.shape[1:])
        found.append(f"{inp.name}{_fmt(dims)}")
        for role, shape in ONNX_INPUT_SHAPES.items():
            if dims == shape:
                roles[role] = inp.name
    outputs = session.get_outputs()
    out_dims = tuple(d if isinstance(d, int) else -1 for d in outputs[0].shape[1:]) if outputs else ()
    if set(roles) != set(ONNX_INPUT_SHAPES) or len(found) != 2 or out_dims != ONNX_OUTPUT_SHAPE:
        raise CheckpointError(
            "ONNX graph is not a Wav2Lip generator: expects inputs (N, 1, 80, 16) and (N, 6, 96, 96) and "
            f"output (N, 3, 96, 96); has inputs {', '.join(found)} and output {_fmt(out_dims)}",
            subject=subject,
        )
    return session, roles, file_sha256(p)
