"""RayActorPool on a real local Ray head: resident models across drivers, crash retry, errors, one job
per actor at a time, timeouts, and actors re-made after they died for good."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from talkfactory.errors import (
    ConfigurationError,
    ExecutorTimeoutError,
    NoFaceError,
    PermanentError,
    RunCrashedError,
)
from talkfactory.pipeline.executors.ray_pool import RayActorPool, plan_actors
from tests.fixtures.ray_cluster import RayCluster
from tests.pipeline.executor_targets import SleepJob, SleepResult

SLEEP = "tests.pipeline.executor_targets:load_and_sleep"
FACELESS = "tests.pipeline.executor_targets:faceless"


def _files(root: Path, sub: str, key: str) -> list[Path]:
    return sorted(p for p in (root / sub).glob(f"{key}.*") if not p.name.endswith(".tmp"))


@pytest.fixture
def pool() -> Iterator[list[RayActorPool[SleepJob, SleepResult]]]:
    """Executors made by a test, whose actors are stopped after it (each test has its own pool name)."""
    made: list[RayActorPool[SleepJob, SleepResult]] = []
    yield made
    for ex in made:
        ex.kill_actors()


def _executor(
    cluster: RayCluster, made: list[RayActorPool[SleepJob, SleepResult]], actors: int, target: str = SLEEP
) -> RayActorPool[SleepJob, SleepResult]:
    ex: RayActorPool[SleepJob, SleepResult] = RayActorPool(
        target, address=cluster.address, actors=actors, pool=f"t{uuid.uuid4().hex[:8]}"
    )
    made.append(ex)
    return ex


# -- pure ---------------------------------------------------------------------------------------


def test_plan_one_actor_per_gpu_or_cpu_slots() -> None:
    assert plan_actors({"CPU": 16, "GPU": 2}, None, 1).count == 2
    assert plan_actors({"CPU": 16, "GPU": 2}, None, 1).num_gpus == 1
    cpu = plan_actors({"CPU": 4}, 2, 2)
    assert (cpu.count, cpu.num_gpus, cpu.num_cpus) == (2, 0, 2)
    assert plan_actors({"CPU": 4}, None, 1).count == 1
    with pytest.raises(ConfigurationError, match="3 GPU actors"):
        plan_actors({"CPU": 16, "GPU": 2}, 3, 1)
    with pytest.raises(ConfigurationError, match="CPUs"):
        plan_actors({"CPU": 2}, 3, 1)


def test_a_bad_target_fails_in_the_caller() -> None:
    with pytest.raises(ConfigurationError, match="no_such"):
        RayActorPool("tests.pipeline.executor_targets:no_such")
    with pytest.raises(ConfigurationError, match="cannot import"):
        RayActorPool("tests.no_such_module:f")
    with pytest.raises(ConfigurationError, match="package.module:function"):
        RayActorPool("no_colon")


# -- on a real cluster --------------------------------------------------------------------------

FIRST_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from concurrent.futures import ThreadPoolExecutor
    from talkfactory.pipeline.executors.ray_pool import RayActorPool
    from tests.pipeline.executor_targets import SleepJob
    ex = RayActorPool(sys.argv[1], address=os.environ["TALKFACTORY_RAY_ADDRESS"], actors=2, pool=sys.argv[2])
    jobs = [SleepJob(key=f"first-{i}", evidence=sys.argv[3], work_s=0.3) for i in range(4)]
    with ThreadPoolExecutor(4) as threads:
        print(json.dumps([r.pid for r in threads.map(ex.run, jobs)]))
    """
)


@pytest.mark.servers
def test_models_stay_resident_across_jobs_and_drivers(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    name = f"t{uuid.uuid4().hex[:8]}"
    # A parent flow run in its own process makes the actors, renders, and exits. Its environment has
    # the token file but not RAY_AUTH_MODE: joining by address must still authenticate.
    env = {k: v for k, v in ray_cluster.env().items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_DRIVER, SLEEP, name, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first_pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(first_pids)) == 2, "both actors took jobs"

    # The next parent (this process) finds the same actors by name, models still loaded.
    ex: RayActorPool[SleepJob, SleepResult] = RayActorPool(
        SLEEP, address=ray_cluster.address, actors=2, pool=name
    )
    pool.append(ex)
    jobs = [SleepJob(key=f"second-{i}", evidence=str(tmp_path), work_s=0.3) for i in range(4)]
    with ThreadPoolExecutor(4) as threads:
        results = list(threads.map(ex.run, jobs))
    assert [r.key for r in results] == [j.key for j in jobs]
    assert {r.pid for r in results} == set(first_pids), "the same resident actors"
    infos = ex.actors_info()
    assert sum(i.model_loads for i in infos) == 2, "loads == actors, and the second driver loaded nothing"
    assert sum(i.jobs_done for i in infos) == 8
    assert all(r.model_loads == 1 for r in results)


@pytest.mark.servers
def test_an_actor_killed_mid_job_is_restarted_and_the_job_done_once(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    ex = _executor(ray_cluster, pool, actors=1)
    job = SleepJob(key="victim", evidence=str(tmp_path), work_s=3.0, load_s=0.1)
    box: dict[str, object] = {}

    def call() -> None:
        try:
            box["result"] = ex.run(job, timeout_s=90)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            box["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    t0 = time.monotonic()
    while not _files(tmp_path, "started", "victim") and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    started = _files(tmp_path, "started", "victim")
    assert started, "the job never started"
    victim = int(started[0].read_text())
    assert [i.pid for i in ex.actors_info()] == [victim]
    os.kill(victim, signal.SIGKILL)
    caller.join(timeout=90)
    assert not caller.is_alive(), "run() hung after the actor died"
    assert "error" not in box, box.get("error")
    result = box["result"]
    assert isinstance(result, SleepResult)
    assert result.pid != victim, "the retry ran on the restarted actor"
    assert len(_files(tmp_path, "started", "victim")) == 2, "killed attempt + exactly one retry"
    assert len(_files(tmp_path, "done", "victim")) == 1, "the job completed exactly once"
    (info,) = ex.actors_info()
    assert (info.pid, info.restarted, info.model_loads) == (result.pid, True, 1)


@pytest.mark.servers
def test_a_permanent_error_arrives_as_itself(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    ex = _executor(ray_cluster, pool, actors=1, target=FACELESS)
    with pytest.raises(NoFaceError) as caught:
        ex.run(SleepJob(key="avatar-7", evidence=str(tmp_path)))
    err = caught.value
    assert type(err) is NoFaceError and isinstance(err, PermanentError)
    assert err.subject == "avatar-7"
    assert any("raised in Ray actor" in n for n in getattr(err, "__notes__", []))
    (info,) = ex.actors_info()
    assert (info.jobs_done, info.failures) == (1, 1)


@pytest.mark.servers
def test_never_two_jobs_on_one_actor(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    ex = _executor(ray_cluster, pool, actors=2)
    jobs = [SleepJob(key=f"c{i}", evidence=str(tmp_path), work_s=0.25, load_s=0.05) for i in range(8)]
    with ThreadPoolExecutor(4) as threads:
        list(threads.map(ex.run, jobs))
    spans: dict[int, list[tuple[float, float]]] = {}
    for job in jobs:
        span = json.loads((tmp_path / "spans" / f"{job.key}.json").read_text())
        spans.setdefault(span["pid"], []).append((span["start"], span["end"]))
    assert len(spans) == 2
    for intervals in spans.values():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, f"overlapping jobs on one actor: {intervals}"


@pytest.mark.servers
def test_a_job_past_its_timeout_is_stopped_and_the_actor_serves_again(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    ex = _executor(ray_cluster, pool, actors=1)
    ex.start()
    t0 = time.monotonic()
    with pytest.raises(ExecutorTimeoutError):
        ex.run(SleepJob(key="slow", evidence=str(tmp_path), work_s=4.0, load_s=0.0), timeout_s=1.5)
    assert time.monotonic() - t0 < 10
    after = ex.run(SleepJob(key="next", evidence=str(tmp_path), work_s=0.05, load_s=0.0), timeout_s=60)
    assert after.key == "next"
    time.sleep(3.0)  # past the slow job's end, had it survived or been retried
    assert not _files(tmp_path, "done", "slow")


@pytest.mark.servers
def test_actors_are_made_again_after_they_died_for_good(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    ex = _executor(ray_cluster, pool, actors=1)
    first = ex.run(SleepJob(key="a", evidence=str(tmp_path), work_s=0.0, load_s=0.0))
    # Someone stops the pool for good behind this executor's back.
    other: RayActorPool[SleepJob, SleepResult] = RayActorPool(
        SLEEP, address=ray_cluster.address, pool=ex.pool
    )
    assert other.kill_actors() == 1
    with pytest.raises(RunCrashedError):
        ex.run(SleepJob(key="b", evidence=str(tmp_path), work_s=0.0, load_s=0.0))
    again = ex.run(SleepJob(key="c", evidence=str(tmp_path), work_s=0.0, load_s=0.0), timeout_s=60)
    assert again.pid != first.pid
    # And a new executor (a new process) simply gets a fresh pool under the same names.
    fresh: RayActorPool[SleepJob, SleepResult] = RayActorPool(
        SLEEP, address=ray_cluster.address, actors=1, pool=ex.pool
    )
    assert fresh.run(SleepJob(key="d", evidence=str(tmp_path), work_s=0.0, load_s=0.0)).pid == again.pid


@pytest.mark.servers
def test_the_cluster_report_lists_each_actor_and_what_it_holds(
    ray_cluster: RayCluster,
    pool: list[RayActorPool[SleepJob, SleepResult]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from talkfactory.cli.factory import _print_ray
    from talkfactory.pipeline.executors.ray_status import cluster_report

    ex = _executor(ray_cluster, pool, actors=1)
    result = ex.run(SleepJob(key="r", evidence=str(tmp_path), work_s=0.0, load_s=0.0))
    report = cluster_report(ray_cluster.address)
    assert report.nodes == 1 and report.resources["CPU"] == 4
    (mine,) = [a for a in report.actors if a.name == f"{ex.pool}-0"]
    assert (mine.pid, mine.jobs_done, mine.model_loads, mine.gpu_ids) == (result.pid, 1, 1, ())
    assert _print_ray(ray_cluster.address, ray_cluster.token_path)
    shown = capsys.readouterr().out
    assert f"{ex.pool}-0" in shown and str(result.pid) in shown


@pytest.mark.servers
def test_the_render_executor_has_one_slot_per_actor_and_counts_loads(
    ray_cluster: RayCluster, pool: list[RayActorPool[SleepJob, SleepResult]], tmp_path: Path
) -> None:
    from talkfactory.pipeline.executors.ray_executor import TARGET, RayExecutor

    assert TARGET == "talkfactory.pipeline.jobs.execute:execute_job"
    actors = _executor(ray_cluster, pool, actors=2)
    ex = RayExecutor(actors)  # type: ignore[arg-type]  # the render executor over a test target
    assert (ex.name, ex.slots) == ("ray", 2)
    jobs = [SleepJob(key=f"e{i}", evidence=str(tmp_path), work_s=0.1, load_s=0.0) for i in range(4)]
    with ThreadPoolExecutor(2) as threads:
        list(threads.map(ex.run, jobs))
    assert ex.model_loads() == 2


@pytest.mark.servers
def test_one_actor_per_gpu_each_pinned_to_its_own(tmp_path: Path) -> None:
    """Ray counts GPUs it is told about; a head declaring two (on a machine with none) checks the
    placement and pinning that a GPU host gets from detected devices."""
    import ray

    from talkfactory.factory.ray_head import auth_env, start_head, stop_head
    from tests.fixtures.ray_cluster import REPO

    ray.shutdown()  # leave the session's cluster; the next test joins it again by address
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    head = start_head(tmp_path / "home", num_cpus=2, num_gpus=2, env=env, log_dir=tmp_path, cwd=REPO)
    saved = os.environ.get("RAY_AUTH_TOKEN_PATH")
    os.environ.update(auth_env(head.token_path))
    try:
        ex: RayActorPool[int, str] = RayActorPool(
            "tests.pipeline.executor_targets:cuda_visible", address=head.address, pool="gpu"
        )
        assert ex.size == 2, "one actor per GPU when render_actors is unset"
        with ThreadPoolExecutor(4) as threads:
            seen = set(threads.map(ex.run, range(8)))
        assert seen == {"0", "1"}, "each actor sees only its own GPU"
        assert sorted(i.gpu_ids for i in ex.actors_info()) == [("0",), ("1",)]
        with pytest.raises(ConfigurationError, match="3 GPU actors"):
            RayActorPool(
                "tests.pipeline.executor_targets:cuda_visible", address=head.address, actors=3, pool="g3"
            ).start()
    finally:
        ray.shutdown()
        stop_head(head, grace_s=2)
        if saved is not None:
            os.environ["RAY_AUTH_TOKEN_PATH"] = saved


WRONG_TOKEN = textwrap.dedent(
    """
    import os, sys
    from talkfactory.errors import ConfigurationError
    from talkfactory.pipeline.executors.ray_pool import RayActorPool
    try:
        RayActorPool(sys.argv[1], address=os.environ["TALKFACTORY_RAY_ADDRESS"], pool="never").start()
    except ConfigurationError as exc:
        print("refused:", exc)
    """
)


@pytest.mark.servers
def test_a_wrong_token_is_a_configuration_error_that_does_not_show_it(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    env = {**ray_cluster.env(), "RAY_AUTH_TOKEN_PATH": str(wrong), "RAY_AUTH_MODE": "token"}
    done = subprocess.run(
        [sys.executable, "-c", WRONG_TOKEN, SLEEP], env=env, capture_output=True, text=True, timeout=120
    )
    assert "refused:" in done.stdout and "RAY_AUTH_TOKEN_PATH" in done.stdout, done.stderr[-2000:]
    real = Path(ray_cluster.token_path).read_text()
    assert real not in done.stdout + done.stderr
