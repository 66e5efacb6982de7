"""What a render's sync check means for its status and its lineage stats."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkfactory.errors import PermanentError, SyncCheckError
from talkfactory.pipeline.qc import SyncReport
from talkfactory.pipeline.render import RenderResult, review_status


def report(ok: bool, offset_ms: float = -9.0) -> SyncReport:
    return SyncReport(
        video="/out/a.mp4", offset_ms=offset_ms, correlation=0.93, correlation_at_zero=0.92, ok=ok,
        reason=None if ok else "audio 200 ms late, more than one frame (40 ms)", frames_used=100,
        frames_total=1500, windows=1, fps=25.0, max_offset_ms=40.0, min_correlation=0.6, cost_s=0.9,
    )  # fmt: skip


def result(
    qc: SyncReport | None = None, qc_error: str | None = None, liveliness: str = "off"
) -> RenderResult:
    return RenderResult(
        output=Path("/out/a.mp4"), frames=1500, fps=25.0, duration_s=60.0, wall_s=9.0, encoder="libx264",
        stage_s={"render": 7.0, "qc": 0.9}, liveliness=liveliness, qc=qc, qc_error=qc_error,
    )  # fmt: skip


def test_a_passed_check_succeeds_and_its_values_go_into_the_stats() -> None:
    r = result(report(True), liveliness="subtle")
    assert review_status(r, strict=True) == "succeeded"
    stats = r.stats()
    assert stats["qc"]["offset_ms"] == -9.0 and stats["qc"]["ok"] is True
    assert stats["needs_review"] is False
    assert stats["liveliness"] == "subtle" and stats["liveliness_version"].startswith("live-")


def test_a_failed_check_is_published_for_review_unless_strict() -> None:
    r = result(report(False, offset_ms=200.0))
    assert r.needs_review and r.stats()["needs_review"] is True
    assert review_status(r, strict=False) == "needs_review"
    with pytest.raises(SyncCheckError, match="200 ms late") as err:
        review_status(r, strict=True)
    assert isinstance(err.value, PermanentError) and err.value.subject == "/out/a.mp4"


def test_a_check_that_could_not_run_needs_review() -> None:
    r = result(qc_error="ffmpeg failed")
    assert r.stats()["qc_error"] == "ffmpeg failed" and r.stats()["needs_review"] is True
    assert review_status(r, strict=False) == "needs_review"
    with pytest.raises(SyncCheckError, match="could not run"):
        review_status(r, strict=True)


def test_without_a_check_nothing_changes() -> None:
    r = result()
    assert review_status(r, strict=True) == "succeeded"
    assert "qc" not in r.stats() and "needs_review" not in r.stats()
    assert r.stats()["liveliness"] == "off" and "liveliness_version" not in r.stats()
