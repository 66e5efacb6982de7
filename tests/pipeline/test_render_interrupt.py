"""A stop request (Ctrl-C) ends a render at the next frame: ffmpeg gone, no temporary file, no output."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from talkfactory.errors import InterruptedRunError, PermanentError
from talkfactory.models.lipsync.weightless import WeightlessBackend
from talkfactory.pipeline import interrupt
from talkfactory.pipeline.avatar import prepare_avatar
from talkfactory.pipeline.recording import prepare_recording
from talkfactory.pipeline.render import render_avatar
from tests.cli.helpers import alive, named_children_of
from tests.fixtures.media import MediaSet


@pytest.fixture(autouse=True)
def _no_stop_left_over() -> Iterator[None]:
    interrupt.reset()
    yield
    interrupt.reset()


def test_a_stop_request_ends_the_render_and_cleans_up(media: MediaSet, tmp_path: Path) -> None:
    rec = prepare_recording(media.speech_flv, tmp_path / "work")
    av = prepare_avatar(media.template, tmp_path / "cache")
    out = tmp_path / "out" / "x.mp4"
    stale = out.parent / ".x.mp4.999999999-deadbeef.partial.mp4"  # a dead run's leftover
    out.parent.mkdir()
    stale.write_bytes(b"half")
    helpers: list[int] = []

    def progress(done: int, total: int) -> None:
        if done >= 50:
            helpers.extend(named_children_of(os.getpid(), "ffmpeg"))  # the decoding and encoding ffmpeg
            interrupt.request_stop("interrupted (test)")

    with pytest.raises(InterruptedRunError, match="interrupted") as caught:
        render_avatar(rec.speech(), av, WeightlessBackend(), out, progress=progress)
    assert isinstance(caught.value, PermanentError)  # never retried
    assert helpers and not any(alive(pid) for pid in helpers)
    assert not out.exists() and not list(out.parent.iterdir())  # no output, no temp file, stale one swept
