"""What a recording's job set came to, and what that means for the ingest object it came from.

One policy for every runner:
* a render whose own input is bad (``is_bad_input``) fails alone, recorded and never retried; any
  other permanent error (a store refusing writes, a checkpoint that does not load) is the setup's,
  and stops the job once the renders already running have ended;
* only an error about the recording itself (not media, no audio, gone from the bucket) quarantines
  its ingest object; a configuration error never does (it stops the job, and the object is taken
  again once the setup is fixed);
* a failed render fails alone: its recording is ``done with failures`` (its ingest object is done,
  so the next scan does not fetch it again; ``nightly-reprocess`` retries what can succeed);
* a transient error that outlasted its retries leaves the object ``failed``, taken again by a later
  scan until ``max_attempts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from talkfactory.errors import (
    ConfigurationError,
    InvalidMediaError,
    MediaNotFoundError,
    NoFaceError,
    ObjectNotFoundError,
    PermanentError,
    SyncCheckError,
)
from talkfactory.infra.lineage.repository import SourceStatus
from talkfactory.pipeline.jobs.model import JobResult

RecordingStatus = Literal["done", "done with failures", "no speech", "unusable", "interrupted"]


@dataclass(frozen=True)
class RecordingReport:
    """One recording's outcome: the rows of its renders and what it all came to."""

    recording: str
    """How users know it: its ingest key or file name."""
    status: RecordingStatus
    recording_id: int | None = None
    reason: str | None = None
    rows: list[JobResult] = field(default_factory=list)
    clips: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(r.ok for r in self.rows)

    def summary(self) -> str:
        """``3 of 4 renders succeeded`` / the reason; the run's state message and table title."""
        if self.status in ("no speech", "unusable"):
            return f"{self.status}: {self.reason}"
        failed = len(self.rows) - self.succeeded
        text = f"{self.succeeded} of {len(self.rows)} renders succeeded"
        return text + (f", {failed} failed" if failed else "")


def run_message(report: RecordingReport) -> str:
    """The flow run's state message: ``2 of 12 renders failed`` when some did, else the summary.

    The run ends Completed either way (the others are published); this is what tells them apart in
    the Prefect UI's run list."""
    failed = sum(not r.ok for r in report.rows)
    if failed:
        return f"{failed} of {len(report.rows)} renders failed"
    return report.summary()


def outcome_of(rows: list[JobResult]) -> tuple[RecordingStatus, str | None]:
    """The recording's status from its rows, and a reason naming each failed render."""
    if any(r.status == "interrupted" for r in rows):
        return "interrupted", "interrupted before every render finished"
    failed = [r for r in rows if not r.ok]
    if not failed:
        return "done", None
    reason = "; ".join(f"{r.avatar} clip {r.clip_number or 'whole'}: {r.error}" for r in failed)
    return "done with failures", f"{len(failed)} of {len(rows)} renders failed: {reason}"


def is_bad_input(exc: BaseException) -> bool:
    """An error about one job's own inputs (an avatar with no face, an unreadable clip): that job
    fails alone and is never retried. Every other permanent error is about the setup."""
    return isinstance(exc, InvalidMediaError | MediaNotFoundError | NoFaceError | SyncCheckError)


def is_about_the_recording(exc: BaseException) -> bool:
    """An error no later attempt at the same recording can fix."""
    if isinstance(exc, ConfigurationError):
        return False
    return isinstance(exc, InvalidMediaError | MediaNotFoundError | ObjectNotFoundError)


def source_status(report: RecordingReport) -> SourceStatus:
    return {
        "done": "done",
        "done with failures": "done",
        "no speech": "done",
        "unusable": "quarantined",
        "interrupted": "failed",
    }[report.status]  # type: ignore[return-value]


def source_status_after_error(exc: BaseException, attempts: int, max_attempts: int) -> SourceStatus:
    """An error that stopped the job: retried by a later scan, unless it never can succeed."""
    if is_about_the_recording(exc):
        return "quarantined"
    if isinstance(exc, ConfigurationError | PermanentError):
        # The setup (no avatars, a work store refusing writes): never buried, however often tried.
        return "failed"
    return "quarantined" if attempts >= max_attempts else "failed"
