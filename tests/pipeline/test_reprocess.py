"""plan_reprocess against a real, migrated lineage database seeded through the repository's API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from talkfactory.errors import FFmpegError, NoFaceError
from talkfactory.infra.lineage.avatars import set_avatar_active
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import Attempt
from talkfactory.pipeline.reprocess import (
    PLAN_KINDS,
    PlanItem,
    ReprocessPlan,
    is_permanent_error,
    plan_reprocess,
)
from tests.infra.lineage_seed import BACKEND, PARAMS, PARAMS_CRF18, V12, V13, Seed, sha, table_fingerprint

Pair = tuple[int, str]
"""(clip id, avatar name): one unit of work."""


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[LineageRepository]:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    yield repo
    repo.engine.dispose()


@dataclass
class Archive:
    """Two recordings (2 and 3 clips), avatars astro and nova, every clip x avatar rendered at 1.2."""

    seed: Seed
    recs: dict[str, int]
    clips: dict[str, list[int]]
    avatars: dict[str, int]
    renders: dict[Pair, int] = field(default_factory=dict)

    @property
    def all_clips(self) -> list[int]:
        return [c for ids in self.clips.values() for c in ids]


@pytest.fixture
def archive(repo: LineageRepository) -> Archive:
    seed = Seed(repo)
    r1, c1 = seed.recording("show-a", key="2026/05/01/show-a.flv")
    r2, c2 = seed.recording(
        "show-b", spans=[(0.5, 2.0), (3.0, 5.0), (7.25, 8.0)], key="2026/05/02/show-b.flv"
    )
    arc = Archive(
        seed, {"a": r1, "b": r2}, {"a": c1, "b": c2}, {n: seed.avatar(n) for n in ("astro", "nova")}
    )
    for rec, clips in ((r1, c1), (r2, c2)):
        for clip in clips:
            for name, av in arc.avatars.items():
                arc.renders[(clip, name)] = seed.render(rec, clip, av)
    return arc


def plan(repo: LineageRepository, **kw: Any) -> ReprocessPlan:
    kw = {"backend": BACKEND, "backend_version": V12, "params_hash": PARAMS, **kw}
    return plan_reprocess(repo, **kw)


def pairs(p: ReprocessPlan, kind: str) -> set[Pair]:
    return {(i.clip_id, i.avatar_name) for i in p.items if i.kind == kind}  # type: ignore[misc]


def nonzero(p: ReprocessPlan) -> dict[str, int]:
    return {k: n for k, n in p.counts().items() if n}


def test_an_up_to_date_archive_plans_nothing(repo: LineageRepository, archive: Archive) -> None:
    p = plan(repo)
    assert nonzero(p) == {"done": 10} and p.to_submit() == []
    assert pairs(p, "done") == {(c, n) for c in archive.all_clips for n in ("astro", "nova")}
    b_items = [i for i in p.items if i.recording_id == archive.recs["b"] and i.avatar_name == "astro"]
    assert [(i.clip_number, i.clip_start_s, i.clip_end_s) for i in b_items] == [
        (1, 0.5, 2.0),
        (2, 3.0, 5.0),
        (3, 7.25, 8.0),
    ]
    assert all(i.previous_render_id == archive.renders[(i.clip_id, i.avatar_name)] for i in p.items)  # type: ignore[index]


def test_a_new_avatar_plans_exactly_its_missing_renders(repo: LineageRepository, archive: Archive) -> None:
    luna = archive.seed.avatar("luna")
    p = plan(repo)
    assert nonzero(p) == {"missing": 5, "done": 10}
    assert pairs(p, "missing") == {(c, "luna") for c in archive.all_clips}
    assert p.to_submit() == [i for i in p.items if i.kind == "missing"]
    first = next(i for i in p.items if i.kind == "missing")
    assert first == PlanItem(
        kind="missing",
        recording_id=archive.recs["a"],
        recording_uri="/data/recordings/show-a.flv",
        recording_sha256=sha("recording show-a"),
        source_key="2026/05/01/show-a.flv",
        reason="never rendered",
        clip_id=archive.clips["a"][0],
        clip_number=1,
        clip_start_s=1.0,
        clip_end_s=4.0,
        clip_params_hash=sha("speech-v1"),
        clip_audio_uri=f"/c/{archive.recs['a']}-1.0.wav",
        clip_audio48_uri=f"/c/{archive.recs['a']}-1.0-48.wav",
        avatar_id=luna,
        avatar_name="luna",
        avatar_uri="/library/luna.mp4",
        avatar_content_hash=sha("avatar luna v1"),
    )


def test_a_backend_bump_makes_exactly_the_old_version_renders_stale(
    repo: LineageRepository, archive: Archive
) -> None:
    # Recording b was already re-rendered with 1.3; a render by another backend must not count.
    for clip in archive.clips["b"]:
        for av in archive.avatars.values():
            archive.seed.render(archive.recs["b"], clip, av, version=V13)
    archive.seed.render(archive.recs["a"], archive.clips["a"][0], archive.avatars["astro"], backend="wav2lip")
    p = plan(repo, backend_version=V13)
    stale = {(c, n) for c in archive.clips["a"] for n in ("astro", "nova")}
    assert nonzero(p) == {"stale-backend": 4, "done": 6}
    assert pairs(p, "stale-backend") == stale
    for item in p.items:
        if item.kind == "stale-backend":
            assert item.reason == "backend weightless-1.2 -> weightless-1.3"
            assert item.previous_render_id == archive.renders[(item.clip_id, item.avatar_name)]  # type: ignore[index]
    assert nonzero(plan(repo)) == {"done": 10}  # the 1.2 renders still exist


def test_changed_render_parameters_are_stale_params(repo: LineageRepository, archive: Archive) -> None:
    p = plan(repo, params_hash=PARAMS_CRF18)
    assert nonzero(p) == {"stale-params": 10}
    assert {i.reason for i in p.items} == {f"params {PARAMS[:8]} -> {PARAMS_CRF18[:8]}"}
    both = plan(repo, params_hash=PARAMS_CRF18, backend_version=V13)
    assert nonzero(both) == {"stale-backend": 10}
    assert {i.reason for i in both.items} == {
        f"backend {V12} -> {V13}; params {PARAMS[:8]} -> {PARAMS_CRF18[:8]}"
    }


def test_a_new_avatar_version_makes_exactly_that_avatars_renders_stale(
    repo: LineageRepository, archive: Archive
) -> None:
    astro2 = archive.seed.avatar("astro", "v2")
    p = plan(repo)
    assert nonzero(p) == {"stale-avatar": 5, "done": 5}
    assert pairs(p, "stale-avatar") == {(c, "astro") for c in archive.all_clips}
    assert pairs(p, "done") == {(c, "nova") for c in archive.all_clips}
    old, new = sha("avatar astro v1")[:8], sha("avatar astro v2")[:8]
    for item in (i for i in p.items if i.kind == "stale-avatar"):
        assert item.avatar_id == astro2 and item.reason == f"avatar astro {old} -> {new}"
        assert item.previous_render_id == archive.renders[(item.clip_id, "astro")]  # type: ignore[index]

    # One clip re-rendered with the new version is done; the rest stay stale.
    first = archive.clips["a"][0]
    archive.seed.render(archive.recs["a"], first, astro2)
    assert pairs(plan(repo), "stale-avatar") == {(c, "astro") for c in archive.all_clips if c != first}

    # The old file put back: its renders are current again.
    assert archive.seed.avatar("astro", "v1") == archive.avatars["astro"]
    back = plan(repo)
    assert nonzero(back) == {"done": 10}
    assert {i.avatar_id for i in back.items if i.avatar_name == "astro"} == {archive.avatars["astro"]}


def test_failed_renders_are_retried_or_given_up(repo: LineageRepository) -> None:
    seed = Seed(repo)
    spans = [(float(n), n + 0.5) for n in range(6)]
    rec, (transient, permanent, exhausted, unknown, running, recovered) = seed.recording("x", spans=spans)
    av = seed.avatar("astro")
    ffmpeg = FFmpegError("exit 1", subject="x.flv")
    seed.render(rec, transient, av, failures=[ffmpeg], succeed=False)
    seed.render(rec, permanent, av, failures=[NoFaceError("no face", subject="astro.mp4")], succeed=False)
    seed.render(rec, exhausted, av, failures=[ffmpeg, ffmpeg, ffmpeg], succeed=False)
    seed.render(rec, unknown, av, failures=[RuntimeError("boom")], succeed=False)
    running_id = seed.render(rec, running, av, succeed=False)
    seed.render(rec, recovered, av, failures=[ffmpeg, NoFaceError("flaky", subject="astro.mp4")])

    p = plan(repo)
    kinds = {i.clip_id: i for i in p.items}
    assert {c: i.kind for c, i in kinds.items()} == {
        transient: "retry",
        permanent: "given-up",
        exhausted: "given-up",
        unknown: "retry",
        running: "running",
        recovered: "done",
    }
    assert kinds[transient].reason == "attempt 2 of 3 after FFmpegError"
    assert kinds[transient].previous_attempts == 1 and kinds[transient].previous_render_id is not None
    assert kinds[permanent].reason == "permanent error NoFaceError"
    assert kinds[exhausted].reason == "3 of 3 attempts used (last: FFmpegError)"
    assert kinds[running].reason == f"render {running_id} is running"
    assert {i.clip_id for i in p.to_submit()} == {transient, unknown}

    # With more attempts allowed the exhausted one is retried; a permanent error never is.
    more = {i.clip_id: i.kind for i in plan(repo, max_attempts=5).items}
    assert more[exhausted] == "retry" and more[permanent] == "given-up"


@pytest.mark.parametrize(
    ("name", "permanent"),
    [
        ("NoFaceError", True),
        ("InvalidKeyError", True),  # two levels below PermanentError
        ("NoAudioStreamError", True),
        ("FFmpegTimeoutError", False),
        ("DatabaseUnavailableError", False),
        ("ValueError", False),
        ("is_transient", False),  # a function in talkfactory.errors, not a class
        ("NoSuchError", False),
        (None, False),
    ],
)
def test_error_permanence_is_looked_up_in_talkfactory_errors(name: str | None, permanent: bool) -> None:
    assert is_permanent_error(name) is permanent


def test_the_stored_permanent_flag_decides_and_class_names_only_judge_older_rows(
    repo: LineageRepository,
) -> None:
    """``attempts.permanent`` was decided from the exception when it failed: a class renamed since (or
    one whose permanence changed) cannot flip the plan. Rows from before the column (NULL) fall back to
    looking the class name up in ``talkfactory.errors``."""
    seed = Seed(repo)
    spans = [(float(n), n + 0.5) for n in range(4)]
    rec, (renamed, now_transient, old_row, old_unknown) = seed.recording("x", spans=spans)
    av = seed.avatar("astro")
    ids = {
        clip: seed.render(rec, clip, av, failures=[NoFaceError("no face", subject="a.mp4")], succeed=False)
        for clip in (renamed, now_transient, old_row, old_unknown)
    }

    def rewrite(clip: int, error_type: str, permanent: bool | None) -> None:
        with repo.session() as s:
            s.execute(
                update(Attempt)
                .where(Attempt.subject_kind == "render", Attempt.subject_id == ids[clip])
                .values(error_type=error_type, permanent=permanent)
            )

    rewrite(renamed, "SomeRenamedError", True)  # no such class any more: the flag still says permanent
    rewrite(now_transient, "NoFaceError", False)  # the name says permanent, the stored decision did not
    rewrite(old_row, "NoFaceError", None)  # written before the column: looked up by name
    rewrite(old_unknown, "SomeRenamedError", None)  # ... and an unknown name counts as transient

    kinds = {i.clip_id: i for i in plan(repo).items}
    assert kinds[renamed].kind == "given-up" and kinds[renamed].reason == "permanent error SomeRenamedError"
    assert kinds[now_transient].kind == "retry"
    assert kinds[old_row].kind == "given-up"
    assert kinds[old_unknown].kind == "retry"
    assert is_permanent_error("SomeRenamedError", True) and not is_permanent_error("NoFaceError", False)


def _dated_archive(repo: LineageRepository) -> tuple[Seed, dict[str, int]]:
    seed = Seed(repo)
    day = datetime(2026, 5, 1, tzinfo=UTC)
    recs = {
        "a": seed.recording("a", key="shows/2026-05/a.flv")[0],
        "b": seed.recording("b", key="shows/2026-05/b.flv")[0],
        "c": seed.recording("c", key="Shows/2026-05/c.flv")[0],
        "d": seed.recording("d", uri="/data/shows/2026-05/d.flv")[0],
        "e": seed.recording("e", key="shows_x/e.flv")[0],
    }
    when = {"a": day + timedelta(hours=10), "b": day + timedelta(days=1), "c": day + timedelta(days=2)}
    when |= {"d": day + timedelta(days=1, hours=12), "e": day + timedelta(days=1, hours=23, minutes=59)}
    for name, rec in recs.items():
        seed.backdate(rec, when[name])
    seed.avatar("astro")
    return seed, recs


def recordings(p: ReprocessPlan, recs: dict[str, int]) -> set[str]:
    names = {v: k for k, v in recs.items()}
    return {names[i.recording_id] for i in p.items}


def test_date_range_is_half_open_and_timezone_aware(repo: LineageRepository) -> None:
    _, recs = _dated_archive(repo)
    may2, may3 = datetime(2026, 5, 2, tzinfo=UTC), datetime(2026, 5, 3, tzinfo=UTC)
    assert recordings(plan(repo, since=may2, until=may3), recs) == {"b", "d", "e"}
    assert recordings(plan(repo, since=may2), recs) == {"b", "c", "d", "e"}
    assert recordings(plan(repo, until=may2), recs) == {"a"}
    cest = timezone(timedelta(hours=2))
    local = plan(
        repo, since=datetime(2026, 5, 2, 2, 0, tzinfo=cest), until=datetime(2026, 5, 2, 14, tzinfo=cest)
    )
    assert recordings(local, recs) == {"b"}
    naive = plan(repo, since=datetime(2026, 5, 2, 12), until=datetime(2026, 5, 3))
    assert recordings(naive, recs) == {"d", "e"}


def test_prefix_matches_source_keys_or_uris_literally(repo: LineageRepository) -> None:
    seed, recs = _dated_archive(repo)
    assert recordings(plan(repo, prefix="shows/2026-05/"), recs) == {"a", "b"}  # not "Shows/..."
    assert recordings(plan(repo, prefix="Shows/"), recs) == {"c"}
    assert recordings(plan(repo, prefix="/data/shows/"), recs) == {"d"}
    assert recordings(plan(repo, prefix="shows_"), recs) == {"e"}  # "_" is no wildcard
    assert recordings(plan(repo, prefix="shows%"), recs) == set()
    may2 = datetime(2026, 5, 2, tzinfo=UTC)
    assert recordings(plan(repo, prefix="shows/", since=may2), recs) == {"b"}

    # Ingested again under another key: the key that matched is the one reported.
    seed.source(recs["a"], "reruns/a.flv")
    by_rerun = plan(repo, prefix="reruns/")
    assert {i.source_key for i in by_rerun.items} == {"reruns/a.flv"}
    assert {i.source_key for i in plan(repo, prefix="shows/2026-05/a").items} == {"shows/2026-05/a.flv"}


def test_recordings_without_clips_need_speech_and_failed_ones_are_skipped(repo: LineageRepository) -> None:
    seed = Seed(repo)
    silent, _ = seed.recording("silent", spans=[], key="k/silent.flv")
    seed.failed_recording("broken")
    seed.avatar("astro")
    p = plan(repo)
    assert [(i.kind, i.recording_id, i.source_key, i.clip_id, i.avatar_id) for i in p.items] == [
        ("needs-speech", silent, "k/silent.flv", None, None)
    ]
    assert p.to_submit() == p.items


def test_only_the_newest_speech_pass_and_no_whole_track_render_counts(repo: LineageRepository) -> None:
    seed = Seed(repo)
    rec, old_clips = seed.recording("x", spans=[(1.0, 2.0), (3.0, 4.0)], speech="speech-v1")
    av = seed.avatar("astro")
    for clip in old_clips:
        seed.render(rec, clip, av)
    seed.render(rec, None, av)  # whole-track render
    assert nonzero(plan(repo)) == {"done": 2}

    # A new speech pass registered out of order: numbered by start time, none rendered yet.
    new_clips = seed.clips(rec, [(5.0, 6.0), (0.5, 1.5), (2.0, 3.5)], speech="speech-v2")
    p = plan(repo)
    assert nonzero(p) == {"missing": 3}
    assert [(i.clip_id, i.clip_number) for i in p.items] == [
        (new_clips[1], 1),
        (new_clips[2], 2),
        (new_clips[0], 3),
    ]
    assert {i.clip_params_hash for i in p.items} == {sha("speech-v2")}


def test_retired_avatars_are_not_planned_until_reactivated(repo: LineageRepository, archive: Archive) -> None:
    set_avatar_active(repo, "nova", False)
    assert nonzero(plan(repo)) == {"done": 5}
    assert {i.avatar_name for i in plan(repo).items} == {"astro"}
    set_avatar_active(repo, "nova", True)
    assert nonzero(plan(repo)) == {"done": 10}


def test_counts_and_table(repo: LineageRepository, archive: Archive) -> None:
    seed = archive.seed
    silent, _ = seed.recording("silent", spans=[])
    seed.avatar("luna")
    p = plan(repo)
    assert list(p.counts()) == list(PLAN_KINDS)
    assert nonzero(p) == {"needs-speech": 1, "missing": 5, "done": 10}
    rows = p.table()
    assert len(rows) == len(p.items)
    assert rows[0] == {
        "kind": "done",
        "recording": archive.recs["a"],
        "source": "2026/05/01/show-a.flv",
        "clip": 1,
        "span": "1.00-4.00 s",
        "avatar": "astro",
        "reason": "up to date",
        "previous_render": archive.renders[(archive.clips["a"][0], "astro")],
    }
    speech_row = next(r for r in rows if r["kind"] == "needs-speech")
    assert speech_row["recording"] == silent and speech_row["clip"] is None and speech_row["span"] is None
    assert speech_row["source"] == "/data/recordings/silent.flv"


def test_planning_writes_nothing(repo: LineageRepository, archive: Archive) -> None:
    seed = archive.seed
    seed.avatar("astro", "v2")
    seed.avatar("luna")
    seed.recording("silent", spans=[])
    rec, clips = seed.recording("flaky", key="2026/05/03/flaky.flv")
    seed.render(rec, clips[0], archive.avatars["nova"], failures=[FFmpegError("exit 1")], succeed=False)
    seed.render(rec, clips[1], archive.avatars["nova"], succeed=False)
    before = table_fingerprint(repo)
    p = plan(repo)
    assert {"needs-speech", "missing", "stale-avatar", "retry", "running", "done"} <= set(nonzero(p))
    plan(repo, backend_version=V13, prefix="2026/", since=datetime(2020, 1, 1), max_attempts=1)
    assert table_fingerprint(repo) == before
    assert before["recordings"][0] == 4 and before["renders"][0] == 12


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.servers)])
def any_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LineageRepository]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    yield repo
    repo.engine.dispose()


def _grow(seed: Seed, avatars: list[int], start: int, count: int) -> None:
    for n in range(start, start + count):
        rec, clips = seed.recording(f"bulk-{n:04d}", key=f"bulk/{n:04d}.flv")
        seed.render(rec, clips[0], avatars[n % 2])  # half the work done, the rest missing


def test_planning_is_batched_whatever_the_archive_size(any_repo: LineageRepository) -> None:
    repo, seed = any_repo, Seed(any_repo)
    avatars = [seed.avatar("astro"), seed.avatar("nova")]
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    def planned_with_statements() -> tuple[ReprocessPlan, int]:
        statements.clear()
        event.listen(repo.engine, "before_cursor_execute", count)
        try:
            p = plan(repo, prefix="bulk/")
        finally:
            event.remove(repo.engine, "before_cursor_execute", count)
        return p, len(statements)

    _grow(seed, avatars, 0, 10)
    plan(repo)  # first use of the pool: connection set-up is not the planner's
    small, small_n = planned_with_statements()
    _grow(seed, avatars, 10, 290)
    large, large_n = planned_with_statements()
    assert len(small.items) == 10 * 2 * 2 and len(large.items) == 300 * 2 * 2
    assert nonzero(large) == {"missing": 900, "done": 300}
    assert large_n == small_n == 7  # recordings, sources, clips, avatars, renders, last errors, exports


def test_renders_lacking_a_current_channel_export_are_stale_exports(
    repo: LineageRepository, archive: Archive
) -> None:
    from talkfactory.infra.lineage.base import Provenance
    from talkfactory.infra.lineage.rows import ExportDetails

    wanted = {"master": "S/master.v1", "youtube": "S/youtube.v2"}
    first = plan(repo, channels=wanted)
    assert pairs(first, "stale-exports") == set(archive.renders)  # nothing exported yet
    assert all("youtube" in i.reason for i in first.items if i.kind == "stale-exports")
    clip, name = next(iter(archive.renders))
    render_id = archive.renders[(clip, name)]
    rec_id = archive.recs["a"] if clip in archive.clips["a"] else archive.recs["b"]

    def export(channel: str, version: str, status: str = "published") -> None:
        repo.record_export(
            render_id=render_id,
            recording_id=rec_id,
            source_object_id=None,
            uri=f"file:///x/{channel}/{version}.mp4",
            etag=None,
            size_bytes=None,
            prov=Provenance(),
            details=ExportDetails(channel=channel, spec_version=version, status=status),
        )

    export("master", "S/master.v1")
    export("youtube", "S/youtube.v1")  # an older spec version: still stale
    assert (clip, name) in pairs(plan(repo, channels=wanted), "stale-exports")
    export("youtube", "S/youtube.v2", status="failed")  # a failed export does not count
    assert (clip, name) in pairs(plan(repo, channels=wanted), "stale-exports")
    export("youtube", "S/youtube.v2")
    now = plan(repo, channels=wanted)
    assert (clip, name) in pairs(now, "done")
    assert (clip, name) not in pairs(now, "stale-exports")
    # Without channels asked for, exports play no part.
    assert pairs(plan(repo), "stale-exports") == set()
