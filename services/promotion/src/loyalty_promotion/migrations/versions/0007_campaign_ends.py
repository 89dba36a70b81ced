"""campaigns.end_at and ended_at: the schedule's end, and the end campaign.ended was published for

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 01:40:00
"""

from collections.abc import Sequence
from datetime import UTC

import sqlalchemy as sa
from alembic import op

from loyalty.promotion.v1 import campaign_pb2

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "promotion"


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("end_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("campaigns", sa.Column("ended_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    connection = op.get_bind()
    rows = connection.execute(sa.text(f"SELECT tenant_id, campaign_id, payload FROM {SCHEMA}.campaigns"))
    for tenant_id, campaign_id, payload in rows.fetchall():
        schedule = campaign_pb2.Campaign.FromString(payload).schedule
        if not schedule.HasField("end_time"):
            continue
        # Campaigns that ended before the event existed are not announced now.
        connection.execute(
            sa.text(
                f"""UPDATE {SCHEMA}.campaigns SET end_at = :end_at,
                        ended_at = CASE WHEN :end_at <= now() THEN :end_at END
                    WHERE tenant_id = :tenant_id AND campaign_id = :campaign_id"""
            ),
            {
                "end_at": schedule.end_time.ToDatetime(tzinfo=UTC),
                "tenant_id": tenant_id,
                "campaign_id": campaign_id,
            },
        )
    op.create_index(
        "campaigns_ending",
        "campaigns",
        ["end_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("ended_at IS NULL AND state IN ('scheduled', 'active')"),
    )


def downgrade() -> None:
    op.drop_index("campaigns_ending", table_name="campaigns", schema=SCHEMA)
    op.drop_column("campaigns", "ended_at", schema=SCHEMA)
    op.drop_column("campaigns", "end_at", schema=SCHEMA)
