"""The resident executor: a Ray actor that runs ``fn(job, cache)`` for every job it is given.

The actor keeps ``cache`` for its whole life, so the job function loads a backend into it once and
later jobs find it there; it counts those loads in ``cache["model_loads"]``, which ``info()`` reports
beside the actor's own counters. ``info()`` runs in a concurrency group of its own, so it answers while
a job holds the actor (the default group admits one job at a time).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray

from talkfactory.pipeline.executors.target import JobFn, load_target

INFO_GROUP = "info"


@dataclass(frozen=True)
class ActorInfo:
    """What one executor actor holds and has done (since its process started)."""

    name: str
    target: str
    pid: int
    host: str
    node_id: str
    gpu_ids: tuple[str, ...]
    """Ray's GPU ids for this actor (``CUDA_VISIBLE_DEVICES`` inside it); empty on CPU actors."""
    jobs_done: int
    failures: int
    """Jobs among ``jobs_done`` that raised."""
    model_loads: int
    """``cache["model_loads"]`` as the job function counts it."""
    busy_s: float
    """Seconds spent inside the job function."""
    busy: bool
    started_at: float
    """Unix time this actor process started (a restart after a crash starts it again)."""
    restarted: bool
    """True when Ray restarted this actor after its process died."""


class ExecutorActor:
    """Made a Ray actor by ``ray_pool`` (``ray.remote(ExecutorActor).options(...)``)."""

    def __init__(self, name: str, target: str) -> None:
        self._name = name
        self._target = target
        self._fn: JobFn | None = None
        self._cache: dict[str, Any] = {}
        self._jobs = 0
        self._failures = 0
        self._busy_s = 0.0
        self._running_since: float | None = None
        self._started_at = time.time()
        self._lock = threading.Lock()

    def run(self, job: Any) -> Any:
        # The import happens at the first job rather than in __init__: a creation-time failure would
        # leave a dead actor behind its name, while here it is the job's ConfigurationError.
        if self._fn is None:
            self._fn = load_target(self._target)
        t0 = time.monotonic()
        with self._lock:
            self._running_since = t0
        try:
            return self._fn(job, self._cache)
        except BaseException:
            with self._lock:
                self._failures += 1
            raise
        finally:
            with self._lock:
                self._jobs += 1
                self._busy_s += time.monotonic() - t0
                self._running_since = None

    @ray.method(concurrency_group=INFO_GROUP)
    def info(self) -> ActorInfo:
        ctx = ray.get_runtime_context()
        with self._lock:
            busy_s = self._busy_s
            if self._running_since is not None:
                busy_s += time.monotonic() - self._running_since
            return ActorInfo(
                name=self._name,
                target=self._target,
                pid=os.getpid(),
                host=socket.gethostname(),
                node_id=ctx.get_node_id(),
                gpu_ids=tuple(str(g) for g in ray.get_gpu_ids()),
                jobs_done=self._jobs,
                failures=self._failures,
                model_loads=int(self._cache.get("model_loads", 0)),
                busy_s=busy_s,
                busy=self._running_since is not None,
                started_at=self._started_at,
                restarted=bool(ctx.was_current_actor_reconstructed),
            )
