"""pipeline.jobs: a render's identity, its export name, and what a job set's outcome settles to.

Pure values, no processes: these rules decide what is rendered again and what is quarantined.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from talkfactory.errors import (
    ConfigurationError,
    FFmpegError,
    InvalidMediaError,
    NoFaceError,
    ObjectNotFoundError,
    StoreAccessError,
)
from talkfactory.pipeline.jobs.model import (
    AvatarSpec,
    ClipSpec,
    Destination,
    JobResult,
    RenderJob,
    RenderOptions,
    RenderParams,
)
from talkfactory.pipeline.jobs.naming import export_key, library_label, library_labels, local_labels
from talkfactory.pipeline.jobs.settle import (
    RecordingReport,
    outcome_of,
    source_status,
    source_status_after_error,
)

CLIP = ClipSpec(
    clip_id=7, number=3, start_s=12.5, end_s=30.25, params_hash="p" * 64,
    audio16_uri="s3://work/clips/a16.wav", audio48_uri="s3://work/clips/a48.wav",
)  # fmt: skip
AVATAR = AvatarSpec(avatar_id=2, content_hash="a" * 64, uri="s3://avatars/anna.png", label="anna")


def job(**change: Any) -> RenderJob:
    base = RenderJob(
        recording_id=1,
        recording_sha256="r" * 64,
        recording_name="live/show.flv",
        clip=CLIP,
        avatar=AVATAR,
        params=RenderParams(),
        model_version="weightless-1.0.0",
        checkpoint=None,
        destination=Destination(
            "s3://exports", "live/show/anna__clip003.mp4", "s3://exports/live/show/anna__clip003.mp4"
        ),
    )
    return dataclasses.replace(base, **change)


def test_a_job_pickles_and_keeps_its_identity() -> None:
    j = job()
    back = pickle.loads(pickle.dumps(j))
    assert back == j and back.render_key() == j.render_key()


@pytest.mark.parametrize(
    "change",
    [
        {"recording_sha256": "s" * 64},
        {"avatar": dataclasses.replace(AVATAR, content_hash="b" * 64)},
        {"model_version": "weightless-1.0.1"},
        {"params": RenderParams(crf=18)},
        {"clip": dataclasses.replace(CLIP, end_s=30.5)},
        {"clip": dataclasses.replace(CLIP, params_hash="q" * 64)},
    ],
)
def test_what_decides_the_pixels_changes_both_keys(change: dict[str, Any]) -> None:
    assert job(**change).content_key() != job().content_key()
    assert job(**change).render_key() != job().render_key()


def test_the_destination_is_part_of_the_identity_but_not_of_the_content() -> None:
    elsewhere = job(
        destination=Destination("/srv/out", "live/show/anna__clip003.mp4", "file:///srv/out/x.mp4")
    )
    assert elsewhere.content_key() == job().content_key()
    assert elsewhere.render_key() != job().render_key()


def test_where_inputs_live_and_who_asked_are_not_identity() -> None:
    moved = job(
        checkpoint="s3://models/w2l.pth",
        avatar=dataclasses.replace(AVATAR, uri="/cache/anna.png", avatar_id=9, label="hosts.anna"),
        clip=dataclasses.replace(CLIP, audio16_uri="/tmp/a.wav", audio48_uri="/tmp/b.wav", clip_id=8),
        recording_id=5,
        recording_name="other-key.flv",
        force=True,
        source_object_id=4,
    )
    assert moved.render_key() == job().render_key()


def test_render_params_have_no_checkpoint_and_refuse_unknown_fields() -> None:
    assert "checkpoint" not in RenderParams.model_fields
    with pytest.raises(ValueError, match="crf_value"):
        RenderParams.model_validate({"crf_value": 18})
    with pytest.raises(ValueError):
        RenderOptions.model_validate({"video_encoder": "h265"})


def test_export_keys() -> None:
    assert export_key("live/show.flv", "anna", 3) == "live/show/anna__clip003.mp4"
    assert export_key("show.flv", "hosts.anna", None) == "show/hosts.anna.mp4"
    assert export_key("noext", "anna", 1) == "noext/anna__clip001.mp4"


def test_library_labels_keep_folders_apart() -> None:
    assert library_label("hosts/anna.png") == "hosts.anna"
    assert library_labels(["hosts/anna.png", "guests/anna.png"]) == ["hosts.anna", "guests.anna"]
    with pytest.raises(ConfigurationError, match="anna.png, anna.mp4"):
        library_labels(["anna.png", "anna.mp4"])


def test_local_labels_are_stems_unless_two_share_one() -> None:
    assert local_labels(["/a/x.png", "/b/y.mp4"]) == ["x", "y"]
    twins = local_labels(["/a/x.png", "/b/x.png"])
    assert twins[0] != twins[1] and all(t.startswith("x-") for t in twins)


def row(status: str = "succeeded", **kw: Any) -> JobResult:
    base: dict[str, Any] = {
        "render_key": "k", "recording_name": "show.flv", "avatar": "anna", "clip_number": 1,
        "clip_start_s": 0.0, "clip_end_s": 5.0, "destination": "d", "status": status,
    }  # fmt: skip
    return JobResult(**(base | kw))


def test_a_failed_render_makes_the_recording_done_with_failures() -> None:
    status, reason = outcome_of([row(), row("failed", error="no face found", avatar="x")])
    assert status == "done with failures"
    assert reason is not None and "1 of 2 renders failed" in reason and "no face found" in reason
    report = RecordingReport(recording="show.flv", status=status, reason=reason)
    assert source_status(report) == "done", "a failed avatar must not send the recording back to ingest"
    assert outcome_of([row(), row()]) == ("done", None)


@pytest.mark.parametrize(
    ("error", "attempts", "expected"),
    [
        (InvalidMediaError("not media", subject="x.flv"), 1, "quarantined"),
        (ObjectNotFoundError("gone", subject="x.flv"), 1, "quarantined"),
        (ConfigurationError("the avatars location holds no images"), 9, "failed"),
        (StoreAccessError("work store refuses writes"), 9, "failed"),
        (NoFaceError("no face", subject="a.png"), 9, "failed"),
        (FFmpegError("crashed"), 1, "failed"),
        (FFmpegError("crashed"), 3, "quarantined"),
    ],
)
def test_only_errors_about_the_recording_quarantine_it(
    error: Exception, attempts: int, expected: str
) -> None:
    assert source_status_after_error(error, attempts, max_attempts=3) == expected


def test_export_keys_fit_a_file_system_segment_by_segment() -> None:
    key = export_key("live/" + "s" * 300 + ".flv", "n" * 300, 2)
    folder, name = key.split("/")[1:]
    assert len(folder.encode()) <= 255 and len(name.encode()) <= 255 and name.endswith(".mp4")
    assert export_key("live/" + "s" * 300 + ".flv", "n" * 300, 2) == key, "the same name every time"
    assert export_key("live/x.flv", "n" * 299 + "m", 2) != key
