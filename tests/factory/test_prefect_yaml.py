"""prefect.yaml against the code it deploys: entrypoints, flow names, parameters, pools, schedules."""

from __future__ import annotations

import importlib
import inspect
from datetime import timedelta
from pathlib import Path
from typing import Any

import prefect
import pytest
import yaml
from prefect import Flow
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

from talkfactory.infra.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "prefect.yaml"
DEPLOYMENTS = ("scan-ingest", "process-recording", "nightly-reprocess", "push-live")


def load() -> dict[str, Any]:
    data = yaml.safe_load(PREFECT_YAML.read_text())
    assert isinstance(data, dict)
    return data


def deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in load()["deployments"]}


def entry_flow(entrypoint: str) -> Flow[Any, Any]:
    path, _, func = entrypoint.partition(":")
    assert (REPO / path).is_file(), f"{path} does not exist"
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    obj = getattr(module, func)
    assert isinstance(obj, Flow), f"{entrypoint} is not a Prefect flow"
    return obj


def default(field: str) -> str:
    # The code's default, not whatever the developer's environment overrides it with.
    value = Settings.model_fields[field].default
    assert isinstance(value, str)
    return value


def test_prefect_itself_accepts_the_file() -> None:
    # The model `prefect deploy` parses the file with (3.8.8): unknown shapes fail here, not at deploy.
    model = PrefectYamlModel.model_validate(load())
    assert [d.name for d in model.deployments] == list(DEPLOYMENTS)
    assert model.prefect_version == prefect.__version__


def test_every_entrypoint_is_a_flow_named_after_its_deployment() -> None:
    deps = deployments()
    assert set(deps) == set(DEPLOYMENTS)
    for name, dep in deps.items():
        flow = entry_flow(dep["entrypoint"])
        assert flow.name == name, f"{dep['entrypoint']} is flow {flow.name!r}, deployed as {name!r}"


def test_the_deployment_settings_name_real_deployments() -> None:
    deps = deployments()
    names = {f"{entry_flow(d['entrypoint']).name}/{d['name']}" for d in deps.values()}
    assert default("process_deployment") == "process-recording/process-recording"
    assert default("process_deployment") in names


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_parameters_are_parameters_of_the_flow(name: str) -> None:
    dep = deployments()[name]
    flow = entry_flow(dep["entrypoint"])
    params = dep.get("parameters") or {}
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(params) <= accepted, f"{name}: unknown parameters {set(params) - accepted}"
    if params:
        # Their values pass the flow's own validation (types), as a run created from it would; a
        # deployment without parameters leaves the required ones to each run's caller.
        required = {
            n: ["placeholder"] if str(p.annotation).startswith("list") else "placeholder"
            for n, p in inspect.signature(flow.fn).parameters.items()
            if p.default is inspect.Parameter.empty
        }
        validated = flow.validate_parameters(required | params)
        assert {k: validated[k] for k in params} == params


def test_flows_run_on_the_cpu_pool_and_renders_on_the_ray_actors() -> None:
    deps = deployments()
    assert {dep["work_pool"]["name"] for dep in deps.values()} == {"cpu"}
    assert set(load()["definitions"]["pools"]) == {"cpu"}
    # The deployments that render hand their jobs to the resident actors, not to this process.
    assert deps["process-recording"]["parameters"]["executor"] == "ray"
    assert deps["nightly-reprocess"]["parameters"]["executor"] == "ray"


def test_scan_ingest_runs_every_minute_and_never_overlaps_itself() -> None:
    dep = deployments()["scan-ingest"]
    (schedule,) = dep["schedules"]
    assert "cron" not in schedule and "rrule" not in schedule
    interval = IntervalSchedule(interval=timedelta(seconds=schedule["interval"]))
    assert interval.interval == timedelta(minutes=1)
    limit = dep["concurrency_limit"]
    assert limit["limit"] == 1
    assert ConcurrencyLimitStrategy(limit["collision_strategy"]) == ConcurrencyLimitStrategy.CANCEL_NEW
    assert dep["parameters"]["dispatch"] is True


def test_nightly_reprocess_has_a_cron_schedule_with_a_timezone() -> None:
    dep = deployments()["nightly-reprocess"]
    (schedule,) = dep["schedules"]
    assert schedule.get("timezone"), "a cron without a timezone runs at the server's idea of 02:00"
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    assert cron.timezone == schedule["timezone"]
    limit = dep["concurrency_limit"]
    assert ConcurrencyLimitStrategy(limit["collision_strategy"]) == ConcurrencyLimitStrategy.CANCEL_NEW
    assert dep["parameters"]["dry_run"] is False


def test_process_recording_queues_rather_than_cancels() -> None:
    deps = deployments()
    assert "schedules" not in deps["process-recording"]
    limit = deps["process-recording"]["concurrency_limit"]
    assert ConcurrencyLimitStrategy(limit["collision_strategy"]) == ConcurrencyLimitStrategy.ENQUEUE


def test_runs_start_in_the_project_dir_factory_up_exports() -> None:
    (step,) = load()["pull"]
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == "{{ $TALKFACTORY_PROJECT_DIR }}"
