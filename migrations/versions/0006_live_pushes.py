"""live pushes: each playlist pushed to an RTMP(S) ingest URL, and each attempt at it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 18:30:00.000000

``live_pushes`` keeps one row per push (the ingest URL with its stream key masked, copy or re-encode
and why, the playlist, how far it got); ``push_attempts`` one row per connection tried, with the file
it started at and the error that ended it, so retries after a dropped connection can be followed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PROVENANCE = (
    ("flow_run_id", sa.String(length=64)),
    ("task_run_id", sa.String(length=64)),
    ("code_version", sa.String(length=64)),
)


def _provenance() -> list[sa.Column]:
    return [sa.Column(name, kind, nullable=True) for name, kind in _PROVENANCE]


def upgrade() -> None:
    op.create_table(
        "live_pushes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=True),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("total_s", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("files_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=True),
        sa.Column("pushed_s", sa.Float(), server_default="0", nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_live_pushes"),
    )
    op.create_table(
        "push_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("push_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("first_file", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("file_on_air", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("pushed_s", sa.Float(), server_default="0", nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("error_type", sa.String(length=64), nullable=True),
        sa.Column("permanent", sa.Boolean(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        *_provenance(),
        sa.ForeignKeyConstraint(["push_id"], ["live_pushes.id"], name="fk_push_attempts_push_id_live_pushes"),
        sa.PrimaryKeyConstraint("id", name="pk_push_attempts"),
    )
    op.create_index("ix_push_attempts_push_id", "push_attempts", ["push_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_push_attempts_push_id", table_name="push_attempts")
    op.drop_table("push_attempts")
    op.drop_table("live_pushes")
