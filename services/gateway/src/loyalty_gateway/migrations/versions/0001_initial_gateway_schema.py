"""the gateway's schema: tenant settings, terminals, API keys, admin users, the audit log (append-only,
hash-chained), checkout sagas and their returns, and the runtime's tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 17:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from loyalty_runtime import append_only
from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "gateway"


def _at(name: str, *, nullable: bool = False, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text("now()") if default else None,
    )


def upgrade() -> None:
    create_runtime_tables_v1(op, SCHEMA)
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("default_program_id", sa.String(36), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("default_locale", sa.String(35), nullable=False),
        _at("updated_at", default=True),
        schema=SCHEMA,
    )
    op.create_table(
        "terminals",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("terminal_id", sa.Uuid(), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("store_id", sa.String(100), nullable=False),
        sa.Column("labels", postgresql.JSONB(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        _at("created_at"),
        _at("revoked_at", nullable=True),
        sa.CheckConstraint("state IN ('active', 'revoked')", name="terminals_state"),
        schema=SCHEMA,
    )
    op.create_table(
        "api_keys",
        sa.Column("api_key_id", sa.Uuid(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(32)), nullable=False),
        sa.Column("terminal_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.BigInteger(), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        _at("expire_at", nullable=True),
        _at("created_at"),
        _at("revoked_at", nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("rotated_from", sa.Uuid(), nullable=True),
        sa.CheckConstraint("state IN ('active', 'revoked')", name="api_keys_state"),
        schema=SCHEMA,
    )
    op.create_index("api_keys_tenant", "api_keys", ["tenant_id", "created_at"], schema=SCHEMA)
    op.create_table(
        "admin_users",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("admin_user_id", sa.Uuid(), primary_key=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("roles", postgresql.ARRAY(sa.String(16)), nullable=False),
        _at("created_at"),
        _at("disabled_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "admin_users_username", "admin_users", ["tenant_id", "username"], unique=True, schema=SCHEMA
    )
    op.create_table(
        "audit_log",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("resource", sa.String(300), nullable=False),
        sa.Column("fields", postgresql.ARRAY(sa.String(100)), nullable=False),
        _at("created_at"),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "checkouts",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("checkout_id", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("api_key_id", sa.String(64), nullable=False),
        sa.Column("terminal_id", sa.String(64), nullable=False),
        sa.Column("store_id", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("hold_id", sa.String(36), nullable=False),
        sa.Column("evaluation", sa.LargeBinary(), nullable=True),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("steps", postgresql.JSONB(), nullable=False),
        sa.Column("rewards_withheld", sa.Boolean(), nullable=False),
        sa.Column("receipt_number", sa.String(100), nullable=False),
        _at("purchase_at"),
        _at("expire_at", nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _at("lease_until", nullable=True),
        _at("created_at"),
        _at("updated_at"),
        _at("committed_at", nullable=True),
        sa.CheckConstraint(
            "state IN ('processing', 'reserved', 'committed', 'declined', 'failed', 'cancelled')",
            name="checkouts_state",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "checkout_returns",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("checkout_id", sa.String(200), primary_key=True),
        sa.Column("return_id", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("units", postgresql.JSONB(), nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
        _at("created_at"),
        sa.CheckConstraint("state IN ('processing', 'completed')", name="checkout_returns_state"),
        schema=SCHEMA,
    )
    append_only.create_function(op, SCHEMA)
    append_only.protect(op, SCHEMA, "audit_log")


def downgrade() -> None:
    for table in ("checkout_returns", "checkouts", "audit_log", "admin_users", "api_keys", "terminals"):
        op.drop_table(table, schema=SCHEMA)
    op.drop_table("tenant_settings", schema=SCHEMA)
    drop_runtime_tables_v1(op, SCHEMA)
