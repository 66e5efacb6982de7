"""The main flow on Prefect's ephemeral API: good and bad inputs in one batch, all recorded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from talkfactory.flows.render_recording import output_names, render_recording
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import Avatar, Recording, Render
from talkfactory.infra.settings import get_settings
from tests.fixtures.media import MediaSet, astronaut_bgr, ffmpeg, make_template

pytestmark = pytest.mark.slow


def repo() -> LineageRepository:
    return LineageRepository.from_url(get_settings().resolved_database_url)


def by_avatar(rows: list[dict]) -> dict[str, dict]:
    return {r["avatar"]: r for r in rows}


def probe_video(path: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", path],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"][0]


def test_output_names_are_unique() -> None:
    assert output_names("/r/live.flv", ["/a/x.png", "/b/x.png", "/c/y.mp4"]) == [
        "live__x.mp4",
        "live__x-2.mp4",
        "live__y.mp4",
    ]


def test_bad_avatars_fail_alone_and_good_ones_render(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    no_face = tmp_path / "landscape.png"
    cv2.imwrite(str(no_face), np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1)))
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image\n")
    # A PNG with an alpha channel hiding behind a .jpg name.
    rgba = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2BGRA)
    rgba[:, :40, 3] = 0
    alpha_jpg = tmp_path / "alpha-portrait.jpg"
    alpha_jpg.write_bytes(cv2.imencode(".png", rgba)[1].tobytes())
    # A 29.97 fps template with odd width and height.
    odd = tmp_path / "odd.mp4"
    make_template(media.portrait, odd, size="321x241", fps="30000/1001", seconds=1.5)

    avatars = [media.portrait, no_face, not_image, alpha_jpg, odd]
    rows = by_avatar(
        render_recording(
            str(media.speech_flv), [str(a) for a in avatars], str(tmp_path / "out"), whole_track=True
        )
    )

    for name in ("astronaut", "alpha-portrait", "odd"):
        assert rows[name]["status"] == "succeeded", rows[name]
        assert Path(rows[name]["output"]).exists()
    assert rows["landscape"]["status"] == "failed" and "face" in rows["landscape"]["error"].lower()
    assert "landscape.png" in rows["landscape"]["error"]
    assert rows["notes"]["status"] == "failed" and "notes.png" in rows["notes"]["error"]

    odd_out = probe_video(rows["odd"]["output"])
    assert odd_out["width"] % 2 == 0 and odd_out["height"] % 2 == 0 and odd_out["pix_fmt"] == "yuv420p"
    assert odd_out["r_frame_rate"] == "30000/1001"

    with repo().session() as s:
        statuses = {a.name: a.status for a in s.scalars(select(Avatar))}
        renders = s.scalars(select(Render)).all()
        assert all(r.flow_run_id for r in renders), "renders link to their flow run"
    assert statuses["landscape"] == "failed" and statuses["astronaut"] == "ok"
    assert len(renders) == 3 and all(r.status == "succeeded" for r in renders)


def test_rerun_reuses_finished_renders_unless_forced(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = render_recording(str(media.speech_flv), [str(media.template)], out, whole_track=True)[0]
    mtime = Path(first["output"]).stat().st_mtime_ns
    again = render_recording(str(media.speech_flv), [str(media.template)], out, whole_track=True)[0]
    assert again["reused"] and again["output"] == first["output"]
    assert Path(first["output"]).stat().st_mtime_ns == mtime
    forced = render_recording(
        str(media.speech_flv), [str(media.template)], out, force=True, whole_track=True
    )[0]
    assert not forced["reused"] and forced["attempts"] == 2
    assert Path(first["output"]).stat().st_mtime_ns != mtime


@pytest.mark.parametrize("case", ["missing", "empty", "text", "no-audio"])
def test_bad_recordings_are_recorded_and_named(
    case: str, media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    rec = tmp_path / f"{case}.flv"
    if case == "empty":
        rec.write_bytes(b"")
    elif case == "text":
        rec.write_text("not a video, just text\n" * 10)
    elif case == "no-audio":
        ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-f",
            "flv",
            str(rec),
        )
    rows = render_recording(str(rec), [str(media.portrait)], str(tmp_path / "out"), whole_track=True)
    assert rows[0]["status"] == "unusable"  # the recording stopped the job (CLI exit 2)
    assert f"{case}.flv" in rows[0]["error"]
    expected = {"missing": "does not exist", "empty": "empty", "text": "", "no-audio": "no audio"}[case]
    assert expected in rows[0]["error"].lower()
    assert not list((tmp_path / "out").glob("*.mp4"))
    with repo().session() as s:
        row = s.scalars(select(Recording)).one()
        assert row.status == "failed" and f"{case}.flv" in (row.error or "")


def test_truncated_recording_renders_what_decodes(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    data = media.speech_flv.read_bytes()
    cut = tmp_path / "crashed.flv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    row = render_recording(str(cut), [str(media.portrait)], str(tmp_path / "out"), whole_track=True)[0]
    assert row["status"] == "succeeded", row
    assert 0 < row["duration_s"] < 0.8 * _duration(media.speech_flv)
    with repo().session() as s:
        rec = s.scalars(select(Recording)).one()
        assert rec.warnings and any("trunc" in w.lower() for w in rec.warnings)


def test_template_whose_face_leaves_the_frame(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    # The portrait slides out to the right and back: frames in the middle have no face.
    tpl = tmp_path / "walkoff.mp4"
    ffmpeg(
        "-loop", "1", "-framerate", "25", "-i", str(media.portrait), "-vf",
        "scale=256:256,pad=768:256:0:0,crop=256:256:'min(512,max(0,512*sin(PI*t/2)))':0,format=yuv420p",
        "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", str(tpl),
    )  # fmt: skip
    row = render_recording(str(media.speech_flv), [str(tpl)], str(tmp_path / "out"), whole_track=True)[0]
    assert row["status"] == "succeeded", row
    with repo().session() as s:
        av = s.scalars(select(Avatar)).one()
        assert av.face_ratio is not None and 0.1 < av.face_ratio < 0.9


def _duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return float(out)


def test_clips_of_the_main_speaker_are_rendered_and_linked(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    # Short clips so the 1.2 s pause in the fixture's speech is where the cut must fall.
    speech = {"min_clip": 2.0, "max_clip": 6.0}
    rows = render_recording(
        str(media.speech_flv), [str(media.portrait)], str(tmp_path / "out"), speech=speech
    )
    assert len(rows) >= 2 and all(r["status"] == "succeeded" for r in rows), rows
    names = sorted(Path(r["output"]).name for r in rows)
    assert names[0] == "speech__astronaut__clip001.mp4"
    with repo().session() as s:
        from talkfactory.infra.lineage.tables import Clip

        clips = s.scalars(select(Clip).order_by(Clip.start_s)).all()
        renders = s.scalars(select(Render)).all()
        assert len(clips) == len(rows) and {r.clip_id for r in renders} == {c.id for c in clips}
        assert all(c.denoiser == "dfn3" and c.denoiser_version for c in clips)
        # The pause between the two sentences (about 1.2 s, after the first sentence) separates clips.
        assert all(b.start_s >= a.end_s for a, b in zip(clips, clips[1:], strict=False))
    for r in rows:
        duration = float(probe_video(r["output"])["duration"])
        assert abs(duration - (r["clip_end_s"] - r["clip_start_s"])) < 0.1


def test_silent_recording_is_a_no_speech_result(tf_home: Path, tmp_path: Path, media: MediaSet) -> None:
    rec = tmp_path / "silence.flv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
        "-t", "4", "-c:v", "libx264", "-c:a", "aac", "-f", "flv", str(rec),
    )  # fmt: skip
    rows = render_recording(str(rec), [str(media.portrait)], str(tmp_path / "out"))
    assert [r["status"] for r in rows] == ["no speech"]
    assert "no speech" in rows[0]["error"]
    with repo().session() as s:
        from talkfactory.infra.lineage.tables import Attempt

        attempt = s.scalars(select(Attempt).where(Attempt.step == "speech")).one()
        assert attempt.error_type == "NoSpeechError"


def test_runs_publish_a_summary_table_and_render_progress(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    rows = render_recording(
        str(media.speech_flv), [str(media.portrait)], str(tmp_path / "out"), whole_track=True
    )
    with repo().session() as s:
        flow_run_id = s.scalars(select(Render)).one().flow_run_id
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        summary = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["render-summary"]))
        )
    kinds = {a.type for a in arts}
    assert {"table", "progress"} <= kinds, kinds
    progress = [a for a in arts if a.type == "progress"]
    assert all(float(a.data) == 100.0 for a in progress), [a.data for a in progress]
    table = next(a for a in summary if str(a.flow_run_id) == flow_run_id)
    assert rows[0]["output"] in str(table.data)
