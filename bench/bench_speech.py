"""Speed and memory of the speech step (``extract_speech``) on a synthetic livestream recording.

    .venv/bin/python bench/bench_speech.py [--minutes 10] [--long-minutes 60] [--denoiser dfn3]

The recording is built once: piper sentences (the host) with pauses of 0.3-1.5 s, espeak-ng turns
(a guest) every few sentences, a music bed now and then and pink noise at 15 dB SNR, in an FLV
(160x120 H.264 + AAC 44.1 kHz stereo, like OBS). The long recording loops the same audio.
Each run is its own process, so peak RSS (``ru_maxrss`` of the run and of its ffmpeg children) is
per run. Stage times come from ``SpeechResult.timings``; "extract" is ffmpeg decoding alone, timed
by draining ``iter_audio_chunks`` in the same process before the step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATE = 16000


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=3600)


def build_audio(minutes: float, seed: int = 0) -> NDArray[np.float32]:
    """A talk show: host sentences, guest turns, a music bed now and then, pink noise at 15 dB."""
    from tests.fixtures.speech import SENTENCES_A, SENTENCES_B, espeak, music_like, pink_noise, piper

    extra = (
        "Thanks for all the questions in the chat tonight.",
        "I will put the link to the settings in the description.",
        "Let us take a quick look at the next slide.",
        "That was a great point, let me think about it for a second.",
    )
    host = [piper(s) for s in SENTENCES_A + extra]
    guest = [espeak(s) for s in SENTENCES_B]
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * RATE)
    clean = np.zeros(n, np.float32)
    music = np.zeros(n, np.float32)
    t = int(2.0 * RATE)
    k = 0
    while t < n - 10 * RATE:
        k += 1
        if k % 40 == 0:  # a music break of 10-20 s
            length = int(rng.uniform(10, 20) * RATE)
            music[t : t + length] = 0.15 * music_like(length, seed=k)[: n - t]
            t += length + int(RATE)
            continue
        x = guest[rng.integers(len(guest))] if k % 7 == 0 else host[rng.integers(len(host))]
        end = min(n, t + x.size)
        clean[t:end] = x[: end - t]
        t = end + int(rng.uniform(0.3, 1.5) * RATE)
    active = np.abs(clean) > 1e-4
    p_speech = float(np.mean(clean[active].astype(np.float64) ** 2))
    noise = pink_noise(n, seed=seed)
    noise *= np.sqrt(p_speech / 10**1.5) / float(noise.std())
    return clean + music + noise


def make_recording(audio: NDArray[np.float32], out: Path, loops: int = 1) -> Path:
    from tests.fixtures.speech import write_wav

    wav = write_wav(out.with_suffix(".wav"), audio, RATE)
    seconds = loops * audio.size / RATE
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5", "-stream_loop", str(loops - 1), "-i", str(wav),
        "-map", "0:v", "-map", "1:a", "-t", f"{seconds:.3f}", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "44100", "-ac", "2", "-f", "flv", str(out),
    )  # fmt: skip
    wav.unlink()
    return out


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def child(recording: Path, out_dir: Path, denoiser: str, workers: int) -> None:
    """One measured run (in its own process): drain the decoder, then the whole step."""
    from talkfactory.infra.media.audio import iter_audio_chunks
    from talkfactory.pipeline.speech import SpeechParams, extract_speech

    t = time.perf_counter()
    samples = sum(c.shape[0] for c in iter_audio_chunks(recording, sample_rate=48000, chunk_seconds=30.0))
    extract = time.perf_counter() - t
    result = extract_speech(recording, out_dir, SpeechParams(denoiser=denoiser, denoise_workers=workers))
    print(
        json.dumps(
            {
                "seconds": samples / 48000,
                "extract": extract,
                "timings": result.timings,
                "clips": len(result.clips),
                "clip_seconds": sum(c.duration for c in result.clips),
                "speakers": result.speakers,
                "cpu_self": _cpu(resource.RUSAGE_SELF),
                "cpu_children": _cpu(resource.RUSAGE_CHILDREN),
                "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def run_child(recording: Path, out_dir: Path, denoiser: str, workers: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(recording), str(out_dir), "--denoiser", denoiser]
        + ["--workers", str(workers)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def table(runs: dict[str, dict[str, Any]]) -> str:
    names = list(runs)

    def stage(run: dict[str, Any], key: str) -> float:
        return float(run["extract"] if key == "extract" else run["timings"].get(key, 0.0))

    def cell(seconds: float, run: dict[str, Any]) -> str:
        return f"{seconds:8.1f} s  {seconds / float(run['seconds']):.4f}x"

    rows: list[tuple[str, list[str]]] = []
    for label, key in [
        ("extract (ffmpeg decode alone)", "extract"),
        ("  waiting on decode in the step", "decode"),
        ("denoise", "denoise"),
        ("resample + spool to disk", "spool"),
        ("VAD (silero)", "vad"),
        ("diarize (resemblyzer)", "diarize"),
        ("plan clips", "plan"),
        ("clip writing (loudness + WAVs)", "write"),
        ("end to end (whole step)", "total"),
    ]:
        rows.append((label, [cell(stage(runs[n], key), runs[n]) for n in names]))
    cpu = [float(runs[n]["cpu_self"]) + float(runs[n]["cpu_children"]) for n in names]
    rows.append(
        ("CPU time, all threads + ffmpeg", [cell(c, runs[n]) for c, n in zip(cpu, names, strict=True)])
    )
    rows.append(("peak RSS, step process", [f"{float(runs[n]['rss_self_mb']):8.0f} MB" for n in names]))
    rows.append(
        ("peak RSS, largest child process*", [f"{float(runs[n]['rss_children_mb']):8.0f} MB" for n in names])
    )
    rows.append(
        (
            "clips written (total s)",
            [f"{runs[n]['clips']} ({float(runs[n]['clip_seconds']):.0f} s)" for n in names],
        )
    )
    width = max(len(r[0]) for r in rows) + 2
    head = "stage".ljust(width) + "".join(f"{n:>24}" for n in names)
    lines = [head, "-" * len(head)]
    for label, cells in rows:
        lines.append(label.ljust(width) + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--long-minutes", type=float, default=60.0)
    ap.add_argument("--denoiser", default="dfn3")
    ap.add_argument("--workers", type=int, default=2, help="denoise threads (SpeechParams.denoise_workers)")
    ap.add_argument("--child", nargs=2, metavar=("RECORDING", "OUT"))
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.denoiser, args.workers)
        return
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        audio = build_audio(args.minutes)
        short = make_recording(audio, work / "short.flv")
        loops = max(1, round(args.long_minutes / args.minutes))
        long = make_recording(audio, work / "long.flv", loops=loops)
        built = time.perf_counter() - t
        print(f"built {args.minutes:g} and {loops * args.minutes:g} min recordings in {built:.0f} s")
        runs = {}
        for name, rec in [(f"{args.minutes:g} min", short), (f"{loops * args.minutes:g} min", long)]:
            t = time.perf_counter()
            runs[name] = run_child(rec, work / f"out-{rec.stem}", args.denoiser, args.workers)
            print(f"{name}: {time.perf_counter() - t:.0f} s wall", flush=True)
        load = os.getloadavg()
        print()
        cpu = platform.processor() or platform.machine()
        print(
            f"speech step, denoiser {args.denoiser}, {args.workers} threads; {cpu}, {os.cpu_count()} cores, "
            f"no GPU; load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
        )
        print("(time in s, and real-time factor = stage time / audio duration)")
        print(table(runs))
        print("* ru_maxrss of children counts pages a forked child shares with this process before exec")


if __name__ == "__main__":
    main()
