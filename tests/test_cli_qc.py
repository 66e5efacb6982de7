"""``talkfactory qc`` on videos it cannot pass, and the render-quality options of ``run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talkfactory.cli.main import build_parser, main
from tests.fixtures.media_io import make_flv, make_mp4


def test_run_takes_liveliness_and_qc_strict() -> None:
    parser = build_parser()
    base = ["run", "rec.flv", "--avatar", "a.png", "--out", "out"]
    args = parser.parse_args(base)
    assert args.liveliness == "auto" and args.qc_strict is False
    args = parser.parse_args([*base, "--liveliness", "lively", "--qc-strict"])
    assert args.liveliness == "lively" and args.qc_strict is True
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--liveliness", "wild"])


def test_qc_on_a_video_without_a_face_is_not_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = make_flv(tmp_path / "testcard.flv", seconds=3.0)  # test pattern and a tone: no face
    rc = main(["qc", str(video), "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 1 and report["ok"] is False and report["needs_review"] is True
    assert report["offset_ms"] is None and "no face" in report["reason"]


def test_qc_on_a_video_without_audio_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = make_mp4(tmp_path / "silent.mp4", seconds=1.0)
    assert main(["qc", str(video)]) == 2
    err = capsys.readouterr().err
    assert "silent.mp4" in err and "no audio stream" in err
