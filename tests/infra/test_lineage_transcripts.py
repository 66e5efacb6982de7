"""Transcripts in lineage over a migrated SQLite file: stored once per (audio, model), read back whole."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import ClipRow, LineageRepository, Provenance
from talkfactory.infra.lineage.transcripts import TranscriptQueries, transcript_audio_key
from talkfactory.models.speech.asr import Word, words_as_rows, words_from_rows

PROV = Provenance(flow_run_id="flow-1", task_run_id="task-1", code_version="0.1.0")
MODEL = "faster-whisper-1.2.1:tiny.en:0123456789abcdef"
WORDS = (
    Word(0.5, 0.9, "Welcome"),
    Word(0.9, 1.2, "back,"),
    Word(1.3, 1.8, "everybody."),
    Word(2.6, 2.9, "你好"),
)


class Repo(TranscriptQueries):
    """The mixin on its own, as LineageRepository will carry it."""


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    return url


def _clip(url: str) -> int:
    lineage = LineageRepository.from_url(url)
    rec = lineage.register_recording(
        uri="/x/rec.flv", sha256="a" * 64, size_bytes=10, duration_s=30.0, probe={}, warnings=[], prov=PROV
    )
    clip = ClipRow(start_s=1.0, end_s=4.0, speaker="spk0", loudness_lufs=-16.0, snr_db=30.0,
                   audio_uri="/c/a.wav", audio48_uri="/c/a48.wav")  # fmt: skip
    return lineage.register_clips(
        recording_id=rec, params_hash="p", params={}, denoiser="none", denoiser_version="0",
        clips=[clip], prov=PROV,
    )[0]  # fmt: skip


def _save(
    repo: TranscriptQueries, *, clip_id: int | None = None, model: str = MODEL, key: str = "k" * 64
) -> int:
    return repo.save_transcript(
        audio_key=key, model=model, clip_id=clip_id, language="en", words=words_as_rows(WORDS),
        text="Welcome back, everybody. 你好", wall_s=1.25,
    )  # fmt: skip


def test_a_saved_transcript_reads_back_with_its_words_in_order(url: str) -> None:
    repo = Repo.from_url(url)
    clip_id = _clip(url)
    assert repo.get_transcript("k" * 64, MODEL) is None
    tid = _save(repo, clip_id=clip_id)
    row = repo.get_transcript("k" * 64, MODEL)
    assert row is not None and row.id == tid
    assert words_from_rows(row.words) == WORDS
    assert (row.clip_id, row.language, row.wall_s) == (clip_id, "en", 1.25)
    assert row.text.endswith("你好")
    assert repo.get_transcript("k" * 64, "another-model") is None


def test_saving_again_is_idempotent_per_audio_and_model(url: str) -> None:
    repo = Repo.from_url(url)
    first = _save(repo)
    assert _save(repo) == first
    # A second save only fills in the clip link the first lacked; the words stay the first ones.
    clip_id = _clip(url)
    assert _save(repo, clip_id=clip_id) == first
    row = repo.get_transcript("k" * 64, MODEL)
    assert row is not None and row.clip_id == clip_id
    assert _save(repo, model="faster-whisper-1.2.1:large-v3:fedcba9876543210") != first
    assert _save(repo, key="j" * 64) != first
    with repo.session() as s:
        count = s.execute(text("select count(*) from transcripts")).scalar_one()
    assert count == 3


def test_keys_that_do_not_fit_the_columns_are_refused(url: str) -> None:
    repo = Repo.from_url(url)
    with pytest.raises(ValueError, match="audio_key"):
        _save(repo, key="k" * 65)
    with pytest.raises(ValueError, match="model"):
        _save(repo, model="m" * 129)


def test_audio_key_depends_on_content_span_and_parameters_only() -> None:
    key = transcript_audio_key("a" * 64, 1.0, 4.0, {"vad": 0.5, "denoise": "df"})
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == transcript_audio_key("a" * 64, 1.0000001, 4.0, {"denoise": "df", "vad": 0.5})
    assert key != transcript_audio_key("b" * 64, 1.0, 4.0, {"vad": 0.5, "denoise": "df"})
    assert key != transcript_audio_key("a" * 64, 1.0, 4.5, {"vad": 0.5, "denoise": "df"})
    assert key != transcript_audio_key("a" * 64, 1.0, 4.0, {"vad": 0.6, "denoise": "df"})


def test_workers_saving_the_same_transcript_at_once_get_one_row(url: str) -> None:
    repo = Repo.from_url(url)
    barrier = threading.Barrier(4)

    def save() -> int:
        barrier.wait()
        return _save(repo)

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: save(), range(4)))
    assert len(set(ids)) == 1
    with repo.session() as s:
        assert s.execute(text("select count(*) from transcripts")).scalar_one() == 1


def test_the_mixin_sits_beside_the_other_lineage_queries(url: str) -> None:
    assert issubclass(LineageRepository, TranscriptQueries)
    full = LineageRepository.from_url(url)
    clip_id = _clip(url)
    tid = _save(full, clip_id=clip_id)
    got = full.get_transcript("k" * 64, MODEL)
    assert got is not None and got.id == tid and got.clip_id == clip_id


def test_the_recording_chain_shows_what_each_clip_says(url: str) -> None:
    from talkfactory.infra.lineage.chain import recording_chain
    from tests.infra.lineage_seed import Seed

    repo = LineageRepository.from_url(url)
    rec, clips = Seed(repo).recording("show", spans=[(0.0, 4.0), (5.0, 9.0)])
    _save(repo, clip_id=clips[1])
    chain = recording_chain(repo, rec)
    assert chain is not None
    assert list(chain.transcripts) == [clips[1]]
    said = {c["id"]: c["transcript"] for c in chain.to_dict()["clips"]}
    assert said[clips[0]] is None and said[clips[1]] == chain.transcripts[clips[1]]
