"""What the Ray executor costs on this machine, apart from any render.

    .venv/bin/python bench/bench_ray_executor.py [--actors 2] [--calls 100] [--gpus 0]

Starts a Ray head the way ``factory up`` does (``ray start --head`` with the factory's token, in a
throwaway home), then times: the head's start, this process joining it (``import ray`` included),
creating ``--actors`` executor actors (until each answers ``info()``), ``--calls`` trivial jobs one
after another on one executor, and the same number from 4 threads over all actors. Stops the head.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from talkfactory.factory.ray_head import auth_env, start_head, stop_head  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--gpus", type=int, default=0, help="GPUs the head offers (GPU actors when > 0)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tf-bench-ray-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    head = start_head(
        home,
        num_cpus=max(args.actors, os.cpu_count() or 1),
        num_gpus=args.gpus,
        env=env,
        log_dir=home / "logs",
        cwd=ROOT,
    )
    head_s = time.perf_counter() - t0
    os.environ.update(auth_env(head.token_path))
    try:
        t0 = time.perf_counter()
        import ray

        from talkfactory.pipeline.executors.ray_connect import connect
        from talkfactory.pipeline.executors.ray_pool import RayActorPool

        connect(head.address)
        join_s = time.perf_counter() - t0
        ex: RayActorPool[int, int] = RayActorPool(
            "bench.bench_ray_executor:echo", address=head.address, actors=args.actors, pool="bench"
        )
        t0 = time.perf_counter()
        ex.start()
        create_s = time.perf_counter() - t0
        ex.run(0)
        seq = []
        for i in range(args.calls):
            t = time.perf_counter()
            assert ex.run(i) == i
            seq.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ex.run, range(args.calls))) == list(range(args.calls))
        par_s = time.perf_counter() - t0
        print(f"ray head start (ray start --head)     {head_s:6.2f} s")
        print(f"join (import ray + ray.init)          {join_s:6.2f} s")
        print(f"create {args.actors} actors (until they answer)  {create_s:6.2f} s")
        print(
            f"{args.calls} sequential calls, one caller     median {statistics.median(seq) * 1e3:.2f} ms, "
            f"p95 {sorted(seq)[int(len(seq) * 0.95) - 1] * 1e3:.2f} ms, total {sum(seq):.3f} s"
        )
        print(
            f"{args.calls} calls from 4 threads over {args.actors}     {par_s:.3f} s "
            f"({par_s / args.calls * 1e3:.2f} ms/call)"
        )
        ex.kill_actors()
        ray.shutdown()
    finally:
        stop_head(head, grace_s=2)
        shutil.rmtree(home, ignore_errors=True)


def echo(job: int, cache: dict[str, object]) -> int:
    return job


if __name__ == "__main__":
    main()
