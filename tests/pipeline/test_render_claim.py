"""One render key, two processes: the second waits for the first and reuses its result; a killed
owner's row reads as interrupted and can be taken over."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from talkfactory.errors import InterruptedRunError, RenderBusyError
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.pipeline.render_claim import wait_while_rendered_elsewhere
from tests.infra.lineage_seed import PROV, Seed

KEY = "k" * 64

OWNER = textwrap.dedent(
    """
    import sys, time
    from talkfactory.infra.lineage.repository import LineageRepository, Provenance
    repo = LineageRepository.from_url(sys.argv[1])
    rec, av = int(sys.argv[3]), int(sys.argv[4])
    state = repo.begin_render(render_key=sys.argv[2], recording_id=rec, avatar_id=av, clip_id=None,
        backend="weightless", backend_version="w-1", params_hash="p", params={}, prov=Provenance())
    print("claimed", flush=True)
    time.sleep(float(sys.argv[5]))
    repo.finish_render(state.id, output_uri="/out/x.mp4", encoder="libx264", duration_s=1.0, wall_s=0.5,
        stats={}, prov=Provenance())
    """
)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, LineageRepository, int, int]:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    seed = Seed(repo)
    rec, _ = seed.recording("show")
    return url, repo, rec, seed.avatar("host")


def _owner(url: str, rec: int, av: int, hold_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, url, KEY, str(rec), str(av), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    return proc


def _begin(repo: LineageRepository, rec: int, av: int) -> object:
    return repo.begin_render(
        render_key=KEY, recording_id=rec, avatar_id=av, clip_id=None, backend="weightless",
        backend_version="w-1", params_hash="p", params={}, prov=PROV,
    )  # fmt: skip


def test_a_second_process_waits_for_the_owner_then_sees_its_result(setup) -> None:
    url, repo, rec, av = setup
    owner = _owner(url, rec, av, hold_s=2.0)
    try:
        with pytest.raises(RenderBusyError, match="being rendered by process"):
            _begin(repo, rec, av)
        t0 = time.monotonic()
        state = wait_while_rendered_elsewhere(repo, KEY, poll_s=0.1)
        assert state is not None and state.status == "succeeded" and state.output_uri == "/out/x.mp4"
        assert time.monotonic() - t0 > 0.5  # it did wait for the owner
    finally:
        owner.wait(timeout=30)


def test_a_killed_owner_reads_as_interrupted_and_is_taken_over(setup) -> None:
    url, repo, rec, av = setup
    owner = _owner(url, rec, av, hold_s=60.0)
    assert repo.get_render(KEY).status == "running"  # type: ignore[union-attr]
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    assert repo.get_render(KEY).status == "interrupted"  # type: ignore[union-attr]
    assert repo.renders_for_recording(rec)[0].render.status == "interrupted"
    state = wait_while_rendered_elsewhere(repo, KEY, poll_s=0.1)
    assert state is not None and state.status == "interrupted"
    taken = _begin(repo, rec, av)
    assert taken.status == "running" and taken.attempts == 2  # type: ignore[attr-defined]


def test_a_stopped_render_is_recorded_interrupted_not_failed(setup) -> None:
    _, repo, rec, av = setup
    state = _begin(repo, rec, av)
    repo.fail_render(state.id, error=InterruptedRunError("interrupted (SIGINT)", subject="x.mp4"), prov=PROV)  # type: ignore[attr-defined]
    row = repo.renders_for_recording(rec)[0].render
    assert row.status == "interrupted" and "SIGINT" in (row.error or "")
    [attempt] = repo.attempts_for("render", row.id)
    assert attempt.status == "interrupted" and attempt.error_type == "InterruptedRunError"
