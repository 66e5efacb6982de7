"""``RayActorPool``: jobs dispatched to named, detached Ray actors that keep their models resident.

One actor per GPU (``num_gpus=1``: Ray's GPU accounting is the GPU limit), or on a cluster without
GPUs ``TALKFACTORY_RENDER_ACTORS`` CPU actors of ``TALKFACTORY_RENDER_ACTOR_CPUS`` slots each. Actors
are named ``<pool>-<i>`` in the ``talkfactory`` namespace and got-or-created by name, so every process
that submits (two parent flow runs, a rerun after a crash) shares the same actors and the models they
hold. Each executor keeps a queue of its idle actors: a job takes a free actor or waits for one, so a
thread pool of callers never stacks two jobs on one actor while another idles. (Two processes do not
see each other's queues; an actor then runs their jobs one after the other, ``max_concurrency=1``.)

Crash semantics: an actor whose process dies is restarted by Ray (``max_restarts=-1``) and the job it
was running is sent to it once more (``max_task_retries=1``); if that dies too, ``run`` raises
``RunCrashedError`` (transient). A job's own exception comes back as itself, so a ``PermanentError``
stays permanent. A job past its timeout is cancelled (not retried) and its actor restarted, which
frees the GPU for the next job; ``run`` then raises ``ExecutorTimeoutError``.

Actors keep the code they started with: after deploying new code, stop them (``kill_actors`` or
``factory down``), and the next job starts new ones.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import (
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayActorError,
    RayError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)

from talkfactory.errors import (
    ConfigurationError,
    ExecutorTimeoutError,
    ExecutorUnavailableError,
    RunCrashedError,
)
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.executors.ray_actor import INFO_GROUP, ActorInfo, ExecutorActor
from talkfactory.pipeline.executors.ray_connect import NAMESPACE, connect
from talkfactory.pipeline.executors.target import load_target

Handle = Any
"""A Ray actor handle (Ray's own type is generic over the class and untyped for its methods)."""
J = TypeVar("J")
R = TypeVar("R")

DEFAULT_POOL = "render"
PLACEMENT_TIMEOUT_S = 120.0
"""How long starting waits for its actors to be placed and answer (a GPU held elsewhere never frees)."""
KILL_WAIT_S = 30.0
_CRASHES = (RayActorError, WorkerCrashedError, NodeDiedError, OutOfMemoryError, ObjectLostError)
"""Ray errors meaning the process under the job went away, not that the job failed."""


@dataclass(frozen=True)
class ActorSpec:
    """How many actors a pool has and what each reserves."""

    count: int
    num_gpus: int
    num_cpus: float


def plan_actors(cluster: dict[str, float], requested: int | None, cpus_per_actor: float) -> ActorSpec:
    """One actor per GPU in the cluster (or ``requested``); CPU actors when it has no GPUs.

    Asking for more than the cluster holds is a configuration error: the extra actors would wait
    for resources for ever, and so would every job sent to them.
    """
    gpus = int(cluster.get("GPU", 0))
    cpus = float(cluster.get("CPU", 0))
    if gpus:
        count = requested or gpus
        if count > gpus:
            raise ConfigurationError(
                f"{count} GPU actors asked for, the cluster has {gpus} GPUs", subject="render_actors"
            )
        return ActorSpec(count=count, num_gpus=1, num_cpus=min(cpus_per_actor, cpus / count))
    count = requested or 1
    if count * cpus_per_actor > cpus:
        raise ConfigurationError(
            f"{count} actors x {cpus_per_actor:g} CPUs asked for, the cluster has {cpus:g} CPUs",
            subject="render_actors",
        )
    return ActorSpec(count=count, num_gpus=0, num_cpus=cpus_per_actor)


@dataclass
class _Slot:
    name: str
    handle: Handle


class RayActorPool(Generic[J, R]):
    """``run(job)`` on a free resident actor that calls ``target(job, cache)``; thread-safe."""

    def __init__(
        self,
        target: str,
        *,
        address: str | None = None,
        actors: int | None = None,
        cpus_per_actor: float = 1.0,
        pool: str = DEFAULT_POOL,
        timeout_s: float | None = None,
    ) -> None:
        load_target(target)  # a typo fails here, in the caller, not on a remote actor
        self.target = target
        self.address = address
        self.pool = pool
        self.timeout_s = timeout_s
        self._requested = actors
        self._cpus_per_actor = cpus_per_actor
        self._slots: list[_Slot] = []
        self._idle: queue.Queue[_Slot] = queue.Queue()
        self._spec: ActorSpec | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, target: str, settings: Settings, *, pool: str = DEFAULT_POOL, timeout_s: float | None = None
    ) -> RayActorPool[J, R]:
        return cls(
            target,
            address=settings.ray_address,
            actors=settings.render_actors,
            cpus_per_actor=settings.render_actor_cpus,
            pool=pool,
            timeout_s=timeout_s,
        )

    @property
    def size(self) -> int:
        """Number of actors (starts them if needed)."""
        self.start()
        return len(self._slots)

    def start(self) -> ActorSpec:
        """Join the cluster and get or create the actors; idempotent, and done by the first ``run``."""
        with self._lock:
            if self._spec is not None:
                return self._spec
            connect(self.address)
            spec = plan_actors(_cluster_resources(), self._requested, self._cpus_per_actor)
            slots = [_Slot(name, self._get_or_create(name, spec)) for name in self._names(spec.count)]
            infos = self._ask([s.handle for s in slots], PLACEMENT_TIMEOUT_S)
            wrong = [i for i in infos if i.target != self.target]
            if wrong:
                raise ConfigurationError(
                    f"actor {wrong[0].name} runs {wrong[0].target}, not {self.target}: stop the old "
                    "actors (`talkfactory factory down`, or RayActorPool.kill_actors) or use another pool",
                    subject=self.pool,
                )
            self._slots = slots
            for slot in slots:
                self._idle.put(slot)
            self._spec = spec
            return spec

    def run(self, job: J, timeout_s: float | None = None) -> R:
        """The job's result from a free actor, or the job's own exception.

        ``timeout_s`` (else the executor's) covers waiting for a free actor and the job itself.
        Raises ``RunCrashedError`` when the actor died under the job twice (Ray retries once),
        ``ExecutorTimeoutError`` past the timeout.
        """
        self.start()
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = None if limit is None else time.monotonic() + limit
        try:
            slot = self._idle.get(timeout=limit)
        except queue.Empty:
            raise ExecutorTimeoutError(
                f"no free executor within {limit:.0f} s ({len(self._slots)} busy)", subject=self.pool
            ) from None
        try:
            ref: Any = slot.handle.run.remote(job)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return ray.get(ref, timeout=left)  # type: ignore[no-any-return]
            except GetTimeoutError:
                # Cancelled actor tasks are not retried; the kill stops the job (a sync actor cannot
                # be interrupted) and Ray restarts the actor for the next job.
                ray.cancel(ref)
                ray.kill(slot.handle, no_restart=False)
                raise ExecutorTimeoutError(
                    f"job ran past {limit:.0f} s on {slot.name}; it was stopped and the actor restarted",
                    subject=self.pool,
                ) from None
            except RayTaskError as err:
                raise _unwrap(err, slot.name) from None
            except _CRASHES as err:
                # A permanently dead actor (killed with no_restart, or its node gone for good) gives
                # up its name; the next job gets a new actor under it.
                self._replace(slot)
                raise RunCrashedError(
                    f"executor {slot.name} died under the job (retried once): {type(err).__name__}",
                    subject=self.pool,
                ) from None
            except TaskCancelledError:
                raise ExecutorTimeoutError(f"job on {slot.name} was cancelled", subject=self.pool) from None
        finally:
            self._idle.put(slot)

    def actors_info(self, timeout_s: float = 10.0) -> list[ActorInfo]:
        """What each actor of this pool holds; an actor that does not answer in time is left out."""
        self.start()
        return self._ask([s.handle for s in self._slots], timeout_s, partial=True)

    def kill_actors(self) -> int:
        """Stop this pool's actors for good (their models go with them), whichever process made
        them; the next ``run`` makes new ones. The number stopped."""
        with self._lock:
            connect(self.address)
            killed = []
            for entry in ray.util.list_named_actors(all_namespaces=True):
                name = entry["name"]
                if entry["namespace"] != NAMESPACE or not _in_pool(name, self.pool):
                    continue
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                    killed.append(name)
                except ValueError:
                    pass  # gone meanwhile
            # ray.kill returns before the actor is dead; until then its name still finds it, and a
            # get-or-create would hand back the dying actor instead of making a new one.
            deadline = time.monotonic() + KILL_WAIT_S
            while any(_named(n) for n in killed) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._slots = []
            self._idle = queue.Queue()
            self._spec = None
            return len(killed)

    def _names(self, count: int) -> list[str]:
        return [f"{self.pool}-{i}" for i in range(count)]

    def _get_or_create(self, name: str, spec: ActorSpec) -> Handle:
        handle: Handle = (
            _remote_class()
            .options(
                name=name,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                num_gpus=spec.num_gpus,
                num_cpus=spec.num_cpus,
                max_restarts=-1,
                max_task_retries=1,
                max_concurrency=1,
            )
            .remote(name, self.target)
        )
        return handle

    def _replace(self, slot: _Slot) -> None:
        assert self._spec is not None
        try:
            slot.handle = self._get_or_create(slot.name, self._spec)
        except RayError:
            pass  # the cluster itself is in trouble; the next job reports it

    def _ask(self, handles: list[Handle], timeout_s: float, partial: bool = False) -> list[ActorInfo]:
        refs: list[Any] = [h.info.remote() for h in handles]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if len(ready) < len(refs) and not partial:
            raise ExecutorUnavailableError(
                f"{len(refs) - len(ready)} of {len(refs)} actors not placed within {timeout_s:.0f} s: "
                "is the cluster short of GPUs/CPUs (another pool holding them)?",
                subject=self.pool,
            )
        out: list[ActorInfo] = []
        for ref in ready:
            try:
                out.append(ray.get(ref))
            except RayError:
                if not partial:
                    raise
        return sorted(out, key=lambda i: i.name)


def _named(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


def _in_pool(name: str, pool: str) -> bool:
    prefix, _, index = name.rpartition("-")
    return prefix == pool and index.isdigit()


_REMOTE: Any = None


def _remote_class() -> Any:
    """The actor class, made once per process (each ``ray.remote`` would export it again)."""
    global _REMOTE
    if _REMOTE is None:
        # ``info`` answers in a group of its own while a job holds the default one (one at a time).
        remote: Any = ray.remote
        _REMOTE = remote(concurrency_groups={INFO_GROUP: 1})(ExecutorActor)
    return _REMOTE


def _cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]


def _unwrap(err: RayTaskError, where: str) -> BaseException:
    """The job's own exception (Ray wraps it), with the remote traceback as a note."""
    cause = err.cause
    if isinstance(cause, _CRASHES):
        return RunCrashedError(f"executor {where} died under the job: {type(cause).__name__}")
    if isinstance(cause, BaseException) and not isinstance(cause, RayError):
        # str() of Ray's wrapper is the remote traceback (the job's own frames).
        cause.add_note(f"raised in Ray actor {where}:\n{err}")
        return cause
    return err
