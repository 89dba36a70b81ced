"""templates, messages, delivery attempts, cap policies, the runtime's tables

Revision ID: 0001
Revises:
Create Date: 2026-12-02 12:45:00

CHECK constraints back the domain's enums, so no other value can be stored. A message's
(tenant_id, idempotency_key) is unique: the same logical message is stored once.
"""

from alembic import op

from loyalty_runtime.tables import create_runtime_tables_v1, drop_runtime_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "notification"

CHANNELS = "('email', 'sms', 'push', 'in_app', 'webhook')"
STATUSES = "('queued', 'scheduled', 'sending', 'sent', 'delivered', 'failed', 'suppressed', 'cancelled')"


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(f"""
        CREATE TABLE {SCHEMA}.templates (
            tenant_id varchar(64) NOT NULL,
            template_id uuid NOT NULL,
            key varchar(100) NOT NULL,
            display_name varchar(200) NOT NULL DEFAULT '',
            purpose varchar(20) NOT NULL CHECK (purpose IN ('transactional', 'marketing')),
            state varchar(20) NOT NULL CHECK (state IN ('active', 'archived')),
            default_locale varchar(35) NOT NULL,
            variable_names varchar(100)[] NOT NULL DEFAULT '{{}}',
            variants jsonb NOT NULL,
            version bigint NOT NULL DEFAULT 1,
            create_time timestamptz NOT NULL,
            update_time timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, template_id),
            UNIQUE (tenant_id, key)
        )""")
    op.execute(f"""
        CREATE TABLE {SCHEMA}.messages (
            tenant_id varchar(64) NOT NULL,
            message_id uuid NOT NULL,
            idempotency_key varchar(200) NOT NULL,
            customer_id varchar(64) NOT NULL,
            template_id uuid,
            template_key varchar(100) NOT NULL,
            template_version bigint NOT NULL DEFAULT 0,
            channel varchar(20) CHECK (channel IN {CHANNELS}),
            locale varchar(35) NOT NULL DEFAULT '',
            purpose varchar(20) NOT NULL CHECK (purpose IN ('transactional', 'marketing')),
            status varchar(20) NOT NULL CHECK (status IN {STATUSES}),
            suppression_reason varchar(40),
            recipient varchar(2048) NOT NULL DEFAULT '',
            recipient_hint varchar(400) NOT NULL DEFAULT '',
            subject text NOT NULL DEFAULT '',
            body text NOT NULL DEFAULT '',
            html_body text NOT NULL DEFAULT '',
            correlation_id varchar(200) NOT NULL DEFAULT '',
            failure_reason text NOT NULL DEFAULT '',
            attempt_count integer NOT NULL DEFAULT 0,
            create_time timestamptz NOT NULL,
            scheduled_time timestamptz,
            sent_time timestamptz,
            update_time timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, message_id),
            UNIQUE (tenant_id, idempotency_key),
            CHECK ((status = 'suppressed') = (suppression_reason IS NOT NULL))
        )""")
    # Frequency caps count a customer's recent messages.
    op.execute(f"CREATE INDEX messages_customer ON {SCHEMA}.messages (tenant_id, customer_id, create_time)")
    op.execute(f"""
        CREATE TABLE {SCHEMA}.delivery_attempts (
            tenant_id varchar(64) NOT NULL,
            message_id uuid NOT NULL,
            attempt_number integer NOT NULL CHECK (attempt_number > 0),
            attempt_time timestamptz NOT NULL,
            status varchar(20) NOT NULL CHECK (status IN ('succeeded', 'retryable', 'permanent')),
            provider varchar(40) NOT NULL,
            provider_message_id varchar(200) NOT NULL DEFAULT '',
            error_code varchar(40) NOT NULL DEFAULT '',
            error_message varchar(500) NOT NULL DEFAULT '',
            PRIMARY KEY (tenant_id, message_id, attempt_number),
            FOREIGN KEY (tenant_id, message_id) REFERENCES {SCHEMA}.messages (tenant_id, message_id)
        )""")
    op.execute(f"""
        CREATE TABLE {SCHEMA}.cap_policies (
            tenant_id varchar(64) PRIMARY KEY,
            caps jsonb NOT NULL DEFAULT '[]',
            quiet_start_minute integer CHECK (quiet_start_minute BETWEEN 0 AND 1439),
            quiet_end_minute integer CHECK (quiet_end_minute BETWEEN 0 AND 1439),
            default_time_zone varchar(64) NOT NULL DEFAULT '',
            version bigint NOT NULL DEFAULT 1,
            update_time timestamptz NOT NULL
        )""")
    create_runtime_tables_v1(op, SCHEMA)


def downgrade() -> None:
    drop_runtime_tables_v1(op, SCHEMA)
    for table in ("delivery_attempts", "messages", "templates", "cap_policies"):
        op.execute(f"DROP TABLE {SCHEMA}.{table}")
