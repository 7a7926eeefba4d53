"""The prompt of each model call in a column, so costs group by prompt version.

A call's prompt template and its version were in the ``meta`` JSON only. With a
``prompt`` column (``answer_sources@00b1a0717d7a``), ``keel costs --by prompt``
compares what each version of a prompt costs. Existing rows are filled from
their ``meta`` in SQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_FILL = {
    "sqlite": (
        "UPDATE keel_model_calls SET prompt = "
        "substr(json_extract(meta, '$.prompt') || '@' || json_extract(meta, '$.prompt_version'), 1, 80) "
        "WHERE json_valid(meta) AND json_extract(meta, '$.prompt') IS NOT NULL "
        "AND json_extract(meta, '$.prompt_version') IS NOT NULL"
    ),
    "postgresql": (
        "UPDATE keel_model_calls SET prompt = "
        "left((meta::json ->> 'prompt') || '@' || (meta::json ->> 'prompt_version'), 80) "
        "WHERE (meta::json ->> 'prompt') IS NOT NULL AND (meta::json ->> 'prompt_version') IS NOT NULL"
    ),
}


def upgrade() -> None:
    op.add_column("keel_model_calls", sa.Column("prompt", sa.String(80)))
    op.execute(_FILL[op.get_bind().dialect.name])


def downgrade() -> None:
    with op.batch_alter_table("keel_model_calls") as table:
        table.drop_column("prompt")
