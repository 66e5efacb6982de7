"""End-to-end render benchmark: one 720p avatar speaking a livestream recording.

Prints, for a recording of --seconds (default 60 s, 1280x720 25 fps FLV with speech):
  * end-to-end real-time factor and frames/s (probe + speech extraction + decode + render + encode),
  * each stage run alone over the same number of frames (template decode, weightless render,
    encode through the pipe with the audio mux), and the pipeline's wall time against its slowest stage,
  * peak RSS of the Python process and of the ffmpeg children, for --seconds and --long-seconds inputs
    (memory must not grow with the recording's length).

Each measurement runs in a fresh child process, so peak RSS is that run's alone.

    .venv/bin/python bench/bench_render.py                 # 60 s and 20 min inputs
    .venv/bin/python bench/bench_render.py --long-seconds 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _material(seconds: float) -> tuple[Path, Path]:
    from talkfactory.pipeline.demo import make_demo_material

    mat = make_demo_material(OUT / "material", seconds=20)
    rec = OUT / f"recording-{int(seconds)}s.flv"
    if not rec.exists():
        subprocess.run(
            [
                "ffmpeg", "-v", "error", "-y",
                "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds}",
                "-stream_loop", "-1", "-i", str(mat.speech_wav),
                "-map", "0:v", "-map", "1:a", "-t", str(seconds),
                "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(rec),
            ],
            check=True,
        )  # fmt: skip
    return rec, mat.avatars[1]


def _child(mode: str, seconds: float) -> dict[str, float]:
    from talkfactory.infra.media.encode import FrameEncoder
    from talkfactory.infra.media.frames import PingPongFrames, iter_video_frames
    from talkfactory.models.lipsync.base import TemplateFrame
    from talkfactory.models.lipsync.weightless import WeightlessBackend
    from talkfactory.pipeline.avatar import prepare_avatar
    from talkfactory.pipeline.recording import prepare_recording
    from talkfactory.pipeline.render import EncodeSettings, render_avatar

    rec_path, avatar_path = _material(seconds)
    avatar = prepare_avatar(avatar_path, OUT / "cache")
    n = int(round(seconds * avatar.fps))
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    if mode == "e2e":
        rec = prepare_recording(rec_path, OUT / "work")
        t_render = time.perf_counter()
        result = render_avatar(
            rec.speech(),
            avatar,
            WeightlessBackend(),
            OUT / f"e2e-{int(seconds)}.mp4",
            encode=EncodeSettings(),
        )
        stages = {f"stage_{k}": v for k, v in result.stage_s.items()}
        stages["prepare_recording_s"] = t_render - t0
        n = result.frames
    elif mode == "decode":
        for _ in PingPongFrames(avatar.path, avatar.info, avatar.fps).frames(n):
            pass
    elif mode in ("render", "encode"):
        w, h = avatar.track.width, avatar.track.height
        cycle = list(itertools.islice(iter_video_frames(avatar.path, fps=avatar.fps, width=w, height=h), 100))
        frames = (TemplateFrame(i % len(cycle), cycle[i % len(cycle)]) for i in range(n))
        t0 = time.perf_counter()
        if mode == "render":
            from talkfactory.pipeline.recording import prepare_recording as _prep

            audio = _prep(rec_path, OUT / "work").audio()
            t0 = time.perf_counter()
            backend = WeightlessBackend()
            for _ in backend.render(backend.prepare(avatar.track), frames, audio, avatar.fps):
                pass
        else:
            with FrameEncoder(
                OUT / "encode-alone.mp4", width=w, height=h, fps=avatar.fps, duration=n / avatar.fps
            ) as enc:
                for f in frames:
                    enc.write(f.image)
    wall = time.perf_counter() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "frames": n,
        "wall_s": wall,
        "fps": n / wall,
        "rss_mb": self_rss,
        "child_rss_mb": child_rss,
        **stages,
    }


def _run_child(mode: str, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--long-seconds", type=float, default=1200.0, help="0 skips the long-input memory run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.seconds)))
        return

    from rich.console import Console
    from rich.table import Table

    OUT.mkdir(parents=True, exist_ok=True)
    _material(args.seconds)
    results = {mode: _run_child(mode, args.seconds) for mode in ("decode", "render", "encode", "e2e")}
    e2e = results["e2e"]
    console = Console(width=150)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    )
    table = Table(title=f"one 720p25 avatar, {args.seconds:.0f} s recording ({int(e2e['frames'])} frames)")
    for col in (
        "measurement",
        "wall s",
        "frames/s",
        "real-time factor",
        "peak RSS python MB",
        "peak RSS ffmpeg MB",
    ):
        table.add_column(col, justify="right")
    for mode, label in (
        ("decode", "template decode alone (ping-pong)"),
        ("render", "weightless render alone"),
        ("encode", "encode alone (pipe -> libx264 + AAC)"),
        ("e2e", "end to end (probe, extract, decode, render, encode)"),
    ):
        r = results[mode]
        table.add_row(
            label,
            f"{r['wall_s']:.1f}",
            f"{r['fps']:.0f}",
            f"{r['wall_s'] / args.seconds:.3f}",
            f"{r['rss_mb']:.0f}",
            f"{r['child_rss_mb']:.0f}",
        )
    console.print(table)
    slowest = max(results[m]["wall_s"] for m in ("decode", "render", "encode"))
    console.print(
        f"pipeline render wall / slowest stage alone: "
        f"{(e2e['wall_s'] - e2e.get('prepare_recording_s', 0)) / slowest:.2f}x (target <= 1.3x); "
        f"end-to-end real-time factor {e2e['wall_s'] / args.seconds:.3f} (target <= 0.5)"
    )
    console.print({k: round(v, 2) for k, v in e2e.items() if k.startswith("stage_") or k.endswith("_s")})
    if args.long_seconds:
        long = _run_child("e2e", args.long_seconds)
        mem = Table(title="peak RSS against input length")
        for col in ("recording", "wall s", "real-time factor", "peak RSS python MB", "peak RSS ffmpeg MB"):
            mem.add_column(col, justify="right")
        for secs, r in ((args.seconds, e2e), (args.long_seconds, long)):
            mem.add_row(
                f"{secs / 60:.0f} min",
                f"{r['wall_s']:.0f}",
                f"{r['wall_s'] / secs:.3f}",
                f"{r['rss_mb']:.0f}",
                f"{r['child_rss_mb']:.0f}",
            )
        console.print(mem)


if __name__ == "__main__":
    main()
