"""What a self-hosted Prefect server needs before the factory's deployments can run on it.

Idempotent, so ``factory up`` can run against a server that already has some of it:
the ``cpu`` process work pool, the automation that marks
zombie flow runs Crashed (a self-hosted server has no managed one), and ``prefect deploy --all``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import PREFECT_API_URL, temporary_settings

from talkfactory.errors import ConfigurationError

log = logging.getLogger(__name__)

POOLS = ("cpu",)
"""Every deployment runs on the cpu pool: renders go to Ray actors, not to Prefect workers."""
ZOMBIE_AUTOMATION = "talkfactory: crash zombie flow runs"
_ARMS = frozenset({"prefect.flow-run.heartbeat", "prefect.flow-run.Pending", "prefect.flow-run.Running"})
"""Events after which a run must show life (a heartbeat, Running, or an end) within the window."""


def prefect_exe() -> str:
    """The ``prefect`` CLI of this interpreter's environment (the venv's), else the one on ``PATH``."""
    exe = Path(sys.executable).with_name("prefect")
    return str(exe) if exe.exists() else "prefect"


def prefect_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout_s: float = 180) -> str:
    """Run the ``prefect`` CLI of this interpreter's environment; its output, or a clear error."""
    argv = [prefect_exe(), "--no-prompt", *args]
    done = subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise ConfigurationError(f"`prefect {' '.join(args)}` failed:\n" + "\n".join(tail), subject="factory")
    return done.stdout


def ensure_pools(env: Mapping[str, str], cwd: Path) -> list[str]:
    """Create the process work pools that do not exist yet; the names of those created."""
    made = []
    for pool in POOLS:
        try:
            prefect_cli(["work-pool", "inspect", pool], env, cwd)
        except ConfigurationError:
            prefect_cli(["work-pool", "create", pool, "--type", "process"], env, cwd)
            made.append(pool)
    return made


def ensure_zombie_automation(api_url: str, within_s: float) -> bool:
    """Mark a flow run Crashed when its heartbeats stop for ``within_s``; True when created now.

    Flow runs send a heartbeat every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (at least 30), so
    ``within_s`` must be comfortably more than that, or slow runs would be crashed while alive.
    """
    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            for old in client.read_automations_by_name(ZOMBIE_AUTOMATION):
                trigger = old.trigger
                if trigger.within == timedelta(seconds=within_s) and trigger.after == _ARMS:  # type: ignore[union-attr]
                    return False
                client.delete_automation(old.id)
        _zombie_automation(within_s).create()
    return True


def _zombie_automation(within_s: float) -> Automation:
    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="Flow runs whose heartbeats stopped (their worker or machine died) become Crashed, "
        "so process-recording submits their renders again.",
        trigger=EventTrigger(
            # Prefect's recipe arms only on heartbeats, so a run that dies between starting and its
            # first heartbeat stays Running for ever; arming on Pending and Running too closes that.
            after=set(_ARMS),
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Running",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"no heartbeat for {within_s:.0f} s: its worker or machine is gone",
            )
        ],
    )


def deploy(env: Mapping[str, str], project_dir: Path) -> str:
    """``prefect deploy --all`` from ``project_dir`` (where ``prefect.yaml`` is)."""
    if not (project_dir / "prefect.yaml").is_file():
        raise ConfigurationError(
            "no prefect.yaml here; run from the talkfactory checkout", subject=str(project_dir)
        )
    return prefect_cli(["deploy", "--all"], env, project_dir, timeout_s=300)


def api_env(api_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PREFECT_API_URL"] = api_url
    return env
