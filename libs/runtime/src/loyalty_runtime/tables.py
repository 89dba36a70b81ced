"""The tables the runtime keeps in every service's own schema: idempotency keys, the outbox, the
consumer's memory of handled events, durable jobs and schedules.

A service's models call `add_runtime_tables(Base.metadata)` (what the tables are now); its Alembic
revisions call the versioned steps below (what a revision did when it was written): a service's
first revision on this runtime calls `create_runtime_tables_v1(op, schema)`. When these tables
change, a `upgrade_runtime_tables_v2` step joins v1 (never edit v1) and each service adds a revision
that calls it; the services' model-vs-migration tests hold both sides equal.
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


RUNTIME_TABLES = ("idempotency_keys", "outbox", "processed_events", "jobs", "schedules")


def create_runtime_tables_v1(op, schema: str, tables: tuple[str, ...] = RUNTIME_TABLES) -> None:
    """The runtime's tables (or some of them) as of v1, for an Alembic revision (`op` is alembic.op);
    a revision that converts an older table of its own in place creates only the others."""
    import sqlalchemy as sa

    for table in tables:
        _V1[table](op, sa, schema)


def drop_runtime_tables_v1(op, schema: str, tables: tuple[str, ...] = RUNTIME_TABLES) -> None:
    for table in reversed(tables):
        op.drop_table(table, schema=schema)


def _idempotency_keys_v1(op, sa, schema: str) -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key"),
        schema=schema,
    )
    op.create_index(
        "idempotency_keys_subject",
        "idempotency_keys",
        ["tenant_id", "subject"],
        schema=schema,
        postgresql_where=sa.text("subject IS NOT NULL"),
    )
    op.create_index("idempotency_keys_created", "idempotency_keys", ["created_at"], schema=schema)


def _outbox_v1(op, sa, schema: str) -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("trace_parent", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        schema=schema,
    )
    # Every row is deleted minutes after its insert: vacuum after a fixed number of dead rows rather
    # than a share of a table that stays small, so the relay's scan never wades through them.
    op.execute(
        f"ALTER TABLE {schema}.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000)"
    )


def _processed_events_v1(op, sa, schema: str) -> None:
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
        schema=schema,
    )
    op.create_index("processed_events_age", "processed_events", ["processed_at"], schema=schema)


def _jobs_v1(op, sa, schema: str) -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=10), server_default="queued", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        schema=schema,
    )
    op.create_index(
        "jobs_due", "jobs", ["run_at"], schema=schema, postgresql_where=sa.text("state = 'queued'")
    )
    op.create_index(
        "jobs_finished", "jobs", ["finished_at"], schema=schema, postgresql_where=sa.text("state = 'done'")
    )
    op.create_index(
        "jobs_dedupe",
        "jobs",
        ["tenant_id", "name", "dedupe_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )


def _schedules_v1(op, sa, schema: str) -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        schema=schema,
    )


_V1 = {
    "idempotency_keys": _idempotency_keys_v1,
    "outbox": _outbox_v1,
    "processed_events": _processed_events_v1,
    "jobs": _jobs_v1,
    "schedules": _schedules_v1,
}
