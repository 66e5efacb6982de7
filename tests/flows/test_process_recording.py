"""The one per-recording flow on Prefect's ephemeral API: good and bad inputs in one batch, all recorded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from sqlalchemy import select

from talkfactory.flows.process_recording import process_recording
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import RENDER_DONE, Avatar, Recording, Render
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.jobs.model import JobResult, RenderOptions
from talkfactory.pipeline.jobs.settle import RecordingReport
from talkfactory.pipeline.speech import SpeechParams
from tests.fixtures.media import MediaSet, astronaut_bgr, ffmpeg, make_template

pytestmark = pytest.mark.slow


def repo() -> LineageRepository:
    return LineageRepository.from_url(get_settings().resolved_database_url)


def by_avatar(rows: list[JobResult]) -> dict[str, JobResult]:
    return {r.avatar: r for r in rows}


def run(recording: str, avatars: list[str], out: str, **render: object) -> RecordingReport:
    speech = render.pop("speech", None)
    return process_recording(
        recording=recording,
        avatars=avatars,
        exports_url=out,
        render=RenderOptions(**render),  # type: ignore[arg-type]
        speech=speech,  # type: ignore[arg-type]
    )


def path_of(uri: str | None) -> Path:
    assert uri and uri.startswith("file://"), uri
    return Path(unquote(uri.removeprefix("file://")))


def probe_video(path: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", path],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"][0]


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
    report = run(str(media.speech_flv), [str(a) for a in avatars], str(tmp_path / "out"), whole_track=True)
    rows = by_avatar(report.rows)

    assert report.status == "done with failures" and "2 of 5 renders failed" in (report.reason or "")
    for name in ("astronaut", "alpha-portrait", "odd"):
        assert rows[name].ok, rows[name]
        assert path_of(rows[name].output).exists()
    assert rows["landscape"].status == "failed" and "face" in (rows["landscape"].error or "").lower()
    assert "landscape.png" in (rows["landscape"].error or "") and rows["landscape"].bad_input
    assert rows["notes"].status == "failed" and "notes.png" in (rows["notes"].error or "")

    odd_out = probe_video(str(path_of(rows["odd"].output)))
    assert odd_out["width"] % 2 == 0 and odd_out["height"] % 2 == 0 and odd_out["pix_fmt"] == "yuv420p"
    assert odd_out["r_frame_rate"] == "30000/1001"

    with repo().session() as s:
        statuses = {a.name: a.status for a in s.scalars(select(Avatar))}
        renders = s.scalars(select(Render)).all()
        assert all(r.flow_run_id for r in renders), "renders link to their flow run"
    assert statuses["landscape"] == "failed" and statuses["astronaut"] == "ok"
    assert len(renders) == 3 and all(r.status in RENDER_DONE for r in renders)


def test_rerun_reuses_finished_renders_unless_forced(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = run(str(media.speech_flv), [str(media.template)], out, whole_track=True).rows[0]
    mtime = path_of(first.output).stat().st_mtime_ns
    again = run(str(media.speech_flv), [str(media.template)], out, whole_track=True).rows[0]
    assert again.reused == "same" and again.output == first.output
    assert path_of(first.output).stat().st_mtime_ns == mtime
    forced = run(str(media.speech_flv), [str(media.template)], out, force=True, whole_track=True).rows[0]
    assert not forced.reused and forced.attempts == 2
    assert path_of(first.output).stat().st_mtime_ns != mtime


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
    report = run(str(rec), [str(media.portrait)], str(tmp_path / "out"), whole_track=True)
    assert report.status == "unusable" and not report.rows
    assert f"{case}.flv" in (report.reason or "")
    expected = {"missing": "does not exist", "empty": "empty", "text": "", "no-audio": "no audio"}[case]
    assert expected in (report.reason or "").lower()
    assert not list((tmp_path / "out").rglob("*.mp4"))
    with repo().session() as s:
        row = s.scalars(select(Recording)).one()
        assert row.status == "failed" and f"{case}.flv" in (row.error or "")


def test_truncated_recording_renders_what_decodes(media: MediaSet, tf_home: Path, tmp_path: Path) -> None:
    data = media.speech_flv.read_bytes()
    cut = tmp_path / "crashed.flv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    report = run(str(cut), [str(media.portrait)], str(tmp_path / "out"), whole_track=True)
    row = report.rows[0]
    assert row.ok, row
    assert row.duration_s is not None and 0 < row.duration_s < 0.8 * _duration(media.speech_flv)
    assert any("trunc" in w.lower() for w in report.warnings)
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
    row = run(str(media.speech_flv), [str(tpl)], str(tmp_path / "out"), whole_track=True).rows[0]
    assert row.ok, row
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
    speech = SpeechParams(min_clip=2.0, max_clip=6.0)
    rows = run(str(media.speech_flv), [str(media.portrait)], str(tmp_path / "out"), speech=speech).rows
    assert len(rows) >= 2 and all(r.ok for r in rows), rows
    names = sorted(path_of(r.output).relative_to(tmp_path / "out").as_posix() for r in rows)
    assert names[0] == "speech/astronaut__clip001.mp4"
    with repo().session() as s:
        from talkfactory.infra.lineage.tables import Clip

        clips = s.scalars(select(Clip).order_by(Clip.start_s)).all()
        renders = s.scalars(select(Render)).all()
        assert len(clips) == len(rows) and {r.clip_id for r in renders} == {c.id for c in clips}
        assert all(c.denoiser == "dfn3" and c.denoiser_version for c in clips)
        # The pause between the two sentences (about 1.2 s, after the first sentence) separates clips.
        assert all(b.start_s >= a.end_s for a, b in zip(clips, clips[1:], strict=False))
    for r in rows:
        assert r.clip_end_s is not None
        duration = float(probe_video(str(path_of(r.output)))["duration"])
        assert abs(duration - (r.clip_end_s - r.clip_start_s)) < 0.1


def test_silent_recording_is_a_no_speech_result(tf_home: Path, tmp_path: Path, media: MediaSet) -> None:
    rec = tmp_path / "silence.flv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
        "-t", "4", "-c:v", "libx264", "-c:a", "aac", "-f", "flv", str(rec),
    )  # fmt: skip
    report = run(str(rec), [str(media.portrait)], str(tmp_path / "out"))
    assert report.status == "no speech" and not report.rows
    assert "no speech" in (report.reason or "")
    with repo().session() as s:
        from talkfactory.infra.lineage.tables import Attempt

        attempt = s.scalars(select(Attempt).where(Attempt.step == "speech")).one()
        assert attempt.error_type == "NoSpeechError"


def test_runs_publish_a_summary_table_and_render_progress(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    rows = run(str(media.speech_flv), [str(media.portrait)], str(tmp_path / "out"), whole_track=True).rows
    with repo().session() as s:
        flow_run_id = s.scalars(select(Render)).one().flow_run_id
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        summary = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="renders-speech-flv%"))
        )
    kinds = {a.type for a in arts}
    assert {"table", "progress"} <= kinds, kinds
    progress = [a for a in arts if a.type == "progress"]
    assert all(float(a.data) == 100.0 for a in progress), [a.data for a in progress]
    table = next(a for a in summary if str(a.flow_run_id) == flow_run_id)
    assert str(rows[0].output) in str(table.data)


# -- one job definition: identity, reuse, settlement (issue: one render job) ----------------------------


def source_object(key: str) -> int:
    from talkfactory.infra.lineage.db import ensure_schema
    from talkfactory.infra.lineage.repository import Provenance

    ensure_schema(get_settings().resolved_database_url)
    state, _ = repo().register_source_object(
        store_url="file:///ingest/", bucket="file", key=key, etag="e1", size_bytes=1,
        prov=Provenance(), status="processing",
    )  # fmt: skip
    return state.id


def source_status(source_id: int) -> str:
    row = repo().find_source_object(str(source_id))
    assert row is not None
    return row.status


@pytest.mark.parametrize("setup", ["empty avatars location", "work store refuses writes"])
def test_a_setup_error_stops_the_job_and_quarantines_nothing(
    setup: str, media: MediaSet, tf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from talkfactory.errors import PermanentError

    source_id = source_object("live/show.flv")
    avatars: list[str] = [str(media.portrait)]
    executor = "local"
    if setup == "empty avatars location":
        empty = tmp_path / "avatars"
        empty.mkdir()
        monkeypatch.setenv("TALKFACTORY_AVATARS_URL", str(empty))
        avatars = []
    else:
        blocker = tmp_path / "work-store"
        blocker.write_text("a file where the work store folder should be")
        monkeypatch.setenv("TALKFACTORY_WORK_URL", str(blocker))
        # A remote executor reads clip audio from the work store; sharing it fails before any render.
        executor = "ray"
    get_settings.cache_clear()
    with pytest.raises((PermanentError, OSError)):
        process_recording(
            str(media.speech_flv), avatars, str(tmp_path / "out"),
            source_object_id=source_id, executor=executor,  # type: ignore[arg-type]
        )  # fmt: skip
    assert source_status(source_id) == "failed", "a setup problem must never bury the recording"


def test_one_faceless_avatar_leaves_the_recording_done_with_failures(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    no_face = tmp_path / "landscape.png"
    cv2.imwrite(str(no_face), np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1)))
    source_id = source_object("live/show.flv")
    report = process_recording(
        str(media.speech_flv),
        [str(media.portrait), str(no_face)],
        str(tmp_path / "out"),
        source_key="live/show.flv",
        source_object_id=source_id,
        render=RenderOptions(whole_track=True),
    )
    assert report.status == "done with failures" and report.succeeded == 1
    assert source_status(source_id) == "done"
    row = repo().find_source_object(str(source_id))
    assert row is not None and "landscape" in (row.error or "")


def test_the_same_render_in_two_folders_is_two_renders_and_the_second_is_a_copy(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    first = run(str(media.speech_flv), [str(media.portrait)], str(tmp_path / "a"), whole_track=True).rows[0]
    # The second folder cannot take the file: its render fails there, and only there.
    blocked = tmp_path / "b"
    blocked.mkdir()
    (blocked / "speech").write_text("a file where the recording's folder should be")
    failed = run(str(media.speech_flv), [str(media.portrait)], str(blocked), whole_track=True).rows[0]
    assert failed.status == "failed" and failed.render_id != first.render_id
    with repo().session() as s:
        status = {r.id: r.status for r in s.scalars(select(Render))}
    assert status[first.render_id] == "succeeded", "a failure elsewhere never touches this render's row"
    found = repo().find_render_by_output(str(path_of(first.output)))
    assert found is not None and found.id == first.render_id

    third = run(str(media.speech_flv), [str(media.portrait)], str(tmp_path / "c"), whole_track=True).rows[0]
    assert third.ok and third.reused == "copied" and third.render_id != first.render_id
    assert path_of(third.output).read_bytes() == path_of(first.output).read_bytes()


def test_the_same_recording_under_another_name_is_copied_not_rendered(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    first = run(str(media.speech_flv), [str(media.portrait)], out, whole_track=True).rows[0]
    again = tmp_path / "uploaded-again.flv"
    again.write_bytes(media.speech_flv.read_bytes())
    second = run(str(again), [str(media.portrait)], out, whole_track=True).rows[0]
    assert second.reused == "copied" and path_of(second.output).name == "astronaut.mp4"
    assert path_of(second.output).parent.name == "uploaded-again"
    assert path_of(second.output).read_bytes() == path_of(first.output).read_bytes()


def test_two_library_avatars_with_one_stem_give_two_exports(
    media: MediaSet, tf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "library"
    (lib / "hosts").mkdir(parents=True)
    (lib / "guests").mkdir()
    (lib / "hosts" / "anna.png").write_bytes(media.portrait.read_bytes())
    flipped = cv2.flip(cv2.imread(str(media.portrait)), 1)
    cv2.imwrite(str(lib / "guests" / "anna.png"), flipped)
    monkeypatch.setenv("TALKFACTORY_AVATARS_URL", str(lib))
    get_settings.cache_clear()
    report = run(str(media.speech_flv), [], str(tmp_path / "out"), whole_track=True)
    assert report.status == "done", report
    names = sorted(path_of(r.output).name for r in report.rows)
    assert names == ["guests.anna.mp4", "hosts.anna.mp4"]
    for r in report.rows:
        export = repo().find_export(str(r.output))
        assert export is not None and export.render_id == r.render_id


def test_a_misspelt_speech_parameter_is_refused_before_anything_runs(
    media: MediaSet, tf_home: Path, tmp_path: Path
) -> None:
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="min_clips"):
        process_recording(
            str(media.speech_flv), [str(media.portrait)], str(tmp_path / "out"),
            speech={"min_clips": 3.0},  # type: ignore[arg-type]
        )  # fmt: skip
    assert not Path(get_settings().resolved_database_url.removeprefix("sqlite:///")).exists()
