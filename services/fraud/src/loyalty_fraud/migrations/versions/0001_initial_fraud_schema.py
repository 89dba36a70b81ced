"""rules, settings, assessments, blocklist entries, review cases and their audit; the runtime's tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

from loyalty_runtime import append_only
from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "fraud"
TABLES = ("review_case_audit", "review_cases", "blocklist_entries", "assessments", "settings", "rules")


def _moment(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    create_runtime_tables_v1(op, SCHEMA)
    op.create_table(
        "rules",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("rule_id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _moment("created_at"),
        _moment("updated_at"),
        schema=SCHEMA,
    )
    op.create_table(
        "settings",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _moment("updated_at"),
        schema=SCHEMA,
    )
    _assessments()
    op.create_table(
        "blocklist_entries",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("entry_id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        _moment("expire_at", nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _moment("created_at"),
        schema=SCHEMA,
    )
    op.create_index(
        "blocklist_value_uq", "blocklist_entries", ["tenant_id", "type", "value"], unique=True, schema=SCHEMA
    )
    _review_cases()
    append_only.create_function(op, SCHEMA)
    append_only.protect(op, SCHEMA, "review_case_audit")


def _assessments() -> None:
    op.create_table(
        "assessments",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("assessment_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        _moment("created_at"),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "assessments_subject_uq",
        "assessments",
        ["tenant_id", "kind", "subject_key"],
        unique=True,
        schema=SCHEMA,
    )
    op.create_index(
        "assessments_newest",
        "assessments",
        ["tenant_id", sa.text("created_at DESC"), sa.text("assessment_id DESC")],
        schema=SCHEMA,
    )
    op.create_index(
        "assessments_customer",
        "assessments",
        ["tenant_id", "customer_id", sa.text("created_at DESC")],
        schema=SCHEMA,
    )


def _review_cases() -> None:
    op.create_table(
        "review_cases",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("review_case_id", sa.String(36), primary_key=True),
        sa.Column("assessment_id", sa.String(36), nullable=False),
        sa.Column("customer_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resolved_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("resolution_note", sa.String(2000), nullable=False, server_default=""),
        _moment("created_at"),
        _moment("resolved_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "review_cases_queue",
        "review_cases",
        ["tenant_id", "state", "created_at", "review_case_id"],
        schema=SCHEMA,
    )
    op.create_table(
        "review_case_audit",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("review_case_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("note", sa.String(2000), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_fraud_review_case_audit_review_case_id", "review_case_audit", ["review_case_id"], schema=SCHEMA
    )


def downgrade() -> None:
    append_only.unprotect(op, SCHEMA, "review_case_audit")
    append_only.drop_function(op, SCHEMA)
    for table in TABLES:
        op.drop_table(table, schema=SCHEMA)
    drop_runtime_tables_v1(op, SCHEMA)
