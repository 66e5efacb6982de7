"""Executors: what runs render jobs. ``local`` (this process) and ``ray`` (resident actors).

A job runs as ``execute_job(job, cache)``: ``cache`` is a dict the executor keeps alive between jobs
(loaded lip-sync backends, ``model_loads``), so a model is loaded once per executor, not per job.

* ``local.LocalExecutor``: in the calling process.
* ``ray_executor.RayExecutor``: render jobs on ``ray_pool.RayActorPool``, named, detached Ray actors
  (one per GPU, or CPU slots without GPUs) that keep their cache across jobs and across the
  processes that submit to them. The pool is generic: any ``"package.module:function"`` target.

Importing this package does not import Ray; only the ``ray_*`` modules do.
"""
