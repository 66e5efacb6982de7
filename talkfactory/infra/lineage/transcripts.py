"""Transcripts in lineage: a clip's words are recognised once per (audio, model), not once per channel.

``audio_key`` identifies the clip's audio by content (``transcript_audio_key``: the recording's hash,
the clip span and the speech parameters), so re-rendering a clip with another avatar, or exporting it to
another channel, finds the words already there. Saving is idempotent on (audio_key, model): of two
workers transcribing the same clip at once, the first row stands and both get its id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from talkfactory.infra.lineage.base import RepositoryBase
from talkfactory.infra.lineage.tables import Transcript

_AUDIO_KEY_LEN = 64
_MODEL_LEN = 128


@dataclass(frozen=True)
class TranscriptRow:
    """A stored transcript; ``words`` are ``(start_s, end_s, text)`` in the clip's own time."""

    id: int
    audio_key: str
    model: str
    clip_id: int | None
    language: str | None
    words: tuple[tuple[float, float, str], ...]
    text: str
    wall_s: float | None
    created_at: datetime


class TranscriptQueries(RepositoryBase):
    """The transcript queries of ``LineageRepository``."""

    def get_transcript(self, audio_key: str, model: str) -> TranscriptRow | None:
        def fn(s: Session) -> TranscriptRow | None:
            row = s.scalar(
                select(Transcript).where(Transcript.audio_key == audio_key, Transcript.model == model)
            )
            return _transcript_row(row) if row is not None else None

        return self._run("read transcript", fn)

    def save_transcript(
        self,
        *,
        audio_key: str,
        model: str,
        clip_id: int | None,
        language: str | None,
        words: Sequence[tuple[float, float, str]],
        text: str,
        wall_s: float | None,
    ) -> int:
        """Store a clip's words once; saving the same (audio_key, model) again returns the first row's id.

        A later save only fills in a clip link the first one lacked.
        """
        if not audio_key or len(audio_key) > _AUDIO_KEY_LEN:
            raise ValueError(f"transcript audio_key must be 1 to {_AUDIO_KEY_LEN} characters: {audio_key!r}")
        if not model or len(model) > _MODEL_LEN:
            raise ValueError(f"transcript model must be 1 to {_MODEL_LEN} characters: {model!r}")
        stored = [[round(float(a), 3), round(float(b), 3), str(t)] for a, b, t in words]

        def fn(s: Session) -> int:
            row = s.scalar(
                select(Transcript).where(Transcript.audio_key == audio_key, Transcript.model == model)
            )
            if row is None:
                row = Transcript(
                    audio_key=audio_key,
                    model=model,
                    clip_id=clip_id,
                    language=language,
                    words=stored,
                    text=text,
                    wall_s=wall_s,
                )
                s.add(row)
                s.flush()
            elif row.clip_id is None and clip_id is not None:
                row.clip_id = clip_id
            return row.id

        return self._upsert("save transcript", fn)


def transcript_audio_key(recording_sha256: str, start_s: float, end_s: float, speech_params: object) -> str:
    """A clip's audio identity for ``audio_key``: 64 hex characters over content, span and parameters.

    ``speech_params`` is anything JSON can write (the clip's ``params``); its key order does not matter.
    """
    body = json.dumps(
        [recording_sha256, round(float(start_s), 3), round(float(end_s), 3), speech_params],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _transcript_row(row: Transcript) -> TranscriptRow:
    return TranscriptRow(
        id=row.id,
        audio_key=row.audio_key,
        model=row.model,
        clip_id=row.clip_id,
        language=row.language,
        words=tuple((float(w[0]), float(w[1]), str(w[2])) for w in row.words or ()),
        text=row.text,
        wall_s=row.wall_s,
        created_at=row.created_at,
    )


__all__ = ["TranscriptQueries", "TranscriptRow", "transcript_audio_key"]
