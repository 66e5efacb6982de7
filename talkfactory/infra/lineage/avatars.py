"""Avatar versions: list them, retire a name or bring it back.

An avatar's identity is its ``name`` (the file stem); each content hash registered under it is a
version. ``LineageRepository.register_avatar`` makes the registered version the one in use; this
module holds the reads and the explicit retire / reactivate switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import Avatar


@dataclass(frozen=True)
class AvatarVersion:
    """One version of a library avatar."""

    id: int
    name: str
    content_hash: str
    uri: str
    kind: str
    status: str
    active: bool
    superseded_by: int | None
    created_at: datetime


AVATAR_VERSION_COLUMNS = (
    Avatar.id,
    Avatar.name,
    Avatar.content_hash,
    Avatar.uri,
    Avatar.kind,
    Avatar.status,
    Avatar.active,
    Avatar.superseded_by,
    Avatar.created_at,
)


def list_avatars(repo: LineageRepository, *, include_inactive: bool = False) -> list[AvatarVersion]:
    """Avatar versions by name, oldest first; only the active ones unless ``include_inactive``."""
    q = select(*AVATAR_VERSION_COLUMNS).order_by(Avatar.name, Avatar.id)
    if not include_inactive:
        q = q.where(Avatar.active.is_(True))
    with repo.session() as s:
        return [AvatarVersion(**row._asdict()) for row in s.execute(q)]


def set_avatar_active(repo: LineageRepository, name: str, active: bool) -> list[AvatarVersion]:
    """Retire (``active=False``: every version inactive) or reactivate an avatar by name.

    Reactivating activates the newest version: the one last in use (``superseded_by`` unset), the
    usable ones first, the highest id among equals; any other version still active is superseded
    by it. Returns every version of ``name`` after the change, oldest first (empty: no such name).
    """
    with repo.session() as s:
        versions = list(s.scalars(select(Avatar).where(Avatar.name == name).order_by(Avatar.id)))
        if versions and not active:
            for v in versions:
                v.active = False
        elif versions:
            chosen = max(versions, key=lambda v: (v.status == "ok", v.superseded_by is None, v.id))
            chosen.active, chosen.superseded_by = True, None
            for v in versions:
                if v is not chosen and v.active:
                    v.active, v.superseded_by = False, chosen.id
        s.flush()
        return [_version(v) for v in versions]


def _version(row: Avatar) -> AvatarVersion:
    return AvatarVersion(**{c.key: getattr(row, c.key) for c in AVATAR_VERSION_COLUMNS})
