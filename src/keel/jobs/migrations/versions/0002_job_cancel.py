"""Cancelling a job: when it was asked for, and by whom (the job's status becomes ``cancelled``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("keel_jobs", sa.Column("cancel_requested_at", sa.Float))
    op.add_column("keel_jobs", sa.Column("cancel_requested_by", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("keel_jobs") as batch:
        batch.drop_column("cancel_requested_by")
        batch.drop_column("cancel_requested_at")
