"""points.expiring: a programme's warning window and each lot's warned mark

- programs.expiry_warning_days (0: never warn, what every existing programme keeps).
- lots.warned_at, with a partial index of the lots not yet warned by when they expire, so the expiry
  schedule finds the newly due ones without reading every lot.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 16:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "ledger"


def upgrade() -> None:
    op.add_column(
        "programs",
        sa.Column("expiry_warning_days", sa.Integer(), server_default=sa.text("0"), nullable=False),
        schema=SCHEMA,
    )
    op.add_column("lots", sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True), schema=SCHEMA)
    op.create_index(
        "lots_unwarned",
        "lots",
        ["tenant_id", "expires_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("remaining > 0 AND NOT pending AND warned_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("lots_unwarned", table_name="lots", schema=SCHEMA)
    op.drop_column("lots", "warned_at", schema=SCHEMA)
    op.drop_column("programs", "expiry_warning_days", schema=SCHEMA)
