"""``RayExecutor``: render jobs on the resident Ray actors, the factory's executor.

Each actor runs ``pipeline.jobs.execute.execute_job(job, cache)`` with a cache it keeps for its whole
life, so the backend loads once per actor (per GPU), not per render, and stays loaded across parent
flow runs. Actors read their settings (stores, lineage database, backend, checkpoint) from the
environment of the Ray node they run on, i.e. that of ``ray start`` on each host (``factory up``
passes its own). See ``ray_pool`` for placement, crash and timeout semantics.
"""

from __future__ import annotations

from talkfactory.infra.settings import Settings, get_settings
from talkfactory.pipeline.executors.ray_actor import ActorInfo
from talkfactory.pipeline.executors.ray_pool import RayActorPool
from talkfactory.pipeline.jobs.model import JobResult, RenderJob
from talkfactory.pipeline.render import ProgressFn

TARGET = "talkfactory.pipeline.jobs.execute:execute_job"


class RayExecutor:
    """Hands each job to a free render actor and blocks until its row (or its own exception) is back."""

    name = "ray"

    def __init__(self, pool: RayActorPool[RenderJob, JobResult]) -> None:
        self.pool = pool
        pool.start()  # no cluster, or too few GPUs for the actors: a setup error, raised here
        self.slots = pool.size
        """Jobs rendering at once: one per actor."""

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RayExecutor:
        """``TALKFACTORY_RAY_ADDRESS``, ``_RENDER_ACTORS``, ``_RENDER_ACTOR_CPUS``, ``_RENDER_TIMEOUT_S``."""
        s = settings or get_settings()
        return cls(
            RayActorPool(
                TARGET,
                address=s.ray_address,
                actors=s.render_actors,
                cpus_per_actor=s.render_actor_cpus,
                timeout_s=s.render_timeout_s,
            )
        )

    def run(self, job: RenderJob, progress: ProgressFn | None = None) -> JobResult:
        """The job's row. ``progress`` is not reported: the render runs in another process."""
        return self.pool.run(job)

    def model_loads(self) -> int:
        """Backend loads over all actors since each (re)started."""
        return sum(i.model_loads for i in self.pool.actors_info())

    def actors_info(self) -> list[ActorInfo]:
        return self.pool.actors_info()
