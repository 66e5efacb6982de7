"""``talkfactory factory up|down|status``: the whole factory on this machine.

Registered by ``talkfactory.cli`` with ``add_factory_parser(sub)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from talkfactory.cli.common import console, out

if TYPE_CHECKING:
    from talkfactory.infra.settings import Settings


def add_factory_parser(subparsers: Any) -> argparse.ArgumentParser:
    fac: argparse.ArgumentParser = subparsers.add_parser(
        "factory",
        help="run the factory locally: Prefect server, work pool, deployments, workers, Ray",
        description="Start or stop a local factory: a Prefect server (or --api-url for yours), the cpu "
        "process work pool, the zombie-run automation, the deployments of prefect.yaml, the Prefect "
        "workers, and a local Ray instance (or --ray-address for yours) whose actors render, one per "
        "GPU with the model kept loaded. Logs and pids go under TALKFACTORY_HOME/factory/.",
    )
    fsub = fac.add_subparsers(dest="factory_command", required=True)
    up = fsub.add_parser("up", help="start everything (idempotent against an existing server)")
    up.add_argument(
        "--api-url", help="use this Prefect server (http://host:4200/api) instead of starting one"
    )
    up.add_argument("--port", type=int, default=4200, help="port of the server started here")
    up.add_argument(
        "--prefect-database-url",
        help="Postgres for the server started here (postgresql+asyncpg://user@host/db); SQLite when unset",
    )
    up.add_argument(
        "--gpus",
        type=int,
        help="render actors (default: one per GPU in the Ray cluster; without GPUs, this many CPU actors, 1)",
    )
    up.add_argument("--cpu-workers", type=int, default=1)
    up.add_argument("--heartbeat", type=int, default=30, help="flow-run heartbeat seconds (>= 30)")
    up.add_argument(
        "--zombie-after", type=float, default=90.0, help="seconds without a heartbeat before a run is Crashed"
    )
    up.add_argument("--no-deploy", action="store_true", help="skip `prefect deploy --all`")
    up.add_argument(
        "--ray-address",
        help="use this Ray cluster (host:6379) for the render executors instead of starting a local "
        "one (default: TALKFACTORY_RAY_ADDRESS)",
    )
    up.add_argument("--ray-cpus", type=int, help="CPUs the local Ray instance offers (default: all)")
    up.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="where prefect.yaml is (this folder, else the checkout)",
    )
    up.add_argument(
        "--web",
        nargs="?",
        type=int,
        const=8470,
        metavar="PORT",
        help="also start the operator's page (talkfactory web) on PORT (8470)",
    )
    up.add_argument(
        "--web-host",
        default="127.0.0.1",
        help="address the page binds (off loopback it needs TALKFACTORY_WEB_TOKEN)",
    )
    up.set_defaults(fn=cmd_factory_up)
    down = fsub.add_parser(
        "down",
        help="stop the workers (SIGINT twice, as Prefect wants), the Ray instance started here, the server",
    )
    down.set_defaults(fn=cmd_factory_down)
    status = fsub.add_parser(
        "status", help="what the factory started, whether it still runs, and the Ray cluster's render actors"
    )
    status.set_defaults(fn=cmd_factory_status)
    return fac


def cmd_factory_up(args: argparse.Namespace) -> int:
    from talkfactory.factory.local import UpOptions, up
    from talkfactory.infra.settings import get_settings

    if args.web is not None:
        from talkfactory.web.auth import token_needed

        token = get_settings().web_token
        # Refuse before starting anything, not after the workers are up.
        token_needed(args.web_host, token.get_secret_value() if token else None)
    from talkfactory.factory.whereabouts import default_project_dir, remember

    project_dir = (args.project_dir or default_project_dir()).resolve()
    opts = UpOptions(
        project_dir=project_dir,
        settings=get_settings(),
        api_url=args.api_url,
        port=args.port,
        prefect_database_url=args.prefect_database_url,
        gpus=args.gpus,
        cpu_workers=args.cpu_workers,
        heartbeat_s=args.heartbeat,
        zombie_after_s=args.zombie_after,
        deploy=not args.no_deploy,
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
        web_port=args.web,
        web_host=args.web_host,
    )
    with console.status("starting the factory (server, pools, limits, automation, deployments, workers) ..."):
        state = up(opts)
    remember(opts.settings.home, project_dir)  # so `factory status`/`down` work from any folder
    rows = [(p.name, p.role, p.pid, True, p.log) for p in state.procs]
    if state.ray:
        rows.append(("ray-head", "ray-head", state.ray.session, True, state.ray.log))
    _print(state.api_url, rows)
    ui = state.api_url.removesuffix("/api")
    out.print(f"Prefect UI: {ui}   export PREFECT_API_URL={state.api_url}")
    if state.ray_address:
        owned = "started here" if state.ray else "given"
        out.print(f"Ray ({owned}): export TALKFACTORY_RAY_ADDRESS={state.ray_address}")
    if args.web is not None:
        out.print(f"Operator's page: http://{args.web_host}:{args.web}/")
    out.print("Drop recordings into the ingest location; scan-ingest picks them up every minute.")
    return 0


def cmd_factory_down(args: argparse.Namespace) -> int:
    from talkfactory.factory.local import down
    from talkfactory.factory.whereabouts import forget

    settings = factory_settings()
    stopped = down(settings)
    forget(settings.home)
    if not stopped:
        out.print("no factory is running from this home")
    for proc, clean in stopped:
        out.print(f"{proc.name}: {'stopped' if clean else 'killed (did not stop in time)'}")
    return 0


def factory_settings() -> Settings:
    """This home's settings, or, when no factory runs from it, those of the one ``up`` recorded."""
    from talkfactory.factory.local import state_file
    from talkfactory.factory.whereabouts import recalled
    from talkfactory.infra.settings import Settings, get_settings

    settings = get_settings()
    if state_file(settings).is_file():
        return settings
    found = recalled()
    if found is None or not state_file(Settings(home=found.home)).is_file():
        return settings
    out.print(f"the factory started from {found.project_dir} (home {found.home})")
    return Settings(home=found.home)


def cmd_factory_status(args: argparse.Namespace) -> int:
    from talkfactory.factory.local import state_file
    from talkfactory.factory.processes import FactoryState, alive
    from talkfactory.factory.ray_head import head_running

    settings = factory_settings()
    state = FactoryState.load(state_file(settings))
    if state is None:
        out.print("no factory is running from this home")
        return 1
    rows = [(p.name, p.role, p.pid, alive(p.pid), p.log) for p in state.procs]
    if state.ray:
        rows.append(("ray-head", "ray-head", state.ray.session, head_running(state.ray), state.ray.log))
    _print(state.api_url, rows)
    server_ok = _print_health(state.api_url, settings)
    ray_ok = _print_ray(state.ray_address, state.ray.token_path if state.ray else None)
    return 0 if all(r[3] for r in rows) and ray_ok and server_ok else 1


def _print_health(api_url: str, settings: Settings) -> bool:
    """Server health, queued and running work, the last scan, the last failures; False when unhealthy."""
    from talkfactory.errors import TalkfactoryError
    from talkfactory.factory.health import factory_health
    from talkfactory.infra.lineage.repository import LineageRepository

    try:
        repo: LineageRepository | None = LineageRepository.from_url(settings.resolved_database_url)
    except TalkfactoryError:
        repo = None
    h = factory_health(api_url, repo)
    server = "[green]healthy[/]" if h.server_ok else f"[red]not answering[/] ({h.server_error})"
    out.print(f"Prefect server: {server}")
    if h.server_ok:
        out.print(
            f"flow runs: {h.queued_runs} queued (scheduled or pending), {h.running_runs} running; "
            f"renders running (lineage): {h.renders_running}"
        )
        if h.last_scan is None:
            out.print("last scan: none yet")
        else:
            s = h.last_scan
            when = f"{s.start_time:%Y-%m-%d %H:%M:%S}" if s.start_time else "not started"
            out.print(f"last scan: {s.name} at {when}: {s.state}" + (f" ({s.message})" if s.message else ""))
    if h.failures:
        table = Table(title="last failures (lineage)")
        for col in ("when", "what", "subject", "error"):
            table.add_column(col, overflow="fold")
        for f in h.failures:
            table.add_row(f"{f.at:%Y-%m-%d %H:%M:%S}" if f.at else "", f.what, f.subject, f.error or "")
        out.print(table)
    return h.server_ok


def _print_ray(address: str | None, token_path: str | None) -> bool:
    """The Ray cluster's resources and each executor actor's state; False when it cannot be reached."""
    import os

    from talkfactory.errors import TalkfactoryError
    from talkfactory.factory.ray_head import auth_env

    if not address:
        return True
    if token_path:
        os.environ.update(auth_env(token_path))
    from talkfactory.pipeline.executors.ray_status import cluster_report

    try:
        report = cluster_report(address)
    except TalkfactoryError as exc:
        out.print(f"[red]Ray cluster {address}: {exc}[/]")
        return False
    res = ", ".join(
        f"{k} {report.available.get(k, 0):g}/{v:g} free"
        for k, v in sorted(report.resources.items())
        if k != "memory"
    )
    table = Table(title=f"Ray cluster at {address}: {report.nodes} node(s), {res}")
    for col in ("actor", "pid", "host", "gpu", "jobs", "failed", "model loads", "busy s", "state", "target"):
        table.add_column(col, overflow="fold")
    for a in report.actors:
        state = "busy" if a.busy else "idle"
        if a.restarted:
            state += " (restarted)"
        table.add_row(
            a.name,
            str(a.pid),
            a.host,
            ",".join(a.gpu_ids) or "-",
            str(a.jobs_done),
            str(a.failures),
            str(a.model_loads),
            f"{a.busy_s:.1f}",
            state,
            a.target,
        )
    for name in report.silent:
        table.add_row(name, "-", "-", "-", "-", "-", "-", "-", "[yellow]not answering[/]", "")
    out.print(table)
    return True


def _print(api_url: str, rows: list[tuple[str, str, int, bool, str]]) -> None:
    table = Table(title=f"factory at {api_url}")
    for col in ("process", "role", "pid", "running", "log"):
        table.add_column(col, overflow="fold")
    for name, role, pid, running, log in rows:
        table.add_row(name, role, str(pid), "[green]yes[/]" if running else "[red]no[/]", log)
    out.print(table)
