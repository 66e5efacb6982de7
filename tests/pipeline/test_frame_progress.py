"""A render's frame progress reaches lineage at most every ~2 s, and the last frame always does."""

from __future__ import annotations

import time
from typing import Any

from talkfactory.pipeline.progress import lineage_frame_progress


def test_progress_is_throttled_and_the_end_always_written() -> None:
    written: list[dict[str, Any]] = []
    record = lineage_frame_progress(written.append, every_s=0.2)
    for done in range(1, 100):
        record(done, 100)
    assert written == [{"progress": {"done": 1, "total": 100}}]
    time.sleep(0.25)
    record(50, 100)
    record(100, 100)
    assert [w["progress"]["done"] for w in written] == [1, 50, 100]


def test_a_failing_write_never_fails_the_render() -> None:
    def broken(_: dict[str, Any]) -> None:
        raise ConnectionError("database gone")

    lineage_frame_progress(broken)(1, 10)  # no exception
