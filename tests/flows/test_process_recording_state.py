"""A recording with a failed render: its run ends Completed saying how many failed; a direct call
still returns the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkfactory.flows.process_recording import process_recording
from talkfactory.pipeline.jobs.model import RenderOptions
from talkfactory.pipeline.jobs.settle import RecordingReport
from tests.fixtures.media import MediaSet

pytestmark = pytest.mark.slow


def test_failed_render_ends_completed_with_a_message(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not an image\n")
    kwargs = {
        "recording": str(media.speech_flv),
        "avatars": [str(media.portrait), str(notes)],
        "exports_url": str(tmp_path / "out"),
        "render": RenderOptions(whole_track=True),
    }
    state = process_recording(**kwargs, return_state=True)  # type: ignore[arg-type]
    assert state.is_completed()
    assert state.message == "1 of 2 renders failed"
    report = state.result()
    assert isinstance(report, RecordingReport) and report.status == "done with failures"
    again = process_recording(**kwargs)  # type: ignore[arg-type]
    assert isinstance(again, RecordingReport) and again.status == "done with failures"
    assert [r.reused for r in again.rows if r.ok] == ["same"]
