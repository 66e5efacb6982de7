"""What the executors' Ray cluster holds: its resources and every talkfactory actor's ``info()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError

from talkfactory.pipeline.executors.ray_actor import ActorInfo
from talkfactory.pipeline.executors.ray_connect import NAMESPACE, connect


@dataclass(frozen=True)
class ClusterReport:
    address: str | None
    nodes: int
    """Nodes alive."""
    resources: dict[str, float]
    """CPU, GPU and memory in the cluster."""
    available: dict[str, float]
    actors: tuple[ActorInfo, ...]
    silent: tuple[str, ...]
    """Named actors that did not answer in time (restarting, or waiting for resources)."""


def cluster_report(address: str | None, timeout_s: float = 10.0) -> ClusterReport:
    """Join the cluster at ``address`` and ask every actor in the talkfactory namespace what it holds."""
    connect(address)
    names = sorted(
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE
    )
    refs: dict[str, Any] = {}
    silent: list[str] = []
    for name in names:
        try:
            refs[name] = ray.get_actor(name, namespace=NAMESPACE).info.remote()
        except (ValueError, RayError, AttributeError):
            silent.append(name)
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    done = set(ready)
    infos = []
    for name, ref in refs.items():
        try:
            if ref not in done:
                raise TimeoutError
            infos.append(ray.get(ref))
        except (TimeoutError, RayError):
            silent.append(name)
    keep = ("CPU", "GPU", "memory")
    return ClusterReport(
        address=address,
        nodes=sum(bool(n.get("Alive")) for n in ray.nodes()),  # type: ignore[no-untyped-call]
        resources={k: v for k, v in ray.cluster_resources().items() if k in keep},  # type: ignore[no-untyped-call]
        available={k: v for k, v in ray.available_resources().items() if k in keep},  # type: ignore[no-untyped-call]
        actors=tuple(sorted(infos, key=lambda i: i.name)),
        silent=tuple(sorted(silent)),
    )
