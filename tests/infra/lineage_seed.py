"""Seeding a real lineage database through the repository's own public methods, for planning tests."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from talkfactory.infra.lineage.repository import ClipRow, LineageRepository, Provenance
from talkfactory.infra.lineage.tables import Base, Recording

PROV = Provenance(flow_run_id="flow-seed", task_run_id="task-seed", code_version="0.1.0")
BACKEND = "weightless"
V12, V13 = "weightless-1.2", "weightless-1.3"
PARAMS = hashlib.sha256(b"crf=20,preset=medium").hexdigest()
PARAMS_CRF18 = hashlib.sha256(b"crf=18,preset=medium").hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Seed:
    """A tiny archive builder: recordings with source objects, clips, avatars and renders."""

    def __init__(self, repo: LineageRepository) -> None:
        self.repo = repo

    def recording(
        self,
        name: str,
        *,
        spans: list[tuple[float, float]] | None = None,
        speech: str = "speech-v1",
        key: str | None = None,
        bucket: str = "archive",
        uri: str | None = None,
    ) -> tuple[int, list[int]]:
        """A recording (ingested from ``bucket/key`` when given) and its clips; ids returned."""
        rec = self.repo.register_recording(
            uri=uri or f"/data/recordings/{name}.flv",
            sha256=sha(f"recording {name}"),
            size_bytes=1000,
            duration_s=60.0,
            probe={"format": "flv"},
            warnings=[],
            prov=PROV,
        )
        if key is not None:
            self.source(rec, key, bucket=bucket)
        clips = self.clips(rec, spans if spans is not None else [(1.0, 4.0), (6.0, 9.5)], speech=speech)
        return rec, clips

    def source(self, recording_id: int, key: str, *, bucket: str = "archive") -> int:
        """An object ingested (claimed, then done) as ``recording_id``."""
        state, _ = self.repo.register_source_object(
            store_url=f"s3://{bucket}/", bucket=bucket, key=key, etag=sha(key)[:32], size_bytes=1000,
            prov=PROV, status="processing",
        )  # fmt: skip
        self.repo.mark_source_object(state.id, "done", recording_id=recording_id, prov=PROV)
        return state.id

    def clips(self, recording_id: int, spans: list[tuple[float, float]], *, speech: str) -> list[int]:
        if not spans:
            return []
        rows = [
            ClipRow(start_s=a, end_s=b, speaker="spk0", loudness_lufs=-16.0, snr_db=30.0,
                    audio_uri=f"/c/{recording_id}-{a}.wav", audio48_uri=f"/c/{recording_id}-{a}-48.wav")
            for a, b in spans
        ]  # fmt: skip
        return self.repo.register_clips(
            recording_id=recording_id, params_hash=sha(speech), params={"pass": speech}, denoiser="rnnoise",
            denoiser_version="0.4", clips=rows, prov=PROV,
        )  # fmt: skip

    def failed_recording(self, name: str) -> int:
        return self.repo.record_recording_failure(
            uri=f"/data/recordings/{name}.flv", sha256=sha(f"recording {name}"),
            error=ValueError("not media"), prov=PROV,
        )  # fmt: skip

    def avatar(self, name: str, content: str = "v1") -> int:
        return self.repo.register_avatar(
            content_hash=sha(f"avatar {name} {content}"), name=name, uri=f"/library/{name}.mp4", kind="video",
            width=512, height=512, fps=25.0, num_frames=250, face_ratio=0.9, track_uri=f"/cache/{name}.npz",
            prov=PROV,
        )  # fmt: skip

    def render(
        self,
        recording_id: int,
        clip_id: int | None,
        avatar_id: int,
        *,
        version: str = V12,
        params: str = PARAMS,
        backend: str = BACKEND,
        failures: list[BaseException] | None = None,
        succeed: bool = True,
    ) -> int:
        """A render that fails once per entry of ``failures``, then succeeds unless ``succeed`` is False
        (then it stays failed, or running when there were no failures)."""
        ident = f"{recording_id}/{clip_id}/{avatar_id}/{backend}/{version}/{params}"
        kw: dict[str, Any] = dict(
            render_key=sha(ident), recording_id=recording_id, avatar_id=avatar_id, clip_id=clip_id,
            backend=backend, backend_version=version, params_hash=params, params={"crf": 20}, prov=PROV,
        )  # fmt: skip
        state = self.repo.begin_render(**kw)
        for n, error in enumerate(failures or []):
            if n:
                state = self.repo.begin_render(**kw)
            self.repo.fail_render(state.id, error=error, prov=PROV)
        if succeed:
            if failures:
                state = self.repo.begin_render(**kw)
            self.repo.finish_render(
                state.id, output_uri=f"/out/{state.id}.mp4", encoder="libx264", duration_s=3.0, wall_s=1.0,
                stats={}, prov=PROV,
            )  # fmt: skip
        return state.id

    def backdate(self, recording_id: int, when: datetime) -> None:
        # No repository call sets created_at (it is the registration time), so the test moves it.
        with self.repo.session() as s:
            s.execute(update(Recording).where(Recording.id == recording_id).values(created_at=when))


def table_fingerprint(repo: LineageRepository) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of every row of every lineage table."""
    out: dict[str, tuple[int, str]] = {}
    with repo.session() as s:
        for table in Base.metadata.sorted_tables:
            rows = s.execute(select(table).order_by(*table.primary_key.columns)).all()
            count = s.scalar(select(func.count()).select_from(table))
            out[table.name] = (int(count or 0), hashlib.sha256(repr(rows).encode()).hexdigest())
    return out
