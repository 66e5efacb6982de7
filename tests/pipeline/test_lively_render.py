"""A still portrait speaking a minute of piper speech, with and without liveliness, measured on the MP4s.

One render of each (module-scoped) serves every check: blinks and head motion read back with the
face mesh, the background compared with the plain render, sync QC on the render and on a copy whose
audio ffmpeg delayed by 200 ms, and the QC values through lineage.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkfactory.cli.main import main
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.media.encode import FrameEncoder
from talkfactory.infra.media.frames import iter_video_frames
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.lipsync.base import TemplateFrame
from talkfactory.models.lipsync.eyes import eye_aspect_ratio
from talkfactory.models.lipsync.head import FACE_SIDES, NOSE_TIP, HeadConfig, head_mask
from talkfactory.models.lipsync.liveliness import seed_from_key
from talkfactory.models.lipsync.sync_qc import mouth_opening
from talkfactory.models.lipsync.weightless import WeightlessBackend
from talkfactory.pipeline.avatar import PreparedAvatar, prepare_avatar
from talkfactory.pipeline.recording import PreparedRecording, prepare_recording
from talkfactory.pipeline.render import EncodeSettings, RenderResult, render_avatar
from tests.fixtures.long_speech import long_speech_wav
from tests.fixtures.media import make_template
from tests.fixtures.mouth import astronaut_bgr
from tests.infra.lineage_seed import PROV, Seed

pytestmark = pytest.mark.slow

SIZE = 512
NEAR_LOSSLESS = EncodeSettings(crf=8)


class Renders:
    def __init__(self, root: Path) -> None:
        portrait = root / "astronaut.png"
        cv2.imwrite(str(portrait), astronaut_bgr())
        self.root = root
        self.rec: PreparedRecording = prepare_recording(long_speech_wav(root / "speech.wav"), root / "work")
        self.avatar: PreparedAvatar = prepare_avatar(portrait, root / "cache")
        backend = WeightlessBackend()
        # "auto": a portrait gets subtle liveliness.
        self.lively: RenderResult = render_avatar(
            self.rec.speech(), self.avatar, backend, root / "lively.mp4", encode=NEAR_LOSSLESS,
            liveliness="auto", seed=seed_from_key("render-key-1"),
        )  # fmt: skip
        self.plain: RenderResult = render_avatar(
            self.rec.speech(),
            self.avatar,
            backend,
            root / "plain.mp4",
            encode=NEAR_LOSSLESS,
            liveliness="off",
        )


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Renders:
    return Renders(tmp_path_factory.mktemp("lively"))


def frames_of(path: Path) -> Iterator[np.ndarray]:
    return iter_video_frames(path, fps=25, width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def lively_mesh(renders: Renders) -> list[np.ndarray]:
    with FaceMesher(static=False) as mesher:
        meshes = [mesher.landmarks(f) for f in frames_of(renders.lively.output)]
    assert all(m is not None for m in meshes), "the face must be found on every output frame"
    return [m for m in meshes if m is not None]


def test_liveliness_is_on_for_the_portrait_and_recorded(renders: Renders) -> None:
    assert renders.lively.liveliness == "subtle"
    assert renders.plain.liveliness == "off"
    stats = renders.lively.stats()
    assert stats["liveliness"] == "subtle" and stats["liveliness_version"].startswith("live-")


def test_blinks_at_a_natural_rate(lively_mesh: list[np.ndarray]) -> None:
    ear = np.array([eye_aspect_ratio(m) for m in lively_mesh])
    open_ear = float(np.median(ear))
    closed = ear < 0.75 * open_ear
    blinks = int(np.count_nonzero(np.diff(closed.astype(int)) == 1)) + int(closed[0])
    minutes = len(ear) / 25.0 / 60.0
    assert 6 <= blinks / minutes <= 40, (blinks, minutes, open_ear, ear.min())
    assert ear.min() < 0.6 * open_ear  # the lids really shut
    assert closed.mean() < 0.1  # and mostly stay open


def test_head_moves_visibly_but_little(lively_mesh: list[np.ndarray]) -> None:
    nose = np.array([m[NOSE_TIP] for m in lively_mesh], dtype=np.float64)
    width = float(np.median([np.linalg.norm(m[FACE_SIDES[1]] - m[FACE_SIDES[0]]) for m in lively_mesh]))
    # A 9-frame moving average takes out the mesh's own jitter; the head's motion is slower than that.
    kernel = np.ones(9) / 9
    smooth = np.stack([np.convolve(nose[:, k], kernel, mode="valid") for k in (0, 1)], axis=1)
    travel = np.linalg.norm(smooth - np.median(smooth, axis=0), axis=1) / width
    assert np.percentile(travel, 95) > 0.004, "the head should visibly move"
    assert travel.max() < 0.04, "but by a few percent of the face width at most"


def test_background_outside_the_head_is_unchanged(renders: Renders) -> None:
    pts = renders.avatar.track.landmarks[0]
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    # Beyond the head's falloff (plus one grid step of the coarse field) with a few pixels for x264's blocks.
    away = head_mask(xs, ys, pts, HeadConfig(falloff=HeadConfig().falloff + 0.3)) == 0.0
    assert away.mean() > 0.5
    worst_mean, worst_outliers = 0.0, 0.0
    count = 0
    for a, b in zip(frames_of(renders.lively.output), frames_of(renders.plain.output), strict=True):
        diff = cv2.absdiff(a, b)[away]
        worst_mean = max(worst_mean, float(diff.mean()))
        worst_outliers = max(worst_outliers, np.count_nonzero(diff > 4) / diff.size)
        count += 1
    assert count == renders.lively.frames
    # What is left is x264's noise on identical input (the two encodes differ only near the head);
    # measured: worst frame's mean 0.11, at most 0.01 % of its pixels off by more than 4.
    assert worst_mean < 0.3 and worst_outliers < 0.002, (worst_mean, worst_outliers)


def test_mouth_still_follows_the_speech(renders: Renders, lively_mesh: list[np.ndarray]) -> None:
    opening = np.array([mouth_opening(m) for m in lively_mesh])
    samples = renders.rec.audio().read(0, renders.rec.num_samples)
    hop = 16_000 / 25
    env = np.array(
        [
            np.sqrt(np.mean(samples[int(i * hop) : int((i + 1) * hop)] ** 2) + 1e-12)
            for i in range(len(opening))
        ]
    )
    assert float(np.corrcoef(opening, env)[0, 1]) >= 0.5
    for result in (renders.lively, renders.plain):
        qc = result.qc
        assert qc is not None and qc.ok, qc
        assert abs(qc.offset_ms or 1e9) <= 40 and (qc.correlation or 0) > 0.8
        assert not result.needs_review


def test_qc_costs_a_small_share_of_the_render(renders: Renders) -> None:
    for result in (renders.lively, renders.plain):
        qc = result.qc
        assert qc is not None
        # The budget is 10 % of the render; allow the slack of a shared two-core machine.
        assert qc.cost_s <= 0.2 * result.wall_s + 0.3, (qc.cost_s, result.wall_s)
        assert qc.frames_used < result.frames / 4  # sampled, not every frame


def run_qc(video: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    rc = main(["qc", str(video), "--json"])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_qc_command_catches_audio_delayed_by_200_ms(
    renders: Renders, capsys: pytest.CaptureFixture[str]
) -> None:
    shifted = renders.root / "shifted.mp4"
    original = renders.lively.output
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(original), "-itsoffset", "0.2", "-i", str(original),
         "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted)],
        check=True, timeout=120,
    )  # fmt: skip
    rc, report = run_qc(shifted, capsys)
    assert rc == 1 and report["ok"] is False and report["needs_review"] is True
    assert report["offset_ms"] == pytest.approx(200, abs=40)
    assert "late" in report["reason"]
    rc, report = run_qc(original, capsys)
    assert rc == 0 and report["ok"] is True
    assert report["offset_ms"] == pytest.approx(0, abs=40)
    assert {"offset_ms", "correlation", "ok", "frames_used", "cost_s"} <= set(report)


def test_qc_values_land_in_lineage(renders: Renders, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    seed = Seed(repo)
    recording, _ = seed.recording("talk", spans=[])
    avatar = seed.avatar("astronaut")
    state = repo.begin_render(
        render_key="k" * 64, recording_id=recording, avatar_id=avatar, clip_id=None, backend="weightless",
        backend_version="weightless-1.0.0", params_hash="p" * 64, params={"liveliness": "subtle"}, prov=PROV,
    )  # fmt: skip
    result = renders.lively
    repo.finish_render(
        state.id, output_uri=str(result.output), encoder=result.encoder, duration_s=result.duration_s,
        wall_s=result.wall_s, stats=result.stats(), prov=PROV,
    )  # fmt: skip
    row = repo.get_render_row(state.id)
    assert row is not None
    stats = row.stats or {}
    qc = stats["qc"]
    assert result.qc is not None
    assert qc["offset_ms"] == pytest.approx(result.qc.offset_ms, abs=0.1)
    assert qc["correlation"] == pytest.approx(result.qc.correlation, abs=1e-3)
    assert qc["ok"] is True and stats["needs_review"] is False
    assert stats["stage_s"]["qc"] > 0


def test_liveliness_off_reproduces_the_plain_backend_output(renders: Renders) -> None:
    speech = renders.rec.speech(1.0, 4.0)
    ours = renders.root / "off-3s.mp4"
    render_avatar(speech, renders.avatar, WeightlessBackend(), ours, liveliness="off", qc=False)
    # Today's path, spelled out: the backend's frames straight into the encoder, nothing after it.
    backend = WeightlessBackend()
    n = round(speech.duration_s * 25)
    image = astronaut_bgr()
    frames = (TemplateFrame(0, image) for _ in range(n))
    before = renders.root / "before-3s.mp4"
    with FrameEncoder(
        before, width=SIZE, height=SIZE, fps=25.0, audio=speech.mux, duration=speech.duration_s
    ) as enc:
        for frame in backend.render(backend.prepare(renders.avatar.track), frames, speech.analysis, 25.0):
            enc.write(frame)
    got, want = list(frames_of(ours)), list(frames_of(before))
    assert len(got) == len(want) == n
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_a_rerender_is_identical_and_the_seed_matters(renders: Renders) -> None:
    speech = renders.rec.speech(2.0, 6.0)

    def render(name: str, seed: int) -> list[np.ndarray]:
        out = renders.root / name
        render_avatar(
            speech, renders.avatar, WeightlessBackend(), out, liveliness="lively", seed=seed, qc=False
        )
        return list(frames_of(out))

    a, b, c = render("a.mp4", 5), render("b.mp4", 5), render("c.mp4", 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_a_template_video_moves_only_when_asked(renders: Renders, tmp_path: Path) -> None:
    template = tmp_path / "template.mp4"
    make_template(renders.root / "astronaut.png", template, seconds=2.0)
    avatar = prepare_avatar(template, renders.root / "cache")
    speech = renders.rec.speech(1.0, 6.0)  # 5 s over a 2 s template: ping-pong rows, out of order

    def render(name: str, level: str) -> tuple[RenderResult, list[np.ndarray]]:
        result = render_avatar(
            speech, avatar, WeightlessBackend(), tmp_path / name, liveliness=level, seed=2, qc=False
        )
        return result, list(iter_video_frames(result.output, fps=25, width=360, height=360))

    auto, plain = render("auto.mp4", "auto")
    asked, lively = render("lively.mp4", "lively")
    assert auto.liveliness == "off" and asked.liveliness == "lively"
    assert len(plain) == len(lively) == auto.frames == asked.frames == 125
    changed = [not np.array_equal(a, b) for a, b in zip(plain, lively, strict=True)]
    assert sum(changed) > 100  # the head moves in nearly every frame
