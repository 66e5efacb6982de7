"""avatar versions: active flag, superseded_by, index on name

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 08:30:00.000000

An avatar's identity is its ``name``; each row is a version. Existing rows stay active unless several
share a name, then only the newest (max id) does and the others point at it through ``superseded_by``.

SQLite: ``avatars`` is referenced by ``renders``, so the batch-mode table rebuild (DROP TABLE under
``PRAGMA foreign_keys=ON``) fails once renders exist. Both directions therefore stay in-place there:
``ADD COLUMN`` (a literal default, an inline named REFERENCES) and ``DROP COLUMN`` (SQLite 3.35+).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FK_NAME = "fk_avatars_superseded_by_avatars"


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    # A plain-string default keeps this add_column in place on SQLite (a SQL expression forces a
    # rebuild); '1' reads as true on both SQLite and Postgres.
    with op.batch_alter_table("avatars", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active", sa.Boolean(), server_default="1", nullable=False))
        batch_op.create_index(batch_op.f("ix_avatars_name"), ["name"], unique=False)
    if _sqlite():
        op.execute(
            "ALTER TABLE avatars ADD COLUMN superseded_by INTEGER"
            f" CONSTRAINT {FK_NAME} REFERENCES avatars (id)"
        )
    else:
        op.add_column("avatars", sa.Column("superseded_by", sa.Integer(), nullable=True))
        op.create_foreign_key(FK_NAME, "avatars", "avatars", ["superseded_by"], ["id"])

    avatars = sa.table(
        "avatars",
        sa.column("id", sa.Integer()),
        sa.column("name", sa.String()),
        sa.column("active", sa.Boolean()),
        sa.column("superseded_by", sa.Integer()),
    )
    newer = avatars.alias("newer")
    newest_of_name = (
        sa.select(sa.func.max(newer.c.id)).where(newer.c.name == avatars.c.name).scalar_subquery()
    )
    op.execute(
        avatars.update()
        .where(avatars.c.id < newest_of_name)
        .values(active=False, superseded_by=newest_of_name)
    )


def downgrade() -> None:
    with op.batch_alter_table("avatars", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_avatars_name"))
    if _sqlite():
        op.execute("ALTER TABLE avatars DROP COLUMN superseded_by")
        op.execute("ALTER TABLE avatars DROP COLUMN active")
    else:
        op.drop_constraint(FK_NAME, "avatars", type_="foreignkey")
        op.drop_column("avatars", "superseded_by")
        op.drop_column("avatars", "active")
