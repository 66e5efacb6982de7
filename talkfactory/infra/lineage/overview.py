"""The recordings list an operator reads: one row per recording (or upload not yet a recording), with
its state derived from lineage, read in a constant number of statements per page.

A page is: one count, one page query over the union of recordings and the source objects that never
became one (new or quarantined uploads), then one aggregate query each for clips, renders (grouped by
status), exports and linked source objects of the page's recordings. Never one query per row: the
list stays as fast with 10,000 recordings as with ten.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, literal, not_, or_, select, union_all

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import RENDER_DONE, Clip, Export, Recording, Render, SourceObject

STATES = (
    "new",
    "speech done",
    "rendering",
    "done",
    "done with failures",
    "needs review",
    "stale for nightly",
    "no speech",
    "quarantined",
)
"""What the status filter offers: every state ``derive_state`` gives."""

PAGE_SIZE = 50


@dataclass(frozen=True)
class RenderTarget:
    """What renders should be made with now (the model version and parameters hash nightly plans
    for): a clip x avatar whose published renders were all made otherwise is stale."""

    backend_version: str
    params_hash: str


@dataclass(frozen=True)
class RecordingFilter:
    """What the list shows: created in [since, until), in a state, whose name starts with a prefix."""

    since: datetime | None = None
    until: datetime | None = None
    state: str | None = None
    prefix: str | None = None
    page: int = 1
    page_size: int = PAGE_SIZE


@dataclass(frozen=True)
class RenderCounts:
    total: int = 0
    running: int = 0
    done: int = 0
    """Published: succeeded or needs_review."""
    needs_review: int = 0
    failed: int = 0
    interrupted: int = 0


@dataclass(frozen=True)
class RecordingItem:
    """One line of the list."""

    kind: str
    """``recording``, or ``source`` for an upload that is not (yet) a recording."""
    id: int
    """The recording's id, or the source object's."""
    name: str
    created_at: datetime
    row_status: str
    """The recording's status (ok / failed), or the source object's."""
    error: str | None
    duration_s: float | None = None
    clips: int = 0
    avatars: int = 0
    exports: int = 0
    renders: RenderCounts = field(default_factory=RenderCounts)
    source_status: str | None = None
    """For a recording: the status of the upload it came from, when it came from one."""
    stale: int = 0
    """Clip x avatar pairs whose published renders were all made with another model or parameters."""

    @property
    def state(self) -> str:
        return derive_state(self)

    @property
    def state_text(self) -> str:
        s = self.state
        if s == "rendering":
            return f"rendering {self.renders.done}/{self.renders.total}"
        return s


@dataclass(frozen=True)
class RecordingPage:
    items: list[RecordingItem]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def derive_state(item: RecordingItem) -> str:
    """The state a person reads, in precedence order (``state_sql`` filters by the same rules)."""
    if item.kind == "source":
        return "quarantined" if item.row_status == "quarantined" else "new"
    if item.row_status == "failed":
        return "quarantined"
    r = item.renders
    if r.running:
        return "rendering"
    if r.failed or r.interrupted:
        return "done with failures"
    if r.needs_review:
        return "needs review"
    if item.stale:
        return "stale for nightly"
    if r.total:
        return "done" if r.done == r.total else "rendering"
    if item.clips:
        return "speech done"
    if item.source_status == "done":
        return "no speech"
    return "new"


def _render_exists(rid: Any, *statuses: str) -> ColumnElement[bool]:
    q = select(literal(1)).where(Render.recording_id == rid)
    if statuses:
        q = q.where(Render.status.in_(statuses))
    return exists(q)


def _stale_exists(rid: Any, target: RenderTarget | None) -> ColumnElement[bool]:
    """A published render of this recording with no published render of the same clip x avatar
    made with ``target`` (correlated; one statement)."""
    if target is None:
        return literal(False)
    current = Render.__table__.alias("current_render")
    return exists(
        select(literal(1)).where(
            Render.recording_id == rid,
            Render.status.in_(RENDER_DONE),
            not_(
                exists(
                    select(literal(1)).where(
                        current.c.recording_id == Render.recording_id,
                        current.c.avatar_id == Render.avatar_id,
                        or_(
                            current.c.clip_id == Render.clip_id,
                            and_(current.c.clip_id.is_(None), Render.clip_id.is_(None)),
                        ),
                        current.c.status.in_(RENDER_DONE),
                        current.c.backend_version == target.backend_version,
                        current.c.params_hash == target.params_hash,
                    )
                )
            ),
        )
    )


def state_sql(
    state: str, kind: Any, rid: Any, status: Any, settled_flag: Any, target: RenderTarget | None = None
) -> ColumnElement[bool]:
    """``derive_state(row) == state`` as SQL over the union's columns (one statement, no per-row query)."""
    is_rec = and_(kind == "recording", status != "failed")
    running = _render_exists(rid, "running", "pending")
    failed = _render_exists(rid, "failed", "interrupted")
    review = _render_exists(rid, "needs_review")
    any_render = _render_exists(rid)
    clips = exists(select(literal(1)).where(Clip.recording_id == rid))
    settled = settled_flag == 1
    if state == "quarantined":
        return or_(
            and_(kind == "recording", status == "failed"), and_(kind == "source", status == "quarantined")
        )
    if state == "new":
        return or_(
            and_(kind == "source", status != "quarantined"),
            and_(is_rec, not_(any_render), not_(clips), not_(settled)),
        )
    if state == "no speech":
        return and_(is_rec, not_(any_render), not_(clips), settled)
    if state == "rendering":
        return and_(is_rec, running)
    if state == "done with failures":
        return and_(is_rec, not_(running), failed)
    stale = _stale_exists(rid, target)
    if state == "needs review":
        return and_(is_rec, not_(running), not_(failed), review)
    if state == "stale for nightly":
        return and_(is_rec, not_(running), not_(failed), not_(review), stale)
    if state == "done":
        return and_(is_rec, any_render, _not_exists_other(rid), not_(stale))
    if state == "speech done":
        return and_(is_rec, not_(any_render), clips)
    raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")


def _not_exists_other(rid: Any) -> ColumnElement[bool]:
    return not_(_render_exists_not(rid, ("succeeded",)))


def _render_exists_not(rid: Any, statuses: tuple[str, ...]) -> ColumnElement[bool]:
    return exists(select(literal(1)).where(Render.recording_id == rid, Render.status.not_in(statuses)))


def _union() -> Any:
    # A recording is named by the (first) upload it came from, else by its own URI (a CLI run).
    # One grouped pass over source_objects, joined once, not a lookup per row.
    uploads_of = (
        select(
            SourceObject.recording_id.label("rid"),
            func.min(SourceObject.key).label("key"),
            # Processed to the end (for "no speech": settled, yet no clip).
            func.max(case((SourceObject.status == "done", 1), else_=0)).label("settled"),
        )
        .where(SourceObject.recording_id.is_not(None))
        .group_by(SourceObject.recording_id)
        .subquery("uploads_of")
    )
    recs = select(
        literal("recording").label("kind"),
        Recording.id.label("id"),
        func.coalesce(uploads_of.c.key, Recording.uri).label("name"),
        Recording.created_at.label("created_at"),
        Recording.status.label("row_status"),
        Recording.error.label("error"),
        Recording.duration_s.label("duration_s"),
        func.coalesce(uploads_of.c.settled, 0).label("settled"),
    ).outerjoin(uploads_of, uploads_of.c.rid == Recording.id)
    uploads = select(
        literal("source").label("kind"),
        SourceObject.id.label("id"),
        SourceObject.key.label("name"),
        SourceObject.first_seen_at.label("created_at"),
        SourceObject.status.label("row_status"),
        SourceObject.error.label("error"),
        literal(None).label("duration_s"),
        literal(0).label("settled"),
    ).where(SourceObject.recording_id.is_(None))
    return union_all(recs, uploads).subquery("items")


def _filtered(
    q: Select[Any], u: Any, f: RecordingFilter, patterns: tuple[str, ...], target: RenderTarget | None
) -> Select[Any]:
    if f.since is not None:
        q = q.where(u.c.created_at >= f.since)
    if f.until is not None:
        q = q.where(u.c.created_at < f.until)
    if f.state:
        q = q.where(state_sql(f.state, u.c.kind, u.c.id, u.c.row_status, u.c.settled, target))
    if patterns:
        q = q.where(or_(*(u.c.name.like(p, escape="\\") for p in patterns)))
    return q


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def prefix_patterns(prefix: str | None, key_root: str = "") -> tuple[str, ...]:
    """LIKE patterns for a key prefix: an upload's key under the ingest location (``key_root``), or a
    CLI run's recording whose file name starts with it."""
    if not prefix:
        return ()
    return (_escape(key_root + prefix) + "%", "%/" + _escape(prefix) + "%")


def list_recordings(
    repo: LineageRepository, f: RecordingFilter, *, key_root: str = "", target: RenderTarget | None = None
) -> RecordingPage:
    """One page of the list, newest first. ``key_root``: the ingest location's key prefix (a drop
    folder's path), which the filter's key prefix is relative to; ``target``: what renders should be
    made with now (recordings rendered otherwise read "stale for nightly")."""
    u = _union()
    patterns = prefix_patterns(f.prefix, key_root)
    with repo.session() as s:
        total = int(s.scalar(_filtered(select(func.count()).select_from(u), u, f, patterns, target)) or 0)
        rows = s.execute(
            _filtered(select(u), u, f, patterns, target)
            .order_by(u.c.created_at.desc(), u.c.id.desc())
            .limit(f.page_size)
            .offset((max(f.page, 1) - 1) * f.page_size)
        ).all()
        rec_ids = [r.id for r in rows if r.kind == "recording"]
        details = _details(s, rec_ids, target) if rec_ids else _Details()
    items = [_item(r, details) for r in rows]
    return RecordingPage(items, total, max(f.page, 1), f.page_size)


@dataclass
class _Details:
    clips: dict[int, int] = field(default_factory=dict)
    avatars: dict[int, int] = field(default_factory=dict)
    exports: dict[int, int] = field(default_factory=dict)
    renders: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    sources: dict[int, tuple[str, str]] = field(default_factory=dict)
    """recording id -> (source key, source status) of the first upload it came from."""
    stale: dict[int, int] = field(default_factory=dict)


def _details(s: Any, ids: list[int], target: RenderTarget | None = None) -> _Details:
    d = _Details()
    if target is not None:
        # Per clip x avatar: published at all, and published with the target; one grouped statement.
        current = and_(
            Render.backend_version == target.backend_version, Render.params_hash == target.params_hash
        )
        pairs = (
            select(
                Render.recording_id.label("rid"),
                func.max(case((current, 1), else_=0)).label("fresh"),
            )
            .where(Render.recording_id.in_(ids), Render.status.in_(RENDER_DONE))
            .group_by(Render.recording_id, Render.clip_id, Render.avatar_id)
            .subquery("pairs")
        )
        for rid, n in s.execute(
            select(pairs.c.rid, func.count()).where(pairs.c.fresh == 0).group_by(pairs.c.rid)
        ):
            d.stale[rid] = n
    for rid, n in s.execute(
        select(Clip.recording_id, func.count()).where(Clip.recording_id.in_(ids)).group_by(Clip.recording_id)
    ):
        d.clips[rid] = n
    for rid, n in s.execute(
        select(Render.recording_id, func.count(func.distinct(Render.avatar_id)))
        .where(Render.recording_id.in_(ids))
        .group_by(Render.recording_id)
    ):
        d.avatars[rid] = n
    for rid, status, n in s.execute(
        select(Render.recording_id, Render.status, func.count())
        .where(Render.recording_id.in_(ids))
        .group_by(Render.recording_id, Render.status)
    ):
        d.renders[rid][status] = n
    for rid, n in s.execute(
        select(Export.recording_id, func.count())
        .where(Export.recording_id.in_(ids))
        .group_by(Export.recording_id)
    ):
        d.exports[rid] = n
    for rid, key, status in s.execute(
        select(SourceObject.recording_id, SourceObject.key, SourceObject.status)
        .where(SourceObject.recording_id.in_(ids))
        .order_by(SourceObject.id.desc())
    ):
        d.sources[rid] = (key, status)  # the oldest upload wins: rows come newest first
    return d


def _item(r: Any, d: _Details) -> RecordingItem:
    if r.kind == "source":
        return RecordingItem("source", r.id, r.name, r.created_at, r.row_status, r.error)
    by_status = d.renders.get(r.id, {})
    counts = RenderCounts(
        total=sum(by_status.values()),
        running=by_status.get("running", 0) + by_status.get("pending", 0),
        done=by_status.get("succeeded", 0) + by_status.get("needs_review", 0),
        needs_review=by_status.get("needs_review", 0),
        failed=by_status.get("failed", 0),
        interrupted=by_status.get("interrupted", 0),
    )
    source = d.sources.get(r.id)
    return RecordingItem(
        "recording",
        r.id,
        source[0] if source else r.name,
        r.created_at,
        r.row_status,
        r.error,
        duration_s=r.duration_s,
        clips=d.clips.get(r.id, 0),
        avatars=d.avatars.get(r.id, 0),
        exports=d.exports.get(r.id, 0),
        renders=counts,
        source_status=source[1] if source else None,
        stale=d.stale.get(r.id, 0),
    )
