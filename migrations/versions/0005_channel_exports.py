"""channel exports: what each export is (channel, spec, variant, checks) and clip transcripts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 18:20:00.000000

An export is one file made for one publishing channel from one render (a long clip split at pauses
gives one export per part). The new columns say which channel and spec version made it, with which
variant parameters (crop, size, loudness target), what the file measured (sha256, loudness, true
peak) and whether it passed the channel's checks. Existing rows are the native-size MP4s ``run``
wrote before channels existed: they read as channel ``master``, spec version NULL (so nightly
re-exports them only when asked for channels).

``transcripts`` keeps one speech recognition result per clip audio and model, so captions are
computed once per clip, not once per channel.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_EXPORT_COLUMNS = (
    sa.Column("channel", sa.String(length=64), nullable=False, server_default="master"),
    sa.Column("spec_version", sa.String(length=64), nullable=True),
    sa.Column("part", sa.Integer(), nullable=True),
    sa.Column("variant", sa.JSON(), nullable=True),
    sa.Column("sha256", sa.String(length=64), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=True),
    sa.Column("loudness_lufs", sa.Float(), nullable=True),
    sa.Column("true_peak_db", sa.Float(), nullable=True),
    sa.Column("validation", sa.JSON(), nullable=True),
    sa.Column("status", sa.String(length=16), nullable=False, server_default="published"),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("destination", sa.Text(), nullable=True),
)


def upgrade() -> None:
    for column in _EXPORT_COLUMNS:
        op.add_column("exports", column)
    op.create_index("ix_exports_channel", "exports", ["channel"], unique=False)
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audio_key", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("clip_id", sa.Integer(), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clip_id"], ["clips.id"], name="fk_transcripts_clip_id_clips"),
        sa.PrimaryKeyConstraint("id", name="pk_transcripts"),
        sa.UniqueConstraint("audio_key", "model", name="uq_transcripts_audio_key"),
    )
    op.create_index("ix_transcripts_clip_id", "transcripts", ["clip_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_transcripts_clip_id", table_name="transcripts")
    op.drop_table("transcripts")
    op.drop_index("ix_exports_channel", table_name="exports")
    for column in reversed(_EXPORT_COLUMNS):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE exports DROP COLUMN {column.name}")
        else:
            op.drop_column("exports", column.name)
