"""Two ``talkfactory run`` of one recording at once on one home: both succeed (shared speech step),
and the same render asked for twice at once is rendered once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import RENDER_DONE
from tests.cli.helpers import cli_argv, cli_env, tone_flv
from tests.fixtures.media import MediaSet

pytestmark = pytest.mark.slow


def test_two_runs_of_one_recording_at_once_both_succeed(media: MediaSet, tmp_path: Path) -> None:
    home = tmp_path / "home"
    runs = [
        subprocess.Popen(
            cli_argv(
                "run",
                str(media.speech_flv),
                "--avatar",
                str(avatar),
                "--out",
                str(tmp_path / name),
                "--denoiser",
                "rnnoise",
                "--min-clip",
                "3",
                "--max-clip",
                "8",
            ),
            env=cli_env(home),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for name, avatar in (("a", media.portrait), ("b", media.template))
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    assert list((tmp_path / "a").glob("speech/astronaut__clip*.mp4"))
    assert list((tmp_path / "b").glob("speech/template__clip*.mp4"))
    # One published set of clips for the recording; no work folder left behind.
    speech_dirs = [p for p in (home / "work").glob("*/*/speech-*") if p.is_dir()]
    assert len(speech_dirs) == 1 and (speech_dirs[0] / "clips.json").is_file()
    assert not list(speech_dirs[0].glob(".work-*"))


def test_the_same_whole_track_render_at_once_is_rendered_once(media: MediaSet, tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    recording = tone_flv(tmp_path / "show.flv", 30.0)  # long enough that both runs meet at the render
    runs = [
        subprocess.Popen(
            cli_argv(
                "run", str(recording), "--avatar", str(media.portrait), "--out", str(out), "--whole-track"
            ),
            env=cli_env(home),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    assert sum("already done" in output for output in outputs) == 1, outputs
    repo = LineageRepository.from_url(f"sqlite:///{home / 'lineage.db'}")
    rec = repo.find_recording("show.flv")
    assert rec is not None
    [overview] = repo.renders_for_recording(rec.id)
    render = overview.render
    assert render.status in RENDER_DONE and render.attempts == 1  # one render, not two
    assert [p.name for p in out.iterdir()] == ["show"]
    assert [p.name for p in (out / "show").iterdir()] == ["astronaut.mp4"]
