"""render identity: content_key on renders, permanent on attempts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 16:30:00.000000

A render's ``render_key`` now covers where it is published, so the same pixels published to two
places are two rows; ``content_key`` names the pixels alone, so a finished render can be copied to a
new destination instead of rendered again. ``attempts.permanent`` records, when an attempt fails,
whether its error could ever succeed on retry (planning used to look the class name up).

Existing renders keep their keys; their ``content_key`` stays NULL (they are not copied from, only
re-rendered when planned), which is safe. Both columns are plain ``ADD COLUMN`` on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("renders", sa.Column("content_key", sa.String(length=64), nullable=True))
    op.create_index("ix_renders_content_key", "renders", ["content_key"], unique=False)
    op.add_column("attempts", sa.Column("permanent", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_renders_content_key", table_name="renders")
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): a batch rebuild of renders fails under its foreign keys.
        op.execute("ALTER TABLE attempts DROP COLUMN permanent")
        op.execute("ALTER TABLE renders DROP COLUMN content_key")
    else:
        op.drop_column("attempts", "permanent")
        op.drop_column("renders", "content_key")
