"""``talkfactory factory up/down``: the whole factory on one machine, for trying it and for tests.

``up`` starts a Prefect server (unless given one), creates the ``cpu`` work pool and the zombie
automation, deploys ``prefect.yaml``, starts a local Ray instance for the render executors (unless
given a cluster) and the Prefect workers. Renders do not run in Prefect workers: each job is handed
to a resident Ray actor, one per GPU (``num_gpus=1``: Ray's GPU accounting replaced the per-GPU
Prefect concurrency limit). On a machine without GPUs, ``--gpus N`` asks for N CPU render actors,
which is how the tests run it. The workers get the cluster's address (``TALKFACTORY_RAY_ADDRESS``)
and token file; given a Ray address (``--ray-address`` or ``TALKFACTORY_RAY_ADDRESS``) ``up`` uses that
cluster and starts none.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from talkfactory.factory.bootstrap import (
    api_env,
    deploy,
    ensure_pools,
    ensure_zombie_automation,
    prefect_exe,
)
from talkfactory.factory.notify import ensure_notify_automation
from talkfactory.factory.processes import FactoryState, Proc, alive, start, stop, wait_healthy
from talkfactory.factory.ray_head import auth_env, head_running, start_head, stop_head
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class UpOptions:
    project_dir: Path
    settings: Settings
    api_url: str | None = None
    """Use this Prefect server instead of starting one."""
    port: int = 4200
    prefect_database_url: str | None = None
    """The started server's database (``postgresql+asyncpg://...``); SQLite under home when None.
    SQLite serialises every write, so with many workers its event consumers hit "database is locked";
    use Postgres for anything beyond a trial."""
    gpus: int | None = None
    """Render executors (Ray actors, ``TALKFACTORY_RENDER_ACTORS``): one per GPU of the cluster when
    None; on a machine without GPUs, this many CPU actors (one when None)."""
    cpu_workers: int = 1
    cpu_run_limit: int = 8
    heartbeat_s: int = 30
    zombie_after_s: float = 90.0
    query_s: float = 2.0
    """How often workers poll for runs; Prefect's default of 10 s adds ~5 s to every render."""
    deploy: bool = True
    ray_address: str | None = None
    """Use this Ray cluster (``host:port``) instead of starting one; else ``settings.ray_address``."""
    ray_cpus: int | None = None
    """CPUs the started Ray head offers its actors; this machine's count when None."""
    web_port: int | None = None
    """Start the operator's page (``talkfactory web``) on this port beside the workers; None: not."""
    web_host: str = "127.0.0.1"


def state_file(settings: Settings) -> Path:
    return settings.home.resolve() / "factory" / "state.json"


def cuda_devices() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def up(opts: UpOptions) -> FactoryState:
    """Start (or complete) the factory; returns what runs, also saved for ``down``."""
    home = opts.settings.home.resolve()
    logs = home / "factory" / "logs"
    previous = FactoryState.load(state_file(opts.settings))
    if previous and (
        any(alive(p.pid) for p in previous.procs) or (previous.ray and head_running(previous.ray))
    ):
        raise RuntimeError(
            f"a factory is already running from {state_file(opts.settings)}; `factory down` first"
        )
    base = dict(os.environ)
    base.setdefault("PREFECT_HOME", str(home / "factory" / "prefect"))
    base["TALKFACTORY_HOME"] = str(home)
    base["TALKFACTORY_PROJECT_DIR"] = str(opts.project_dir.resolve())
    base.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Our modules log through stdlib logging; this routes them (ffmpeg failures included) to run logs.
    base.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "talkfactory")
    if opts.prefect_database_url:
        base["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = opts.prefect_database_url
    state = FactoryState(api_url=opts.api_url or f"http://127.0.0.1:{opts.port}/api")
    try:
        if opts.api_url is None:
            server = start(
                "server",
                "server",
                [prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(opts.port)],
                {k: v for k, v in base.items() if k != "PREFECT_API_URL"},
                logs,
                opts.project_dir,
            )
            state.procs.append(server)
            state.save(state_file(opts.settings))
            log.info("Prefect server up in %.1f s", wait_healthy(state.api_url, 90, server))
        else:
            wait_healthy(state.api_url, 30)
        _start_ray(opts, state, base, cuda_devices(), logs)
        env = api_env(state.api_url, base)
        # Migrations belong to deploying, not to each run: workers refuse a schema behind the code.
        upgrade(opts.settings.resolved_database_url)
        ensure_pools(env, opts.project_dir)
        ensure_zombie_automation(state.api_url, opts.zombie_after_s)
        if opts.settings.notify_block:
            ensure_notify_automation(state.api_url, opts.settings.notify_block)
        if opts.deploy:
            deploy(env, opts.project_dir)
        worker_env = {
            **env,
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(opts.heartbeat_s),
            "PREFECT_WORKER_QUERY_SECONDS": str(opts.query_s),
        }
        for i in range(opts.cpu_workers):
            name = f"cpu-{i}"
            state.procs.append(
                start(
                    name,
                    "cpu-worker",
                    _worker_argv("cpu", name, opts.cpu_run_limit),
                    {**worker_env, "TALKFACTORY_WORKER": name},
                    logs,
                    opts.project_dir,
                )
            )
        if opts.web_port is not None:
            state.procs.append(_start_web(opts, env, logs, state.api_url))
        state.save(state_file(opts.settings))
    except BaseException:
        for p in reversed(state.procs):
            if p.role != "server":
                stop(p)
        if state.ray:
            stop_head(state.ray, grace_s=2)
        for p in state.procs:
            if p.role == "server":
                stop(p)
        state_file(opts.settings).unlink(missing_ok=True)
        raise
    return state


def _start_ray(opts: UpOptions, state: FactoryState, base: dict[str, str], gpus: int, logs: Path) -> None:
    """Start the factory's Ray head unless a cluster is given; either way, put its address (and the
    token file of one started here) in ``base``, the environment every worker gets."""
    if opts.gpus is not None:
        base["TALKFACTORY_RENDER_ACTORS"] = str(opts.gpus)
    given = opts.ray_address or opts.settings.ray_address
    if given:
        state.ray_address = given
    else:
        # Enough CPU slots for the CPU actors asked for, even on a machine with fewer cores: a CPU
        # actor without its slots would never be placed, and every job sent to it would wait.
        wanted = 0 if gpus else math.ceil((opts.gpus or 1) * opts.settings.render_actor_cpus)
        head = start_head(
            opts.settings.home.resolve(),
            num_cpus=opts.ray_cpus or max(os.cpu_count() or 1, wanted),
            num_gpus=gpus,
            # Actors import the checkout the deployments run from, not whatever is installed.
            env={
                **base,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(opts.project_dir.resolve()), base.get("PYTHONPATH")])
                ),
            },
            log_dir=logs,
            cwd=opts.project_dir,
        )
        state.ray, state.ray_address = head, head.address
        state.save(state_file(opts.settings))
        base.update(auth_env(head.token_path))
        log.info("Ray head up at %s", head.address)
    base["TALKFACTORY_RAY_ADDRESS"] = state.ray_address


def down(settings: Settings, grace_s: float = 20.0) -> list[tuple[Proc, bool]]:
    """Stop workers first (so no run starts on a dying server), then the Ray head (its actors and the
    models they hold go with it), then the server. A Ray cluster given to ``up`` is left running."""
    state = FactoryState.load(state_file(settings))
    if state is None:
        return []
    workers = [p for p in state.procs if p.role != "server"]
    stopped = [(p, stop(p, grace_s)) for p in workers]
    if state.ray:
        head = state.ray
        clean = stop_head(head, grace_s=min(grace_s, 3.0))
        stopped.append((Proc(name="ray-head", pid=head.session, log=head.log, role="ray-head"), clean))
    stopped += [(p, stop(p, grace_s)) for p in state.procs if p.role == "server"]
    state_file(settings).unlink(missing_ok=True)
    return stopped


def _start_web(opts: UpOptions, env: dict[str, str], logs: Path, api_url: str) -> Proc:
    """``talkfactory web`` as its own process (its token, if any, comes from the environment)."""
    assert opts.web_port is not None
    argv = [
        sys.executable,
        "-m",
        "talkfactory.cli",
        "web",
        "--host",
        opts.web_host,
        "--port",
        str(opts.web_port),
    ]
    web_env = {**env, "PREFECT_UI_URL": api_url.removesuffix("/api")}
    web = start("web", "web", argv, web_env, logs, opts.project_dir)
    host = "127.0.0.1" if opts.web_host in ("0.0.0.0", "::") else opts.web_host
    wait_healthy(f"http://{host}:{opts.web_port}", 60, web)
    return web


def _worker_argv(pool: str, name: str, limit: int) -> list[str]:
    return [
        prefect_exe(),
        "worker",
        "start",
        "--pool",
        pool,
        "--name",
        name,
        "--limit",
        str(limit),
        "--type",
        "process",
    ]
