"""Plan a nightly re-process: from lineage alone, which renders are missing or stale.

The unit of work is one clip of a recording's current clip set x one active avatar version. Each
is classified against the renders lineage holds for that clip and avatar name; the flow submits
``ReprocessPlan.to_submit()`` and reports the rest. Planning only reads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

import talkfactory.errors as errors
from talkfactory.infra.lineage.avatars import AvatarVersion
from talkfactory.infra.lineage.planning import (
    ClipFacts,
    RecordingFacts,
    RenderFacts,
    load_planning_snapshot,
)
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import RENDER_DONE

PlanKind = Literal[
    "needs-speech",
    "missing",
    "stale-avatar",
    "stale-backend",
    "stale-params",
    "stale-exports",
    "retry",
    "running",
    "given-up",
    "done",
]
PLAN_KINDS: tuple[PlanKind, ...] = get_args(PlanKind)
SUBMIT_KINDS: frozenset[PlanKind] = frozenset(
    {"needs-speech", "missing", "stale-avatar", "stale-backend", "stale-params", "stale-exports", "retry"}
)
"""Kinds the flow should run; ``running``, ``given-up`` and ``done`` are only reported."""


@dataclass(frozen=True)
class PlanItem:
    """One clip x avatar to (re-)render, or one recording that needs its speech pass first."""

    kind: PlanKind
    recording_id: int
    recording_uri: str
    recording_sha256: str | None
    source_key: str | None
    reason: str
    clip_id: int | None = None
    clip_number: int | None = None
    """1-based position of the clip in its set, by start time."""
    clip_start_s: float | None = None
    clip_end_s: float | None = None
    clip_params_hash: str | None = None
    clip_audio_uri: str | None = None
    clip_audio48_uri: str | None = None
    avatar_id: int | None = None
    avatar_name: str | None = None
    avatar_uri: str | None = None
    avatar_content_hash: str | None = None
    previous_render_id: int | None = None
    """The render this item replaces or retries (or reports), if any."""
    previous_attempts: int = 0


@dataclass(frozen=True)
class ReprocessPlan:
    """The classified work for one slice of the archive, and the settings it was planned for."""

    backend: str
    backend_version: str
    params_hash: str
    max_attempts: int
    since: datetime | None = None
    until: datetime | None = None
    prefix: str = ""
    items: list[PlanItem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Items per kind, every kind present (zeros included) in a stable order."""
        found = Counter(item.kind for item in self.items)
        return {kind: found[kind] for kind in PLAN_KINDS}

    def to_submit(self) -> list[PlanItem]:
        return [item for item in self.items if item.kind in SUBMIT_KINDS]

    def table(self) -> list[dict[str, str | int | None]]:
        """One row per item, for a Prefect table artifact."""
        return [
            {
                "kind": item.kind,
                "recording": item.recording_id,
                "source": item.source_key or item.recording_uri,
                "clip": item.clip_number,
                "span": (
                    f"{item.clip_start_s:.2f}-{item.clip_end_s:.2f} s"
                    if item.clip_start_s is not None and item.clip_end_s is not None
                    else None
                ),
                "avatar": item.avatar_name,
                "reason": item.reason,
                "previous_render": item.previous_render_id,
            }
            for item in self.items
        ]


def plan_reprocess(
    repo: LineageRepository,
    *,
    backend: str,
    backend_version: str,
    params_hash: str,
    since: datetime | None = None,
    until: datetime | None = None,
    prefix: str = "",
    max_attempts: int = 3,
    channels: dict[str, str] | None = None,
) -> ReprocessPlan:
    """Classify every clip x active avatar of the recordings created in [since, until) under ``prefix``.

    ``params_hash`` is the ``RenderRequest.params_hash()`` the flow would render with and
    ``backend_version`` the backend's ``version``. Recordings without clips become one
    ``needs-speech`` item each; failed recordings are skipped. Nothing is written.
    """
    snapshot = load_planning_snapshot(repo, since=since, until=until, prefix=prefix, backend=backend)
    target = _Target(backend, backend_version, params_hash, max_attempts, dict(channels or {}))
    items: list[PlanItem] = []
    avatars = _active_versions(snapshot.avatars)
    versions: dict[str, dict[int, AvatarVersion]] = {}
    for v in snapshot.avatars:
        versions.setdefault(v.name, {})[v.id] = v
    for rec in snapshot.recordings:
        clips = snapshot.clips.get(rec.id)
        if not clips:
            items.append(_item(rec, "needs-speech", "no clips yet: run the speech pass first"))
            continue
        for clip in clips:
            for avatar in avatars:
                renders = snapshot.renders.get(clip.id, [])
                items.append(_classify(rec, clip, avatar, versions[avatar.name], renders, target))
    return ReprocessPlan(
        backend=backend,
        backend_version=backend_version,
        params_hash=params_hash,
        max_attempts=max_attempts,
        since=since,
        until=until,
        prefix=prefix,
        items=items,
    )


def is_permanent_error(error_type: str | None, permanent: bool | None = None) -> bool:
    """Whether a failed attempt can never succeed on retry.

    ``permanent`` (``attempts.permanent``, decided from the exception itself when the attempt failed)
    wins when it is known, so renaming or moving an error class cannot change the answer for rows
    already written. Older rows have it NULL: then ``error_type`` must name a ``talkfactory.errors``
    class that subclasses ``PermanentError``. Anything else (a builtin, a library's exception, an
    unknown or missing name) counts as transient: a retry that fails again costs an attempt,
    skipping a fixable render costs an output.
    """
    if permanent is not None:
        return permanent
    found = getattr(errors, error_type, None) if error_type else None
    return isinstance(found, type) and issubclass(found, errors.PermanentError)


@dataclass(frozen=True)
class _Target:
    backend: str
    backend_version: str
    params_hash: str
    max_attempts: int
    channels: dict[str, str] = field(default_factory=dict)


def _active_versions(versions: list[AvatarVersion]) -> list[AvatarVersion]:
    """The version in use of each active, usable name, by name (the newest if a race left two)."""
    by_name: dict[str, AvatarVersion] = {}
    for v in versions:
        if v.active and v.status == "ok" and (v.name not in by_name or v.id > by_name[v.name].id):
            by_name[v.name] = v
    return [by_name[name] for name in sorted(by_name)]


def _classify(
    rec: RecordingFacts,
    clip: ClipFacts,
    avatar: AvatarVersion,
    versions: dict[int, AvatarVersion],
    clip_renders: list[RenderFacts],
    t: _Target,
) -> PlanItem:
    """``versions``: every version of the avatar's name by id; ``clip_renders``: oldest first."""
    renders = [r for r in clip_renders if r.avatar_id in versions and r.backend == t.backend]
    mine = [r for r in renders if r.avatar_id == avatar.id]
    current = [r for r in mine if r.backend_version == t.backend_version and r.params_hash == t.params_hash]
    if current:
        return _current_state(rec, clip, avatar, current[-1], t)
    ok_mine = [r for r in mine if r.status in RENDER_DONE]
    if ok_mine:
        prev = ok_mine[-1]
        changes = []
        if prev.backend_version != t.backend_version:
            changes.append(f"backend {prev.backend_version} -> {t.backend_version}")
        if prev.params_hash != t.params_hash:
            changes.append(f"params {prev.params_hash[:8]} -> {t.params_hash[:8]}")
        kind: PlanKind = "stale-backend" if prev.backend_version != t.backend_version else "stale-params"
        return _item(rec, kind, "; ".join(changes), clip, avatar, prev)
    ok_older = [r for r in renders if r.status in RENDER_DONE and r.avatar_id != avatar.id]
    if ok_older:
        prev = ok_older[-1]
        old = versions[prev.avatar_id].content_hash[:8]
        reason = f"avatar {avatar.name} {old} -> {avatar.content_hash[:8]}"
        return _item(rec, "stale-avatar", reason, clip, avatar, prev)
    return _item(rec, "missing", "never rendered", clip, avatar)


def _current_state(
    rec: RecordingFacts, clip: ClipFacts, avatar: AvatarVersion, render: RenderFacts, t: _Target
) -> PlanItem:
    if render.status in RENDER_DONE:
        lacking = [ch for ch, version in t.channels.items() if (ch, version) not in render.exports]
        if lacking:
            reason = "no current export for " + ", ".join(lacking)
            return _item(rec, "stale-exports", reason, clip, avatar, render)
        return _item(rec, "done", "up to date", clip, avatar, render)
    if render.status == "interrupted":
        # Stopped by a user or a shutting-down executor: nothing was wrong with it, so redo it.
        return _item(rec, "retry", "interrupted", clip, avatar, render)
    if render.status != "failed":
        return _item(rec, "running", f"render {render.id} is {render.status}", clip, avatar, render)
    error = render.error_type or "unknown error"
    if is_permanent_error(render.error_type, render.permanent):
        return _item(rec, "given-up", f"permanent error {error}", clip, avatar, render)
    if render.attempts >= t.max_attempts:
        reason = f"{render.attempts} of {t.max_attempts} attempts used (last: {error})"
        return _item(rec, "given-up", reason, clip, avatar, render)
    reason = f"attempt {render.attempts + 1} of {t.max_attempts} after {error}"
    return _item(rec, "retry", reason, clip, avatar, render)


def _item(
    rec: RecordingFacts,
    kind: PlanKind,
    reason: str,
    clip: ClipFacts | None = None,
    avatar: AvatarVersion | None = None,
    previous: RenderFacts | None = None,
) -> PlanItem:
    return PlanItem(
        kind=kind,
        recording_id=rec.id,
        recording_uri=rec.uri,
        recording_sha256=rec.sha256,
        source_key=rec.source_key,
        reason=reason,
        clip_id=clip.id if clip else None,
        clip_number=clip.number if clip else None,
        clip_start_s=clip.start_s if clip else None,
        clip_end_s=clip.end_s if clip else None,
        clip_params_hash=clip.params_hash if clip else None,
        clip_audio_uri=clip.audio_uri if clip else None,
        clip_audio48_uri=clip.audio48_uri if clip else None,
        avatar_id=avatar.id if avatar else None,
        avatar_name=avatar.name if avatar else None,
        avatar_uri=avatar.uri if avatar else None,
        avatar_content_hash=avatar.content_hash if avatar else None,
        previous_render_id=previous.id if previous else None,
        previous_attempts=previous.attempts if previous else 0,
    )
