"""Channel exports: one pass feeding several encoders, against each encode alone and against
re-encoding the master per channel; with peak RSS.

    .venv/bin/python bench/bench_exports.py [--seconds 60] [--channels youtube youtube-shorts tiktok]

A 1280x720 template (the face right of centre) speaks ``--seconds`` of piper speech with the
weightless backend, as ``talkfactory run --whole-track`` renders it. Each configuration runs in its
own process (peak RSS is that process's, ffmpeg children included):

* ``master``: the render alone (decode, backend, one encode: what ``run`` did before channels);
* ``combined``: the render with every channel encoded from the same frames in the same pass
  (what ``run --channel ...`` does), loudness measurement included;
* ``decode``: decoding the master back to frames, nothing else (to take out of the next one);
* ``alone:<channel>``: that channel's encode alone, fed by decoding the master (decode time taken out);
* ``reexport:<channel>``: the naive way, decoding the master and encoding that channel.

Targets (issue 11): ``combined`` <= 1.2 x (``master`` + the channels' encodes alone), and flat
memory (``combined`` on a clip a third as long peaks at about the same RSS).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "exports"


def make_material(seconds: float) -> tuple[Path, Path]:
    import cv2

    from tests.fixtures.long_speech import long_speech_wav
    from tests.fixtures.templates import face_right_of_centre_frames

    OUT.mkdir(parents=True, exist_ok=True)
    speech = OUT / f"speech-{seconds:g}.wav"
    if not speech.exists():
        long_speech_wav(speech, seconds)
    template = OUT / "template.mp4"
    if not template.exists():
        frames = OUT / "frames"
        frames.mkdir(exist_ok=True)
        for i, canvas in enumerate(face_right_of_centre_frames(75)):
            cv2.imwrite(str(frames / f"{i:03d}.png"), canvas)
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-framerate", "25", "-i", str(frames / "%03d.png"),
             "-c:v", "libx264", "-pix_fmt", "yuv420p", str(template)],
            check=True,
        )  # fmt: skip
    return speech, template


def run_config(config: str, seconds: float, channels: list[str]) -> dict[str, float]:
    """One configuration, in this process; returns its wall time."""
    from talkfactory.infra.lineage.repository import Provenance
    from talkfactory.infra.media.encode import AudioInput
    from talkfactory.infra.media.frames import iter_video_frames
    from talkfactory.models.lipsync.weightless import WeightlessBackend
    from talkfactory.pipeline.avatar import prepare_avatar
    from talkfactory.pipeline.exports.channels import load_channels
    from talkfactory.pipeline.exports.produce import ExportRun
    from talkfactory.pipeline.exports.targets import export_targets
    from talkfactory.pipeline.exports.variants import EncodeChoice
    from talkfactory.pipeline.jobs.model import AvatarSpec, ClipSpec, Destination, RenderJob, RenderParams
    from talkfactory.pipeline.recording import prepare_recording
    from talkfactory.pipeline.render import render_avatar

    speech_path, template = make_material(seconds)
    work = OUT / f"work-{config.replace(':', '-')}-{seconds:g}"
    rec = prepare_recording(speech_path, work)
    avatar = prepare_avatar(template, OUT / "cache")
    speech = rec.speech()
    master = OUT / f"master-{seconds:g}.mp4"
    registry = load_channels()
    wanted = channels if config == "combined" else [config.split(":", 1)[1]] if ":" in config else []
    targets = tuple(
        t
        for t in export_targets(wanted, registry=registry, location=str(work), render_key="show/anna.mp4")
        if not t.is_master
    )
    job = RenderJob(
        recording_id=0,
        recording_sha256=rec.sha256,
        recording_name=speech_path.name,
        clip=ClipSpec(None, None, 0.0, None, "", str(speech_path), str(speech_path)),
        avatar=AvatarSpec(0, avatar.content_hash, str(template), "anna"),
        params=RenderParams(),
        model_version="weightless",
        checkpoint=None,
        destination=Destination(str(work), "show/anna.mp4", master.as_uri()),
        provenance=Provenance(),
    )
    encode = EncodeChoice("libx264", 20, "veryfast", 3600)
    t0 = time.perf_counter()
    if config in ("master", "combined"):
        fanout = None
        if targets:
            run = ExportRun.prepare(
                job, targets, track=avatar.track, fps=avatar.fps, analysis=speech.analysis,
                audio=speech.mux, transcript=None, spool=work / "spool", made_from="render",
            )  # fmt: skip
            fanout = run.sinks(encode)
        out = master if config == "master" else work / "master.mp4"
        tap = fanout.write if fanout else None
        render_avatar(speech, avatar, WeightlessBackend(), out, qc=False, tap=tap)
        if fanout is not None:
            fanout.close()
    else:
        if not master.exists():
            raise SystemExit("run the master configuration first")
        fanout = None
        if targets:
            run = ExportRun.prepare(
                job, targets, track=avatar.track, fps=avatar.fps, analysis=speech.analysis,
                audio=AudioInput(master), transcript=None, spool=work / "spool", made_from="master",
            )  # fmt: skip
            fanout = run.sinks(encode)
        track = avatar.track
        frames = iter_video_frames(master, fps=track.fps, width=track.width, height=track.height)
        for i, frame in enumerate(frames):
            if fanout is not None:
                fanout.write(i, frame)
        if fanout is not None:
            fanout.close()
    return {"wall_s": time.perf_counter() - t0}


def measure(config: str, seconds: float, channels: list[str]) -> dict[str, float]:
    """Run ``config`` in a child process: its wall time and peak RSS (children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    argv = [sys.executable, __file__, "--child", config, "--seconds", str(seconds), "--channels", *channels]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the largest child so far: each child is measured by itself
    # (its own figure, printed by the child) rather than this running maximum.
    del before
    return result


def child(config: str, seconds: float, channels: list[str]) -> None:
    result = run_config(config, seconds, channels)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["rss_mb"] = self_kb / 1024
    result["ffmpeg_rss_mb"] = kids_kb / 1024
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--channels", nargs="+", default=["youtube", "youtube-shorts", "tiktok"])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.child:
        child(args.child, args.seconds, args.channels)
        return
    make_material(args.seconds)
    make_material(args.seconds / 3)
    rows: dict[str, dict[str, float]] = {}
    order = ["master", "combined", "decode"]
    order += [f"alone:{c}" for c in args.channels]
    for config in order:
        rows[config] = measure(config, args.seconds, args.channels)
        print(f"{config:24s} {rows[config]['wall_s']:7.1f} s  {rows[config]['rss_mb']:6.0f} MB", flush=True)
    short = measure("combined", args.seconds / 3, args.channels)
    decode = rows["decode"]["wall_s"]
    alone = {c: rows[f"alone:{c}"]["wall_s"] - decode for c in args.channels}
    reexport = {c: rows[f"alone:{c}"]["wall_s"] for c in args.channels}
    sum_alone = rows["master"]["wall_s"] + sum(alone.values())
    naive = rows["master"]["wall_s"] + sum(reexport.values())
    combined = rows["combined"]["wall_s"]
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {subprocess.getoutput('nproc')} cores")
    print(f"{args.seconds:g} s of 720p speech, weightless, libx264 veryfast; channels {args.channels}")
    print()
    print("| what | wall s | peak RSS MB (python / largest ffmpeg) |")
    print("|---|---|---|")
    for config in order:
        r = rows[config]
        print(f"| {config} | {r['wall_s']:.1f} | {r['rss_mb']:.0f} / {r['ffmpeg_rss_mb']:.0f} |")
    print(f"| combined, {args.seconds / 3:g} s clip | {short['wall_s']:.1f} | {short['rss_mb']:.0f} / "
          f"{short['ffmpeg_rss_mb']:.0f} |")  # fmt: skip
    print()
    print(f"master + each channel encode alone (sum): {sum_alone:.1f} s")
    print(f"one pass, master + {len(args.channels)} channels:      {combined:.1f} s "
          f"= {combined / sum_alone:.2f} x the sum (target <= 1.2)")  # fmt: skip
    print(f"master, then decode + encode per channel: {naive:.1f} s ({naive / combined:.2f} x the one pass)")
    print(f"peak RSS, {args.seconds:g} s vs {args.seconds / 3:g} s clip: {rows['combined']['rss_mb']:.0f} vs "
          f"{short['rss_mb']:.0f} MB")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "short": short, "sum_alone": sum_alone, "naive": naive}, indent=2)
        )


if __name__ == "__main__":
    main()
