"""Who speaks when: a small diarizer interface, resemblyzer clustering, and an optional pyannote pipeline.

``ResemblyzerDiarizer`` (the default, CPU, weights in the resemblyzer wheel) embeds overlapping
windows (1.5 s, hop 0.75 s) taken only inside voice-activity speech, clusters them agglomeratively
with a cosine-distance threshold (so the number of speakers is estimated, not given), then labels
each stretch of speech with its window's cluster. Windows whose embedding sits between two
clusters or far from all of them are marked ambiguous: that is where two voices overlap or the
audio is too poor to tell, and such stretches go into no speaker's clips. Speakers are named
``SPEAKER_00``, ``SPEAKER_01``, ... by decreasing amount of speech, so ``SPEAKER_00`` is the main
speaker (the host).

``PyannoteDiarizer`` runs a pyannote.audio pipeline loaded from a local checkpoint directory. It
needs pyannote.audio, which cannot share this project's environment (see docs/speech.md), so
it is imported lazily and untested here.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pyannote.core import Annotation, Segment, Timeline

from talkfactory.errors import CheckpointError, ConfigurationError
from talkfactory.models.audio import AudioSource

EMBED_RATE = 16000
MEL_HOP = 160  # 10 ms frames, resemblyzer's hparams
MEL_FFT = 400  # 25 ms window
MEL_BANDS = 40
NORM_DBFS = -30.0  # resemblyzer normalises utterances to this level before its (linear) mel


@dataclass(frozen=True)
class Diarization:
    """Speaker turns, named by decreasing speech (``SPEAKER_00`` speaks most), and ambiguous speech."""

    annotation: Annotation
    ambiguous: Timeline = field(default_factory=Timeline)

    @property
    def speakers(self) -> list[str]:
        """Labels, most speech first."""
        return sorted(
            (str(label) for label in self.annotation.labels()), key=lambda s: -self.speech_seconds(s)
        )

    @property
    def main_speaker(self) -> str | None:
        """The speaker with the most speech, ``None`` when nobody speaks."""
        speakers = self.speakers
        return speakers[0] if speakers else None

    def speech_seconds(self, speaker: str) -> float:
        return float(self.annotation.label_duration(speaker))


class Diarizer(Protocol):
    """Turns speech regions of a recording into speaker turns."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def diarize(self, audio: AudioSource, speech: Timeline) -> Diarization:
        """Label ``speech`` (voice-activity regions, source seconds) of ``audio`` by speaker."""
        ...


def relabel_by_speech(annotation: Annotation, ambiguous: Timeline | None = None) -> Diarization:
    """Rename labels ``SPEAKER_00``... by decreasing speech so the main speaker comes first."""
    order = sorted(annotation.labels(), key=lambda label: -annotation.label_duration(label))
    mapping = {old: f"SPEAKER_{i:02d}" for i, old in enumerate(order)}
    return Diarization(annotation.rename_labels(mapping=mapping), ambiguous or Timeline())


@functools.cache
def _encoder() -> Any:
    # librosa (under resemblyzer) JIT-compiles with numba on first use; keep its cache somewhere
    # writable and kept, not in site-packages, so later processes start fast
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "talkfactory" / "numba"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))
    except OSError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # webrtcvad imports the deprecated pkg_resources
            from resemblyzer import VoiceEncoder
    except ImportError as exc:
        raise CheckpointError("needs the speech extra (resemblyzer)", subject="resemblyzer") from exc
    encoder = VoiceEncoder(device="cpu", verbose=False)
    encoder.eval()
    return encoder


@functools.cache
def _mel_basis() -> NDArray[np.float32]:
    import librosa

    basis = librosa.filters.mel(sr=EMBED_RATE, n_fft=MEL_FFT, n_mels=MEL_BANDS)
    return np.asarray(basis, dtype=np.float32)


def mel_frames(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """Resemblyzer's (linear power) mel spectrogram, ``(frames, 40)``, frame ``k`` centred at ``k * 10 ms``.

    Same as ``librosa.feature.melspectrogram(n_fft=400, hop_length=160, n_mels=40)`` (centred,
    zero-padded, periodic Hann), computed directly so no numba-compiled path is touched.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    padded = np.pad(x, MEL_FFT // 2)
    n = 1 + (padded.shape[0] - MEL_FFT) // MEL_HOP
    if n <= 0:
        return np.zeros((0, MEL_BANDS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_FFT)[::MEL_HOP][:n]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(MEL_FFT) / MEL_FFT)).astype(np.float32)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return np.asarray(power.astype(np.float32) @ _mel_basis().T, dtype=np.float32)


@dataclass(frozen=True)
class _Window:
    start: float  # audio seconds covered by the embedding
    end: float
    core_start: float  # stretch of speech this window labels
    core_end: float
    region: int = 0  # which speech region it lies in


def speech_windows(speech: Timeline, window: float, hop: float, min_window: float) -> Iterator[_Window]:
    """Embedding windows inside each speech region; each labels the ``hop`` of speech around its centre.

    Regions shorter than ``window`` get one window of their own length (if at least ``min_window``).
    """
    for region, seg in enumerate(speech.support()):
        start, end = float(seg.start), float(seg.end)
        length = end - start
        if length < min_window:
            continue
        if length <= window:
            yield _Window(start, end, start, end, region)
            continue
        count = int(math.ceil((length - window) / hop)) + 1
        step = (length - window) / (count - 1)
        for k in range(count):
            w0 = start + k * step
            centre = w0 + window / 2
            lo = start if k == 0 else centre - step / 2
            hi = end if k == count - 1 else centre + step / 2
            yield _Window(w0, w0 + window, lo, hi, region)


def _cluster(
    embeddings: NDArray[np.float32], threshold: float, max_points: int, seed: int = 0
) -> NDArray[np.intp]:
    """Average-linkage agglomerative clustering on cosine distance, cut at ``threshold``.

    Above ``max_points`` windows (a long recording) a fixed random subset is clustered and every
    window joins its nearest centroid, which keeps memory and time bounded.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    n = embeddings.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.intp)
    pick = np.arange(n)
    if n > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    tree = linkage(embeddings[pick].astype(np.float64), method="average", metric="cosine")
    sub = fcluster(tree, t=threshold, criterion="distance") - 1
    centroids = np.stack([embeddings[pick][sub == c].mean(axis=0) for c in range(int(sub.max()) + 1)])
    return _nearest(embeddings, centroids)[0]


def _normalise_rows(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9), dtype=np.float32)


def _nearest(
    embeddings: NDArray[np.float32], centroids: NDArray[np.float32]
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    sims = embeddings @ _normalise_rows(centroids).T
    return np.asarray(sims.argmax(axis=1), dtype=np.intp), np.asarray(sims, dtype=np.float32)


class ResemblyzerDiarizer:
    """Speaker clustering over resemblyzer embeddings of speech windows (CPU, bounded memory).

    ``threshold`` is the cosine distance at which agglomerative clustering stops merging (lower =
    more speakers). A window is ambiguous when its embedding is a mix of two speakers (the second
    gets ``overlap_fraction`` of the weight or more) or its best similarity is under
    ``min_similarity``. Clusters whose centres are ``merge_similarity`` alike or more are merged (one
    voice split in two). Speakers with less than ``min_speaker_seconds`` of speech (default 0: a
    guest's one question is a speaker too) are folded into the nearest other speaker.
    """

    name = "resemblyzer"

    def __init__(
        self,
        *,
        window: float = 1.5,
        hop: float = 0.75,
        min_window: float = 0.5,
        threshold: float = 0.3,
        overlap_fraction: float = 0.3,
        merge_similarity: float = 0.75,
        min_similarity: float = 0.5,
        min_speaker_seconds: float = 0.0,
        max_cluster_points: int = 2000,
        batch_size: int = 64,
        block_seconds: float = 60.0,
    ) -> None:
        if not 0 < hop <= window:
            raise ConfigurationError(f"need 0 < hop ({hop}) <= window ({window})")
        self.window, self.hop, self.min_window = window, hop, min_window
        self.threshold, self.overlap_fraction, self.min_similarity = (
            threshold,
            overlap_fraction,
            min_similarity,
        )
        self.min_speaker_seconds = min_speaker_seconds
        self.merge_similarity = merge_similarity
        self.max_cluster_points, self.batch_size, self.block_seconds = (
            max_cluster_points,
            batch_size,
            block_seconds,
        )

    @property
    def version(self) -> str:
        import importlib.metadata

        return (
            f"resemblyzer {importlib.metadata.version('resemblyzer')} w{self.window}/h{self.hop}"
            f" t{self.threshold} o{self.overlap_fraction} m{self.merge_similarity} s{self.min_similarity}"
        )

    def embed(self, audio: AudioSource, windows: list[_Window]) -> NDArray[np.float32]:
        """One L2-normalised 256-d embedding per window, reading the audio a block at a time."""
        import torch

        encoder = _encoder()
        rate = audio.sample_rate
        out = np.zeros((len(windows), 256), dtype=np.float32)
        target = 10.0 ** (NORM_DBFS / 20.0)
        pending: list[tuple[int, NDArray[np.float32]]] = []

        def run() -> None:
            by_len: dict[int, list[tuple[int, NDArray[np.float32]]]] = {}
            for idx, mel in pending:
                by_len.setdefault(mel.shape[0], []).append((idx, mel))
            for group in by_len.values():
                for b in range(0, len(group), self.batch_size):
                    part = group[b : b + self.batch_size]
                    with torch.inference_mode():
                        emb = encoder(torch.from_numpy(np.stack([m for _, m in part])))
                    out[[i for i, _ in part]] = emb.numpy()
            pending.clear()

        i = 0
        while i < len(windows):
            # one read covers consecutive windows spanning at most block_seconds
            j = i + 1
            while j < len(windows) and windows[j].end - windows[i].start <= self.block_seconds:
                j += 1
            t0, t1 = windows[i].start, windows[j - 1].end
            block = audio.read(int(round(t0 * rate)), int(round(t1 * rate)))
            if rate != EMBED_RATE:
                import soxr

                block = np.asarray(soxr.resample(block, rate, EMBED_RATE), dtype=np.float32)
            mel = mel_frames(block)
            for k in range(i, j):
                w = windows[k]
                a = int(round((w.start - t0) * EMBED_RATE))
                b = int(round((w.end - t0) * EMBED_RATE))
                piece = block[a:b]
                rms = float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) if piece.size else 0.0
                f0 = int(round((w.start - t0) * 100))
                frames = max(1, int(round((w.end - w.start) * 100)))
                m = mel[f0 : f0 + frames]
                if m.shape[0] < frames:
                    m = np.pad(m, ((0, frames - m.shape[0]), (0, 0)))
                # the mel is linear power, so a level change is a square-law scale
                scale = (target / rms) ** 2 if rms > 1e-6 else 1.0
                pending.append((k, np.ascontiguousarray(m * scale, dtype=np.float32)))
            if len(pending) >= 4 * self.batch_size:
                run()
            i = j
        run()
        return out

    def diarize(self, audio: AudioSource, speech: Timeline) -> Diarization:
        windows = list(speech_windows(speech, self.window, self.hop, self.min_window))
        if not windows:
            return Diarization(Annotation(), Timeline())
        emb = self.embed(audio, windows)
        labels = _cluster(emb, self.threshold, self.max_cluster_points)
        core = np.array([w.core_end - w.core_start for w in windows])
        labels, centroids = self._refine(emb, labels, core)
        unsure = self._unsure(emb, labels, centroids, np.array([w.region for w in windows]))
        annotation = Annotation()
        ambiguous: list[Segment] = []
        for k, w in enumerate(windows):
            seg = Segment(w.core_start, w.core_end)
            if unsure[k]:
                ambiguous.append(seg)
            else:
                annotation[seg, k] = f"S{labels[k]}"
        # neighbouring cores of one speaker join into turns
        merged = annotation.support(collar=0.0)
        # short speech regions under min_window got no window: they follow the nearest turn
        turns = sorted(
            (float(t.start), float(t.end), str(label)) for t, _, label in merged.itertracks(yield_label=True)
        )
        covered = sorted([(a, b) for a, b, _ in turns] + [(float(x.start), float(x.end)) for x in ambiguous])
        ends = list(itertools.accumulate((b for _, b in covered), max))
        starts = [a for a, _, _ in turns]
        for seg in speech.support():
            for piece in _uncovered(float(seg.start), float(seg.end), covered, ends):
                label = _nearest_turn(turns, starts, piece, max_gap=1.0)
                if label is None:
                    ambiguous.append(Segment(*piece))
                else:
                    merged[Segment(*piece), f"x{piece[0]}"] = label
        return relabel_by_speech(merged.support(collar=0.0), Timeline(ambiguous).support())

    def _refine(
        self, emb: NDArray[np.float32], labels: NDArray[np.intp], core: NDArray[np.float64]
    ) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
        """Merge look-alike clusters, fold tiny ones, reassign windows to centroids until stable.

        Two clusters whose centres are at least ``merge_similarity`` alike are one voice split by
        the tree cut (a repeated phrase, a change of tone) and are merged, unless one of them is a
        mix of two others (crosstalk, see ``_unsure``). Returns the labels (``0..k-1``) and robust
        centroids: each the trimmed mean of its members, so overlapped windows that joined a cluster
        do not drag its centre.
        """
        for _ in range(20):
            ids = np.unique(labels)
            centroids = _robust_centroids(emb, labels, ids)
            unit = _normalise_rows(centroids)
            plain = [k for k in range(ids.size) if not _is_mixture(unit, k, self.overlap_fraction)]
            pairs = [(float(unit[i] @ unit[j]), i, j) for i in plain for j in plain if i < j]
            best = max(pairs, default=None)
            if best is not None and best[0] >= self.merge_similarity:
                labels = np.where(labels == ids[best[2]], ids[best[1]], labels)
                continue
            seconds = np.array([core[labels == c].sum() for c in ids])
            keep = seconds >= self.min_speaker_seconds
            if not keep.any():
                keep[np.argmax(seconds)] = True
            new = np.asarray(ids[keep][_nearest(emb, centroids[keep])[0]], dtype=np.intp)
            if np.array_equal(new, labels):
                break
            labels = new
        ids = np.unique(labels)
        labels = np.searchsorted(ids, labels)
        return labels, _robust_centroids(emb, labels, np.arange(ids.size))

    def _unsure(
        self,
        emb: NDArray[np.float32],
        labels: NDArray[np.intp],
        centroids: NDArray[np.float32],
        regions: NDArray[np.intp],
    ) -> NDArray[np.bool_]:
        """Windows to keep out of every speaker: two voices at once, or no voice that fits.

        Overlap shows as an embedding that mixes two speakers: non-negative least squares on the
        window's own and next-nearest centroid gives the second one a share of the weight. A single
        voice gets a few percent (up to ~0.2 in noise), overlapped voices 0.2-0.5; the share is
        averaged with the neighbouring windows of the same speech region, since noise makes single
        windows jumpy while real overlap lasts, and ``overlap_fraction`` or more is ambiguous.
        """
        from scipy.optimize import nnls

        unit = _normalise_rows(centroids)
        sims = emb @ unit.T
        unsure = sims[np.arange(labels.size), labels] < self.min_similarity
        if centroids.shape[0] < 2:
            return np.asarray(unsure, dtype=bool)
        for c in range(centroids.shape[0]):
            if _is_mixture(unit, c, self.overlap_fraction):
                unsure[labels == c] = True
        order = np.argsort(-sims, axis=1)
        share = np.zeros(labels.size)
        for k in range(labels.size):
            first = labels[k]
            second = order[k, 0] if order[k, 0] != first else order[k, 1]
            basis = np.stack([unit[first], unit[second]], axis=1).astype(np.float64)
            weights, _ = nnls(basis, emb[k].astype(np.float64))
            total = float(weights.sum())
            share[k] = weights[1] / total if total > 0 else 0.0
        for k in range(labels.size):
            near = [j for j in (k - 1, k, k + 1) if 0 <= j < labels.size and regions[j] == regions[k]]
            if float(share[near].mean()) >= self.overlap_fraction:
                unsure[k] = True
        return np.asarray(unsure, dtype=bool)


def _is_mixture(unit: NDArray[np.float32], c: int, fraction: float) -> bool:
    """Whether centroid ``c`` is (nearly) a non-negative mix of two other centroids: a crosstalk cluster."""
    from scipy.optimize import nnls

    others = [k for k in range(unit.shape[0]) if k != c]
    if len(others) < 2:
        return False
    nearest = sorted(others, key=lambda k: -float(unit[k] @ unit[c]))[:2]
    basis = unit[nearest].T.astype(np.float64)
    weights, _ = nnls(basis, unit[c].astype(np.float64))
    if weights.sum() <= 0 or weights.min() / weights.sum() < fraction:
        return False
    fit = basis @ weights
    return float(fit @ unit[c] / max(np.linalg.norm(fit), 1e-9)) >= 0.95


def _robust_centroids(
    emb: NDArray[np.float32], labels: NDArray[np.intp], ids: NDArray[np.intp]
) -> NDArray[np.float32]:
    """Per cluster, the mean of its better-matching half, re-centred a few times (a trimmed mean)."""
    out = []
    for c in ids:
        members = emb[labels == c]
        centre = members.mean(axis=0)
        if members.shape[0] >= 4:
            for _ in range(3):
                sims = members @ (centre / max(float(np.linalg.norm(centre)), 1e-9))
                centre = members[sims >= np.median(sims)].mean(axis=0)
        out.append(centre)
    return np.asarray(np.stack(out), dtype=np.float32)


def _uncovered(
    a: float, b: float, covered: list[tuple[float, float]], ends: list[float]
) -> list[tuple[float, float]]:
    """Parts of ``[a, b)`` outside ``covered`` (sorted by start; ``ends`` its running maximum of ends)."""
    out = []
    start = a
    for k in range(bisect.bisect_right(ends, a), len(covered)):
        s, e = covered[k]
        if s >= b:
            break
        if s - start > 1e-6:
            out.append((start, min(s, b)))
        start = max(start, e)
    if b - start > 1e-6:
        out.append((start, b))
    return out


def _nearest_turn(
    turns: list[tuple[float, float, str]], starts: list[float], piece: tuple[float, float], max_gap: float
) -> str | None:
    """Label of the turn closest to ``piece`` within ``max_gap`` seconds (turns sorted, not overlapping)."""
    k = bisect.bisect_left(starts, piece[0])
    best: tuple[float, str] | None = None
    for j in (k - 1, k):
        if 0 <= j < len(turns):
            s, e, label = turns[j]
            gap = max(0.0, s - piece[1], piece[0] - e)
            if gap <= max_gap and (best is None or gap < best[0]):
                best = (gap, label)
    return best[1] if best else None


class PyannoteDiarizer:
    """A pyannote.audio speaker-diarization pipeline loaded from a local checkpoint directory.

    ``checkpoint`` is a directory holding the pipeline's ``config.yaml`` (and the models it names,
    e.g. a downloaded ``pyannote/speaker-diarization-community-1``) or the ``config.yaml`` itself.
    pyannote.audio is imported on first use; install it as described in docs/speech.md. The
    whole recording is handed over in memory at 16 kHz (about 230 MB per hour as float32), which a
    GPU worker can afford. Overlapped speech (two labels at once) becomes ambiguous. UNTESTED HERE:
    pyannote.audio cannot be installed beside mediapipe, and its pretrained pipelines are gated.
    """

    name = "pyannote"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str = "cuda",
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> None:
        path = Path(checkpoint)
        config = path / "config.yaml" if path.is_dir() else path
        if not config.is_file():
            raise CheckpointError("no pyannote pipeline config.yaml here", subject=str(path))
        self.checkpoint = path
        self.device = device
        self.options = {
            k: v
            for k, v in {
                "num_speakers": num_speakers,
                "min_speakers": min_speakers,
                "max_speakers": max_speakers,
            }.items()
            if v is not None
        }
        self._pipeline: Any = None

    @property
    def version(self) -> str:
        import importlib.metadata

        try:
            pyannote_version = importlib.metadata.version("pyannote.audio")
        except importlib.metadata.PackageNotFoundError:
            pyannote_version = "missing"
        return f"pyannote.audio {pyannote_version} {self.checkpoint.name}"

    def _load(self) -> Any:
        if self._pipeline is None:
            try:
                import torch
                from pyannote.audio import Pipeline
            except (ImportError, OSError) as exc:
                raise ConfigurationError(
                    f"pyannote.audio is not usable in this environment ({exc}); see docs/speech.md",
                    subject="pyannote",
                ) from exc
            # A local directory (checked in __init__): pyannote reads its config.yaml, never the hub.
            pipeline = Pipeline.from_pretrained(self.checkpoint)
            if pipeline is None:
                raise CheckpointError("pyannote could not load the pipeline", subject=str(self.checkpoint))
            pipeline.to(torch.device(self.device))
            self._pipeline = pipeline
        return self._pipeline

    def diarize(self, audio: AudioSource, speech: Timeline) -> Diarization:
        import torch

        pipeline = self._load()
        samples = audio.read(0, audio.num_samples)
        rate = audio.sample_rate
        if rate != EMBED_RATE:
            import soxr

            samples = np.asarray(soxr.resample(samples, rate, EMBED_RATE), dtype=np.float32)
        waveform = torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0)
        output = pipeline({"waveform": waveform, "sample_rate": EMBED_RATE}, **self.options)
        # pyannote.audio 4 returns a DiarizeOutput, 3.x the Annotation itself
        annotation: Annotation = getattr(output, "speaker_diarization", output)
        return split_overlap(annotation)


def split_overlap(annotation: Annotation) -> Diarization:
    """Take stretches where two or more speakers are active out of every turn, as ambiguous."""
    overlap = annotation.get_overlap()
    clean = annotation.extrude(overlap) if overlap else annotation
    return relabel_by_speech(clean, overlap.support())


__all__ = [
    "Diarization",
    "Diarizer",
    "PyannoteDiarizer",
    "ResemblyzerDiarizer",
    "mel_frames",
    "relabel_by_speech",
    "speech_windows",
    "split_overlap",
]
