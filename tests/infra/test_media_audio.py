"""Audio extraction, file-backed random access and streamed chunks."""

from __future__ import annotations

import os
import subprocess
import tracemalloc

import numpy as np
import pytest

from talkfactory.errors import InvalidMediaError, MediaNotFoundError, NoAudioStreamError
from talkfactory.infra.media.audio import FileAudio, extract_audio, iter_audio_chunks, wav_data_layout
from talkfactory.infra.media.probe import probe
from talkfactory.models.audio import AudioSource, frame_count
from tests.fixtures.media_io import children_of, ffmpeg, media_files_fixture  # noqa: F401

RATE = 16000


def test_extract_audio_sample_count_matches_duration(media_files, tmp_path):
    dst = tmp_path / "a.raw"
    result = extract_audio(media_files.flv, dst, sample_rate=RATE)
    info = probe(media_files.flv)
    assert result.path == str(dst) and dst.stat().st_size == 2 * result.num_samples
    assert result.sample_rate == RATE and result.channels == 1
    # Within one video frame (25 fps) of the container's duration.
    assert info.duration is not None
    assert abs(result.duration - info.duration) <= 1 / 25
    assert not result.truncated and result.warnings == []
    assert result.start_offset == pytest.approx(info.audio_offset)
    samples = np.fromfile(dst, dtype="<i2").astype(np.float32) / 32768
    # The 440 Hz tone really is there: the spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(samples[RATE // 2 : RATE // 2 + RATE]))
    assert abs(np.argmax(spectrum) - 440) <= 2


def test_extract_audio_to_wav_with_start_and_duration(media_files, tmp_path):
    dst = tmp_path / "part.wav"
    result = extract_audio(media_files.flv, dst, sample_rate=RATE, start=1.0, duration=1.5)
    assert abs(result.num_samples - 1.5 * RATE) <= RATE / 25
    layout = wav_data_layout(dst)
    assert layout is not None and layout[2] == RATE and layout[3] == 1
    assert layout[1] == 2 * result.num_samples
    assert not result.truncated


def test_extract_stereo(media_files, tmp_path):
    result = extract_audio(media_files.audio_only, tmp_path / "s.raw", sample_rate=8000, channels=2)
    assert result.channels == 2
    assert os.path.getsize(result.path) == 4 * result.num_samples
    assert abs(result.duration - 2.0) <= 0.05


def test_timestamp_gap_stays_a_gap(tmp_path):
    # Audio from 0-1 s, then (a stream hiccup) nothing until 2 s, then 2-3 s. Plain decoding would butt
    # the pieces together and everything after the hiccup would play a second early.
    src = tmp_path / "gap.flv"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=2",
        "-af", "asetpts='if(gte(T,1),PTS+1/TB,PTS)'", "-c:a", "aac", "-f", "flv", str(src),
    )  # fmt: skip
    result = extract_audio(src, tmp_path / "gap.raw", sample_rate=RATE)
    assert 3.0 <= result.duration < 3.2  # plus AAC priming and padding (64 ms + a frame at 16 kHz)
    level = np.abs(np.fromfile(result.path, dtype="<i2").astype(float))
    assert level[int(1.2 * RATE) : int(1.8 * RATE)].max() == 0  # the gap is silence
    assert level[int(2.2 * RATE) : int(2.8 * RATE)].mean() > 1000  # the tone resumes at 2 s


def test_truncated_flv_decodes_what_it_can(media_files, tmp_path):
    result = extract_audio(media_files.truncated_flv, tmp_path / "t.raw", sample_rate=RATE)
    assert result.truncated
    assert 1.0 < result.duration < 2.7
    assert any("truncated" in w and "claims" in w and f"{result.duration:.2f}" in w for w in result.warnings)


def test_no_audio_stream_names_the_file(media_files, tmp_path):
    dst = tmp_path / "x.raw"
    with pytest.raises(NoAudioStreamError) as info:
        extract_audio(media_files.no_audio_flv, dst)
    assert info.value.subject == str(media_files.no_audio_flv)
    assert str(media_files.no_audio_flv) in str(info.value)
    assert not dst.exists()


def test_extract_rejects_unusable_inputs(media_files, tmp_path):
    with pytest.raises(InvalidMediaError, match="0 bytes"):
        extract_audio(media_files.empty_flv, tmp_path / "e.raw")
    with pytest.raises(InvalidMediaError, match="text"):
        extract_audio(media_files.text_flv, tmp_path / "t.raw")
    with pytest.raises(MediaNotFoundError):
        extract_audio(tmp_path / "missing.flv", tmp_path / "m.raw")
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".raw", ".partial")]


def test_file_audio_reads_match_the_extracted_samples(media_files, tmp_path):
    result = extract_audio(media_files.flv, tmp_path / "a.raw", sample_rate=RATE)
    everything = np.fromfile(result.path, dtype="<i2").astype(np.float32) / 32768
    audio = FileAudio(result.path, RATE)
    assert audio.sample_rate == RATE and audio.num_samples == result.num_samples
    np.testing.assert_array_equal(audio.read(1000, 5000), everything[1000:5000])
    edge = audio.read(audio.num_samples - 10, audio.num_samples + 20)
    np.testing.assert_array_equal(edge[:10], everything[-10:])
    assert edge.dtype == np.float32 and edge.shape == (30,) and not edge[10:].any()
    before = audio.read(-5, 5)
    assert not before[:5].any()
    np.testing.assert_array_equal(before[5:], everything[:5])
    assert audio.read(10**9, 10**9 + 3).tolist() == [0.0, 0.0, 0.0]
    assert audio.read(5, 5).shape == (0,)


def test_file_audio_reads_wav_and_satisfies_the_audio_source_protocol(media_files, tmp_path):
    raw = extract_audio(media_files.flv, tmp_path / "a.raw", sample_rate=RATE)
    wav = extract_audio(media_files.flv, tmp_path / "a.wav", sample_rate=RATE)
    from_wav = FileAudio(wav.path)
    source: AudioSource = from_wav
    assert source.sample_rate == RATE and source.num_samples == raw.num_samples
    np.testing.assert_array_equal(from_wav.read(0, 2000), FileAudio(raw.path, RATE).read(0, 2000))
    assert frame_count(source, 25) == round(raw.num_samples / RATE * 25)
    with pytest.raises(InvalidMediaError):
        FileAudio(wav.path, 44100)


def test_file_audio_memory_stays_flat_on_a_long_file(tmp_path):
    path = tmp_path / "long.raw"
    # 10 minutes at 16 kHz (19 MB), written in pieces.
    with open(path, "wb") as f:
        for minute in range(10):
            f.write((np.full(60 * RATE, minute * 100, dtype="<i2")).tobytes())
    audio = FileAudio(path, RATE)
    assert audio.num_samples == 10 * 60 * RATE
    tracemalloc.start()
    try:
        for minute in range(10):
            window = audio.read(minute * 60 * RATE + 7, minute * 60 * RATE + 7 + 640)
            assert window[0] == pytest.approx(minute * 100 / 32768)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # a window, not the 19 MB file


def test_audio_chunks_equal_the_extracted_file(media_files, tmp_path):
    result = extract_audio(media_files.flv, tmp_path / "a.raw", sample_rate=RATE)
    chunks = list(iter_audio_chunks(media_files.flv, sample_rate=RATE, chunk_seconds=0.5))
    assert all(c.shape == (RATE // 2,) and c.dtype == np.float32 for c in chunks[:-1])
    assert 0 < chunks[-1].shape[0] <= RATE // 2
    joined = np.concatenate(chunks)
    np.testing.assert_array_equal(joined, FileAudio(result.path, RATE).read(0, result.num_samples))


def test_audio_chunks_stereo_shape_and_window(media_files):
    chunks = list(
        iter_audio_chunks(
            media_files.audio_only, sample_rate=8000, channels=2, chunk_seconds=0.25, start=0.5, duration=1.0
        )
    )
    assert all(c.shape == (2000, 2) for c in chunks[:-1])
    assert abs(sum(c.shape[0] for c in chunks) - 8000) <= 8000 / 25


def test_audio_chunks_stop_early_without_leaving_ffmpeg_running(media_files):
    gen = iter_audio_chunks(media_files.flv, sample_rate=RATE, chunk_seconds=0.1)
    first = next(gen)
    assert first.shape == (1600,)
    assert _ffmpeg_children()
    gen.close()
    assert not _ffmpeg_children()


def _ffmpeg_children() -> list[int]:
    found = []
    for pid in children_of(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if "ffmpeg" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def test_extract_creates_the_destination_folder(media_files, tmp_path):
    result = extract_audio(
        media_files.flv, tmp_path / "new" / "dir" / "a.raw", sample_rate=8000, duration=0.5
    )
    assert os.path.getsize(result.path) == 2 * result.num_samples > 0


def test_audio_chunks_without_audio_stream(media_files):
    with pytest.raises(NoAudioStreamError):
        list(iter_audio_chunks(media_files.no_audio_flv, sample_rate=RATE))


def test_video_outlasting_audio_is_not_called_truncated(tmp_path):
    # -shortest style overshoot: the video runs 0.8 s past the audio, and FLV only knows the longer one.
    flv = tmp_path / "overshoot.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3.8",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:v", "libx264", "-c:a", "aac", "-f", "flv",
         str(flv)],
        check=True,
    )  # fmt: skip
    result = extract_audio(flv, tmp_path / "o.raw", sample_rate=RATE)
    assert not result.truncated, result.warnings
    assert 2.9 < result.duration < 3.2
