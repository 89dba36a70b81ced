"""The tables the runtime keeps in every service's own schema, for its Alembic migrations:
idempotency keys, the outbox, the consumer's memory of handled events, and durable jobs.

A service's models call `add_runtime_tables(Base.metadata)`; its migrations create them like its own.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    text,
)


def add_runtime_tables(metadata: MetaData) -> None:
    Table(
        "idempotency_keys",
        metadata,
        Column("tenant_id", String(64), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("method", String(100), nullable=False),
        Column("fingerprint", LargeBinary, nullable=False),
        Column("response", LargeBinary),
        # The customer the answer is about, so erasure can forget it.
        Column("subject", String(64)),
        Column("erased_at", DateTime(timezone=True)),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index(
            "idempotency_keys_subject", "tenant_id", "subject", postgresql_where=text("subject IS NOT NULL")
        ),
        Index("idempotency_keys_created", "created_at"),
    )
    Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("tenant_id", String(64), nullable=False),
        Column("event_type", String(100), nullable=False),
        Column("key", String(200), nullable=False),
        # The event's protobuf message (its type is the event_type's message in protos/).
        Column("payload", LargeBinary, nullable=False),
        Column("trace_parent", String(64)),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Index("outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        Index("outbox_published", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )
    Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(200), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("processed_events_age", "processed_at"),
    )
    Table(
        "jobs",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("tenant_id", String(64), nullable=False),
        Column("name", String(100), nullable=False),
        # Enqueueing the same (tenant, name, dedupe_key) twice makes one job.
        Column("dedupe_key", String(200)),
        Column("payload", LargeBinary, nullable=False),
        Column("run_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", String(200)),
        Column("state", String(10), nullable=False, server_default="queued"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("finished_at", DateTime(timezone=True)),
        Index("jobs_due", "run_at", postgresql_where=text("state = 'queued'")),
        # Done jobs are kept (for their dedupe key) until the retention, then pruned by this.
        Index("jobs_finished", "finished_at", postgresql_where=text("state = 'done'")),
        Index(
            "jobs_dedupe",
            "tenant_id",
            "name",
            "dedupe_key",
            unique=True,
            postgresql_where=text("dedupe_key IS NOT NULL"),
        ),
    )
    Table(
        "schedules",
        metadata,
        # One row per periodic task: whoever moves `next_run_at` forward runs that period.
        Column("name", String(100), primary_key=True),
        Column("next_run_at", DateTime(timezone=True), nullable=False),
    )
