"""Keyframe times from ffprobe's packet list: the parser, and a real file with a known GOP."""

from __future__ import annotations

from pathlib import Path

from talkfactory.infra.media.keyframes import keyframe_times, parse_keyframes
from tests.fixtures.media_io import make_mp4


def test_parse_keeps_flagged_packets_in_time_order() -> None:
    text = "0.000000,K__\n0.040000,___\n2.000000,K__\nN/A,K__\n1.000000,K_D\n\n"
    assert parse_keyframes(text) == [0.0, 1.0, 2.0]


def test_keyframes_of_a_real_file(tmp_path: Path) -> None:
    video = make_mp4(tmp_path / "gop.mp4", seconds=3.0, fps="25", gop=25)
    times = keyframe_times(video)
    assert times is not None
    assert times[:3] == [0.0, 1.0, 2.0]
