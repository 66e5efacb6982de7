"""The export engine's own parts: targets and names, the manifest, one failing channel among others,
burned captions. Real ffmpeg on small frames; the end-to-end run is tests/cli/test_cli_channels.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.infra.lineage.rows import ExportRow
from talkfactory.infra.media.encode import AudioInput
from talkfactory.infra.media.probe import probe
from talkfactory.models.face.reframe import ReframePlan
from talkfactory.pipeline.exports.burn import CaptionBurner
from talkfactory.pipeline.exports.captions import Cue
from talkfactory.pipeline.exports.channels import load_channels
from talkfactory.pipeline.exports.manifest import ManifestEntry, manifest_csv, manifest_entries, manifest_json
from talkfactory.pipeline.exports.split import Part
from talkfactory.pipeline.exports.targets import export_targets, sidecar_key
from talkfactory.pipeline.exports.variants import ChannelSink, EncodeChoice, SinkFanout
from tests.fixtures.speech import write_wav

TINY = """
[channels.tiny-v]
extends = "tiktok"
width = 96
height = 160

[channels.tiny-h]
extends = "youtube"
width = 160
height = 96
"""


@pytest.fixture
def registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return load_channels(path)


def test_targets_put_master_first_once_and_never_burn_it(registry) -> None:  # type: ignore[no-untyped-def]
    targets = export_targets(
        ["tiny-v", "master", "tiny-v", "tiny-h"],
        registry=registry,
        location="/exports",
        render_key="show/anna__clip003.mp4",
        burn_captions=True,
    )
    assert [t.channel for t in targets] == ["master", "tiny-v", "tiny-h"]
    master, vertical, _ = targets
    assert master.key == "show/anna__clip003.mp4" and not master.burn_captions
    assert vertical.key == "tiny-v/show/anna__clip003.mp4" and vertical.burn_captions
    assert vertical.part_key(1, 1) == vertical.key
    assert vertical.part_key(2, 3) == "tiny-v/show/anna__clip003-part2.mp4"
    assert sidecar_key(vertical.part_key(2, 3), ".srt") == "tiny-v/show/anna__clip003-part2.srt"
    assert export_targets([], registry=registry, location="/e", render_key="k.mp4") == ()
    with pytest.raises(ConfigurationError, match="tiny-q"):
        export_targets(["tiny-q"], registry=registry, location="/e", render_key="k.mp4")


def _row(i: int, uri: str, channel: str, **kw: object) -> ExportRow:
    base: dict[str, object] = dict(
        id=i,
        render_id=1,
        recording_id=1,
        source_object_id=None,
        uri=uri,
        etag=None,
        size_bytes=10,
        created_at=datetime.now(UTC),
        flow_run_id=None,
        task_run_id=None,
        code_version=None,
        channel=channel,
    )
    return ExportRow(**(base | kw))  # type: ignore[arg-type]


def test_manifest_lists_the_latest_row_per_file_relative_to_the_location() -> None:
    root = "file:///out"
    rows = [
        _row(1, f"{root}/tiny-v/show/a.mp4", "tiny-v", status="failed", error="too loud"),
        _row(2, f"{root}/show/a.mp4", "master", variant={"recording": "show.flv", "clip": 1}),
        _row(
            3,
            f"{root}/tiny-v/show/a.mp4",
            "tiny-v",
            sha256="ab" * 32,
            variant={"width": 96, "recording": "show.flv"},
        ),
    ]
    entries = manifest_entries(rows, root)
    assert [(e.channel, e.path, e.status) for e in entries] == [
        ("master", "show/a.mp4", "published"),
        ("tiny-v", "tiny-v/show/a.mp4", "published"),
    ]
    doc = json.loads(manifest_json(entries, "/out"))
    assert doc["exports"][1]["sha256"] == "ab" * 32 and doc["exports"][1]["width"] == 96
    table = list(csv.DictReader(io.StringIO(manifest_csv(entries).decode())))
    assert list(table[0]) == list(ManifestEntry.__dataclass_fields__)
    assert table[1]["path"] == "tiny-v/show/a.mp4" and table[0]["sha256"] == ""


def _native_plan(w: int, h: int, n: int, out_w: int, out_h: int) -> ReframePlan:
    rects = np.tile(np.array([[0, 0, w, h]], np.int32), (n, 1))
    return ReframePlan(out_w, out_h, "pad", rects, upscaled=False, reason="test", src_w=w, src_h=h)


def test_one_failing_channel_is_dropped_and_the_others_are_encoded(tmp_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    fps, n = 25.0, 50
    audio = write_wav(
        tmp_path / "a.wav", 0.1 * np.sin(np.linspace(0, 400, 2 * 48000)).astype(np.float32), 48000
    )
    good, bad = (registry.get("tiny-v"), registry.get("tiny-h"))
    targets = export_targets(
        ["tiny-v", "tiny-h"], registry=registry, location=str(tmp_path), render_key="s/a.mp4"
    )
    encode = EncodeChoice("libx264", 30, "ultrafast", 60)
    sinks = []
    for target in targets[1:]:
        spec = target.spec
        sinks.append(
            ChannelSink(
                target,
                plan=_native_plan(128, 72, n, spec.width or 0, spec.height or 0),
                parts=[Part(1, 0.0, 1.0), Part(2, 1.0, 2.0)],
                fps=fps,
                # The second channel's audio is gone: its encoder cannot start.
                audio=AudioInput(audio if spec is good else tmp_path / "gone.wav"),
                options={1: spec.encode_options(fps), 2: spec.encode_options(fps)},
                encode=encode,
                spool=tmp_path / "spool",
                cover_frames=[10, 30],
            )
        )
    fanout = SinkFanout(sinks, capture=[5])
    for i in range(n):
        fanout.write(i, np.full((72, 128, 3), i * 4, np.uint8))
    files = fanout.close()
    assert set(fanout.failed) == {bad.name}
    assert "gone.wav" in str(fanout.failed[bad.name])
    assert [(f.target.channel, f.part.number) for f in files] == [(good.name, 1), (good.name, 2)]
    for f in files:
        info = probe(f.path)
        assert info.video is not None and (info.video.width, info.video.height) == (96, 160)
        assert info.duration is not None and abs(info.duration - 1.0) < 0.1
        assert len(f.covers) == 1 and f.covers[0].shape == (160, 96, 3)
    assert fanout.captured()[0].shape == (72, 128, 3)
    assert not list((tmp_path / "spool").rglob(f"{bad.name}/*.mp4"))


def test_burned_captions_show_only_during_their_cue_and_leave_the_input_alone() -> None:
    burner = CaptionBurner(
        [Cue(1.0, 2.0, ("Hello there,", "\u201cfriends\u201d \u4f60\u597d"))], width=320, height=180
    )
    frame = np.zeros((180, 320, 3), np.uint8)
    assert burner.draw(frame, 0.5) is frame
    drawn = burner.draw(frame, 1.5)
    assert drawn is not frame and not frame.any()
    assert drawn[120:, :].max() == 255  # white text in the lower part
    assert not drawn[:60, :].any()
    assert burner.draw(frame, 2.0) is frame


def test_a_live_ingest_channel_is_not_a_file_export() -> None:
    with pytest.raises(ConfigurationError, match="talkfactory push --channel youtube-live"):
        export_targets(["youtube-live"], registry=load_channels(), location="/e", render_key="k.mp4")


def test_frame_energy_reads_in_blocks_and_finds_the_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    from talkfactory.models.audio import ArrayAudio
    from talkfactory.pipeline.exports import produce

    rate, fps = 16000, 25.0
    loud = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.3
    audio = ArrayAudio(
        np.concatenate([loud, np.zeros(rate, np.float32), loud]), rate
    )  # speech, pause, speech
    whole = produce.frame_energy(audio, fps, 75)
    monkeypatch.setattr(produce, "ENERGY_BLOCK_FRAMES", 7)  # blocks that end mid-second
    assert np.allclose(produce.frame_energy(audio, fps, 75), whole)
    assert whole[30:45].max() == 0.0 and whole[:25].min() > 0.2 and whole[50:].min() > 0.2
