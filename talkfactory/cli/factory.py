"""``talkfactory factory up|down|status``: the whole factory on this machine.

Registered by ``talkfactory.cli`` with ``add_factory_parser(sub)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from talkfactory.cli.common import console, out


def add_factory_parser(subparsers: Any) -> argparse.ArgumentParser:
    fac: argparse.ArgumentParser = subparsers.add_parser(
        "factory",
        help="run the factory locally: Prefect server, work pools, deployments, workers",
        description="Start or stop a local factory: a Prefect server (or --api-url for yours), the cpu "
        "and gpu process work pools, one concurrency limit per GPU, the zombie-run automation, the "
        "deployments of prefect.yaml, one render worker per GPU and the CPU workers. Logs and pids go "
        "under TALKFACTORY_HOME/factory/.",
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
    up.add_argument("--gpus", type=int, help="render workers (default: one per CUDA device, at least one)")
    up.add_argument("--cpu-workers", type=int, default=1)
    up.add_argument("--heartbeat", type=int, default=30, help="flow-run heartbeat seconds (>= 30)")
    up.add_argument(
        "--zombie-after", type=float, default=90.0, help="seconds without a heartbeat before a run is Crashed"
    )
    up.add_argument("--no-deploy", action="store_true", help="skip `prefect deploy --all`")
    up.add_argument("--project-dir", type=Path, default=Path.cwd(), help="where prefect.yaml is")
    up.set_defaults(fn=cmd_factory_up)
    down = fsub.add_parser("down", help="stop the workers (SIGINT twice, as Prefect wants), then the server")
    down.set_defaults(fn=cmd_factory_down)
    status = fsub.add_parser("status", help="what the factory started and whether it still runs")
    status.set_defaults(fn=cmd_factory_status)
    return fac


def cmd_factory_up(args: argparse.Namespace) -> int:
    from talkfactory.factory.local import UpOptions, up
    from talkfactory.infra.settings import get_settings

    opts = UpOptions(
        project_dir=args.project_dir,
        settings=get_settings(),
        api_url=args.api_url,
        port=args.port,
        prefect_database_url=args.prefect_database_url,
        gpus=args.gpus,
        cpu_workers=args.cpu_workers,
        heartbeat_s=args.heartbeat,
        zombie_after_s=args.zombie_after,
        deploy=not args.no_deploy,
    )
    with console.status("starting the factory (server, pools, limits, automation, deployments, workers) ..."):
        state = up(opts)
    _print(state.api_url, [(p.name, p.role, p.pid, True, p.log) for p in state.procs])
    ui = state.api_url.removesuffix("/api")
    out.print(f"Prefect UI: {ui}   export PREFECT_API_URL={state.api_url}")
    out.print("Drop recordings into the ingest location; scan-ingest picks them up every minute.")
    return 0


def cmd_factory_down(args: argparse.Namespace) -> int:
    from talkfactory.factory.local import down
    from talkfactory.infra.settings import get_settings

    stopped = down(get_settings())
    if not stopped:
        out.print("no factory is running from this home")
    for proc, clean in stopped:
        out.print(f"{proc.name}: {'stopped' if clean else 'killed (did not stop in time)'}")
    return 0


def cmd_factory_status(args: argparse.Namespace) -> int:
    from talkfactory.factory.local import state_file
    from talkfactory.factory.processes import FactoryState, alive
    from talkfactory.infra.settings import get_settings

    state = FactoryState.load(state_file(get_settings()))
    if state is None:
        out.print("no factory is running from this home")
        return 1
    rows = [(p.name, p.role, p.pid, alive(p.pid), p.log) for p in state.procs]
    _print(state.api_url, rows)
    return 0 if all(r[3] for r in rows) else 1


def _print(api_url: str, rows: list[tuple[str, str, int, bool, str]]) -> None:
    table = Table(title=f"factory at {api_url}")
    for col in ("process", "role", "pid", "running", "log"):
        table.add_column(col, overflow="fold")
    for name, role, pid, running, log in rows:
        table.add_row(name, role, str(pid), "[green]yes[/]" if running else "[red]no[/]", log)
    out.print(table)
