"""The speech step on its own: a recording in, clean clips of its main speaker out, in lineage."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.speech import SpeechParams
from talkfactory.tasks.prepare import prepare_recording_task
from talkfactory.tasks.speech import speech_task


@flow(name="extract-speech", flow_run_name="speech {recording}")
def speech_flow(recording: str, out_dir: str, speech: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the clips of ``recording`` into ``out_dir``; returns what ``clips.json`` holds."""
    settings = get_settings()
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    rec, rec_id = prepare_recording_task(recording, str(settings.work_dir), db_url)
    result, _ = speech_task(
        rec, rec_id, SpeechParams(**(speech or {})), str(settings.work_dir), db_url, out_dir
    )
    create_table_artifact(
        key="speech-clips",
        table=[
            {"clip": c.index, "start": c.start, "end": c.end, "speaker": c.speaker, "lufs": c.loudness_lufs}
            for c in result.clips
        ],
        description=f"{len(result.clips)} clips of {rec.path.name}"
        + (f" ({result.no_clips_reason})" if result.no_clips_reason else ""),
    )
    return result.to_dict()
