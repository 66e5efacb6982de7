"""ingest looks, exports, source object attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 06:43:28.429993

``ingest_looks`` keeps the last look at objects a scan left waiting (maybe still uploading);
``exports`` records each render published to an exports location; ``source_objects.attempts`` counts
processing attempts so a flaky object is quarantined after a few. Batch mode keeps it SQLite-safe.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # First, while nothing references source_objects yet (SQLite may rebuild the table in batch mode).
    with op.batch_alter_table("source_objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))

    op.create_table(
        "ingest_looks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(length=255), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(length=128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_looks")),
        sa.UniqueConstraint("bucket", "key", name="uq_ingest_looks_bucket_key"),
    )
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("render_id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("source_object_id", sa.Integer(), nullable=True),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(length=128), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("task_run_id", sa.String(length=64), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["recording_id"], ["recordings.id"], name=op.f("fk_exports_recording_id_recordings")
        ),
        sa.ForeignKeyConstraint(["render_id"], ["renders.id"], name=op.f("fk_exports_render_id_renders")),
        sa.ForeignKeyConstraint(
            ["source_object_id"],
            ["source_objects.id"],
            name=op.f("fk_exports_source_object_id_source_objects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.UniqueConstraint("render_id", "uri", name="uq_exports_render_uri"),
    )
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exports_recording_id"), ["recording_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exports_render_id"), ["render_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exports_source_object_id"), ["source_object_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exports_source_object_id"))
        batch_op.drop_index(batch_op.f("ix_exports_render_id"))
        batch_op.drop_index(batch_op.f("ix_exports_recording_id"))

    op.drop_table("exports")
    op.drop_table("ingest_looks")
    with op.batch_alter_table("source_objects", schema=None) as batch_op:
        batch_op.drop_column("attempts")
