"""``push-live``: play exports back to back into a live RTMP(S) stream, for a schedule to trigger.

The job is ``pipeline.live.push_live``; this flow adds what a deployment needs: the URL only as a
reference (deployment parameters are stored in Prefect's database, so the stream key must stay where
the worker reads it: ``env:NAME``, ``file:PATH``, or ``rtmp://host/app/env:NAME``), a progress
artifact while it plays, and a table of the attempts when it ends. A push that did not send every file
ends the run Failed, with the reason (URL masked) as its message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed

from talkfactory.errors import ConfigurationError
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.live.push import PushProgress
from talkfactory.infra.live.push_args import LiveLimits
from talkfactory.infra.live.urls import is_reference, mask_url
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.jobs.files import local_copy
from talkfactory.pipeline.live import (
    AttemptReport,
    PushPlan,
    PushPolicy,
    PushReport,
    ResumeAt,
    channel_preset,
    channel_target,
    live_limits_of,
    push_live,
)
from talkfactory.tasks.context import provenance, repository
from talkfactory.tasks.progress_artifacts import BackgroundProgressArtifact


@flow(name="push-live")
def push_live_flow(
    sources: list[str],
    url: str | None = None,
    channel: str | None = None,
    source_channel: str | None = None,
    limits: LiveLimits | None = None,
    attempts: int = 3,
    backoff_s: float = 5.0,
    resume: ResumeAt = "next",
    rw_timeout_s: float = 10.0,
    force_encode: bool = False,
    verify_tls: bool = True,
    ca_file: str | None = None,
) -> PushReport:
    """Push ``sources`` (files, store URLs or lineage references) to ``url`` as one live stream.

    Args:
        sources: played in this order; a lineage reference (recording or export name) plays that
            recording's published exports of ``source_channel`` in speaking order.
        url: ``env:NAME`` / ``file:PATH`` (the whole URL) or ``rtmp[s]://host/app/env:NAME`` (the key);
            a key written out is refused, so it never lands in Prefect's database. None: the
            ``channel`` preset's ``rtmp_url`` + ``rtmp_key``.
        channel: the channel preset whose limits apply (``limits`` overrides them).
        attempts, backoff_s, resume, rw_timeout_s: see ``pipeline.live.PushPolicy``.
        force_encode: re-encode even when the files fit the limits as they are.
        verify_tls, ca_file: rtmps certificate check (system CAs, or this PEM file on the worker).
    """
    logger = get_run_logger()
    settings = get_settings()
    preset = channel_preset(channel, settings.channels_file) if channel else None
    url = url or (channel_target(preset) if preset is not None else None)
    if url is None:
        raise ConfigurationError(
            "no push URL: give url, or a channel whose preset names rtmp_url and rtmp_key"
        )
    if not is_reference(url):
        raise ConfigurationError(
            "push-live takes the URL as env:NAME or file:PATH, or the key as rtmp://host/app/env:NAME, so "
            "the stream key never lands in Prefect's database",
            subject=mask_url(url),
        )
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    if limits is None:
        limits = live_limits_of(preset) if preset is not None else LiveLimits()
    progress = BackgroundProgressArtifact("live push: media time sent")
    total = [1.0]

    def on_plan(plan: PushPlan) -> None:
        total[0] = max(plan.total_s, 1e-3)
        why = "".join(f"\n- {r}" for r in plan.reasons) or "\n- every file fits the live limits as it is"
        logger.info("pushing %d file(s), %.1f s, %s", len(plan.files), plan.total_s, plan.mode)
        create_markdown_artifact(
            markdown=f"**{plan.mode}**, {len(plan.files)} file(s), {plan.total_s:.1f} s{why}",
            key=_artifact_key("push-plan", sources),
            description="How the live push sends its files",
        )

    def on_progress(p: PushProgress) -> None:
        progress.update(int(p.out_time_s * 10), int(total[0] * 10))

    def on_attempt(a: AttemptReport) -> None:
        (logger.info if a.status == "succeeded" else logger.warning)(
            "attempt %d from file %d: %s%s",
            a.number,
            a.first_file + 1,
            a.status,
            f" ({a.error})" if a.error else "",
        )

    try:
        report = push_live(
            sources,
            url,
            limits=limits,
            channel=channel,
            source_channel=source_channel,
            policy=PushPolicy(
                attempts=attempts,
                backoff_s=backoff_s,
                resume=resume,
                rw_timeout_s=rw_timeout_s,
                verify_tls=verify_tls,
                ca_file=Path(ca_file) if ca_file else None,
            ),
            lineage=repository(db_url),
            prov=provenance(),
            fetch=lambda uri: local_copy(uri, settings),
            force_encode=force_encode,
            max_run_s=settings.ffmpeg_timeout_s,
            on_plan=on_plan,
            on_progress=on_progress,
            on_attempt=on_attempt,
        )
    finally:
        progress.close()
    _publish(report, sources)
    message = f"{report.target}: {report.summary()}" + (f": {report.error}" if report.error else "")
    # The run ends Completed or Failed with that message; a direct call still returns the report
    # (Prefect hands back a returned state's data), hence the casts.
    if report.status == "done":
        return cast(PushReport, Completed(message=message, data=report))
    return cast(PushReport, Failed(message=message, data=report))


def _publish(report: PushReport, sources: list[str]) -> None:
    rows = [
        {
            "attempt": a.number,
            "from file": a.first_file + 1,
            "files sent whole": a.files_done,
            "cut at file": "" if a.file_on_air is None else a.file_on_air + 1,
            "sent_s": round(a.pushed_s, 1),
            "took_s": round(a.wall_s, 1),
            "status": a.status,
            "error": a.error or "",
        }
        for a in report.attempts
    ]
    create_table_artifact(
        table=rows or [{"status": report.status, "error": report.error or ""}],
        key=_artifact_key("push", sources),
        description=f"Live push to {report.target}: {report.summary()}",
    )


def _artifact_key(prefix: str, sources: list[str]) -> str:
    # Keyed per playlist's first source, so repeated pushes of one show share a history.
    slug = re.sub(r"[^a-z0-9]+", "-", (sources[0] if sources else "").lower()).strip("-")[-50:] or "sources"
    return f"{prefix}-{slug}".strip("-")


__all__ = ["push_live_flow"]
