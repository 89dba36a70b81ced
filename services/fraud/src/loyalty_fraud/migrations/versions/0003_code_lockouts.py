"""code brute-force lockouts the gateway reports (code_attempts.locked), for reviewers; review cases'
assignee; a store's earn statistics spread over shards

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "fraud"


def upgrade() -> None:
    op.add_column(
        "earn_stats", sa.Column("shard", sa.SmallInteger(), server_default="0", nullable=False), schema=SCHEMA
    )
    op.drop_constraint("earn_stats_pkey", "earn_stats", schema=SCHEMA)
    op.create_primary_key(
        "earn_stats_pkey", "earn_stats", ["tenant_id", "scope", "scope_id", "shard"], schema=SCHEMA
    )
    op.add_column(
        "review_cases",
        sa.Column("assignee", sa.String(200), server_default="", nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "code_lockouts",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(16), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("code_lockouts_newest", "code_lockouts", ["tenant_id", "seq"], schema=SCHEMA)
    op.create_index(
        "code_lockouts_by_value", "code_lockouts", ["tenant_id", "key", "value", "seq"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("code_lockouts", schema=SCHEMA)
    op.drop_column("review_cases", "assignee", schema=SCHEMA)
    # Shards folded back into one row per scope before the column goes.
    op.execute(
        f"""WITH folded AS (DELETE FROM {SCHEMA}.earn_stats WHERE shard > 0 RETURNING tenant_id, scope, scope_id, earns, points)
            INSERT INTO {SCHEMA}.earn_stats AS s (tenant_id, scope, scope_id, shard, earns, points)
            SELECT tenant_id, scope, scope_id, 0, sum(earns), sum(points) FROM folded GROUP BY 1, 2, 3
            ON CONFLICT (tenant_id, scope, scope_id, shard)
            DO UPDATE SET earns = s.earns + excluded.earns, points = s.points + excluded.points"""
    )
    op.drop_constraint("earn_stats_pkey", "earn_stats", schema=SCHEMA)
    op.drop_column("earn_stats", "shard", schema=SCHEMA)
    op.create_primary_key("earn_stats_pkey", "earn_stats", ["tenant_id", "scope", "scope_id"], schema=SCHEMA)
