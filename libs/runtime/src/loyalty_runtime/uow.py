"""The unit of work every use case runs in (cosmicpython's service layer, with our runtime under it).

`async with units.change() as uow` gives one transaction on one connection, the caller's tenant, one
`now` from the injected clock, and an event recorder: `uow.record(event, key=...)` adds a protobuf
event to the service's outbox in the same transaction, so an event exists if and only if its change
committed. `units.read()` gives the same without a transaction (each statement sees committed data).

Idempotency (Stripe's model) for a state change requested over gRPC: `units.idempotent(request,
use_case, command, encode)` runs the use case and then, in the transaction's last statement, stores
its answer under the request's key together with the outbox rows. The key's row is the proof: a
second call with the same key blocks on the first's uncommitted row, and when the first commits finds
the key taken, rolls back everything it did and replays the first answer (if the first rolled back,
the second simply commits). A retry that fails against the first call's own effects (the identifier
it enrolled is taken, the points it burned are gone) replays the first answer too: a refusal looks up
the key before it is answered. The same key with another request is refused. So a state change costs
BEGIN, the use case's own statements, one statement for answer and events, and COMMIT; a retry costs
the use case again, once, and one read.

An answer that concerns a customer names them (`uow.concerns(customer_id)`), so erasing the customer
(`uow.erase_answers(customer_id)`) erases the stored answers and their request fingerprints too;
replaying one then says CUSTOMER_ERASED instead of returning their data.
"""

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import asyncpg
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, ServiceDescriptor
from google.protobuf.message import Message
from opentelemetry import trace

from loyalty.common.v1 import options_pb2
from loyalty_runtime.context import CallContext, current_call
from loyalty_runtime.db import Database
from loyalty_runtime.errors import Aborted, DomainError, FailedPrecondition, InvalidArgument, Reason

CommandT = TypeVar("CommandT")
ResultT = TypeVar("ResultT")
ResponseT = TypeVar("ResponseT", bound=Message)

MAX_KEY_LENGTH = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


@cache
def event_type_of(descriptor: Descriptor) -> str:
    name = descriptor.GetOptions().Extensions[options_pb2.event_type]
    if not name:
        raise TypeError(f"{descriptor.full_name} is not an event: it has no (loyalty.common.v1.event_type)")
    return name


def trace_parent() -> str | None:
    """The W3C traceparent of the current span, so a consumer's work joins the producer's trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def fingerprint(request: Message) -> bytes:
    """SHA-256 of the request's deterministic serialisation, without the key itself."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


def require_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            f"an idempotency key of 1 to {MAX_KEY_LENGTH} characters is required",
            field="idempotency_key",
        )
    return key


@dataclass(frozen=True)
class Rpc:
    method: str
    response_type: type[Message]


def rpcs_by_request(apis: Iterable[ServiceDescriptor]) -> dict[str, Rpc]:
    """Each request message belongs to one RPC (AIP-136), so a request names its method and answer."""
    return {
        method.input_type.full_name: Rpc(method.name, message_factory.GetMessageClass(method.output_type))
        for api in apis
        for method in api.methods
    }


class Statements:
    """The runtime's SQL on a service's own schema (the tables of events.py and idempotency.py)."""

    def __init__(self, schema: str) -> None:
        events = f"""
            INSERT INTO {schema}.outbox (tenant_id, event_type, key, payload, trace_parent)
            SELECT $1, e.event_type, e.key, e.payload, $5
            FROM unnest($2::varchar[], $3::varchar[], $4::bytea[]) WITH ORDINALITY
                 AS e(event_type, key, payload, n)
            ORDER BY e.n"""
        # No row comes back when the key is taken: another call with it committed first (this one
        # waited on its uncommitted row, or it committed long ago).
        remember = f"""
            INSERT INTO {schema}.idempotency_keys (tenant_id, key, method, fingerprint, response, subject)
            VALUES ($1, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING RETURNING true"""
        self.record_events = events
        self.remember = f"WITH events AS ({events}) {remember}"
        self.claimed = f"""
            SELECT method, fingerprint, response, erased_at FROM {schema}.idempotency_keys
            WHERE tenant_id = $1 AND key = $2"""
        # The fingerprint goes too: a hash of a request is a hash of the personal data in it.
        self.erase_answers = f"""
            UPDATE {schema}.idempotency_keys SET response = NULL, fingerprint = '', erased_at = now()
            WHERE tenant_id = $1 AND subject = ANY($2::varchar[]) AND erased_at IS NULL"""
        self.enqueue = f"""
            INSERT INTO {schema}.jobs (tenant_id, name, dedupe_key, payload, run_at)
            VALUES ($1, $2, $3, $4, COALESCE($5, now()))
            ON CONFLICT (tenant_id, name, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"""


@dataclass
class UnitOfWork:
    """What a use case gets: the connection, the caller, one `now`, and the outbox."""

    connection: asyncpg.Connection
    call: CallContext
    now: datetime
    statements: Statements
    _events: list[tuple[str, str, bytes]] = field(default_factory=list)
    _subject: str | None = None

    @property
    def tenant(self) -> str:
        return self.call.tenant_id

    def record(self, event: Message, *, key: str) -> None:
        """Publish `event` (a message with an `event_type` option) if and when this change commits.
        `key` is the aggregate it is about; consumers see one aggregate's events in order."""
        self._events.append((event_type_of(event.DESCRIPTOR), key, event.SerializeToString()))

    async def enqueue(
        self, job: str, payload: Message, *, run_at: datetime | None = None, dedupe_key: str | None = None
    ) -> None:
        """Run the definition's job `job` with `payload` if and when this change commits (at `run_at`
        if given); while a job with the same `dedupe_key` is kept, enqueueing it again does nothing."""
        await self.connection.execute(
            self.statements.enqueue, self.tenant, job, dedupe_key, payload.SerializeToString(), run_at
        )

    def concerns(self, customer_id: str) -> None:
        """The stored answer of this call is about this customer (erased with them)."""
        self._subject = customer_id

    async def erase_answers(self, *customer_ids: str) -> None:
        """Forget every stored answer about these customers (erasure); a replay of one then answers
        CUSTOMER_ERASED."""
        await self.connection.execute(self.statements.erase_answers, self.tenant, list(customer_ids))

    @property
    def recorded_events(self) -> int:
        return len(self._events)

    def _event_columns(self) -> tuple:
        events = self._events
        return [e[0] for e in events], [e[1] for e in events], [e[2] for e in events], trace_parent()

    async def _finish(self) -> None:
        """Write the recorded events (a change without an idempotency key)."""
        if self._events:
            await self.connection.execute(self.statements.record_events, self.tenant, *self._event_columns())

    async def _finish_once(self, key: str, rpc: "Rpc", digest: bytes, answer: Message) -> bool:
        """Write the events and store the answer under the key; False if the key was taken."""
        return bool(
            await self.connection.fetchval(
                self.statements.remember,
                self.tenant,
                *self._event_columns(),
                key,
                rpc.method,
                digest,
                answer.SerializeToString(deterministic=True),
                self._subject,
            )
        )


class UnitsOfWork:
    """Makes units of work for one service: its database, schema, RPCs and clock."""

    def __init__(
        self,
        database: Database,
        schema: str,
        *,
        apis: Iterable[ServiceDescriptor] = (),
        clock: Callable[[], datetime] = utcnow,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.database = database
        self.statements = Statements(schema)
        self.clock = clock
        self.rpcs = rpcs_by_request(apis)
        # Called after a commit that wrote events: wakes this process's outbox relay.
        self.on_events = on_events

    @asynccontextmanager
    async def read(self) -> AsyncIterator[UnitOfWork]:
        call = current_call()
        async with self.database.connection(call.remaining_seconds()) as connection:
            yield UnitOfWork(connection, call, self.clock(), self.statements)

    @asynccontextmanager
    async def change(self) -> AsyncIterator[UnitOfWork]:
        """One transaction; its recorded events are written just before COMMIT."""
        call = current_call()
        async with self.database.transaction(call.remaining_seconds()) as connection:
            uow = UnitOfWork(connection, call, self.clock(), self.statements)
            yield uow
            await uow._finish()
        self._committed(uow)

    @asynccontextmanager
    async def within(self, connection: asyncpg.Connection, call: CallContext) -> AsyncIterator[UnitOfWork]:
        """A unit of work in a transaction the caller holds (a job worker locks its job first and
        learns the tenant from it); its events are written when the block ends, before the caller's
        COMMIT."""
        uow = UnitOfWork(connection, call, self.clock(), self.statements)
        yield uow
        await uow._finish()

    async def idempotent(
        self,
        request: Message,
        use_case: Callable[[UnitOfWork, CommandT], Awaitable[ResultT]],
        command: CommandT,
        encode: Callable[[ResultT], ResponseT],
    ) -> ResponseT:
        """Run a state change at most once per idempotency key; a retry gets the first answer."""
        rpc = self.rpcs[request.DESCRIPTOR.full_name]
        key = require_key(request.idempotency_key)
        digest = fingerprint(request)
        call = current_call()
        refusal: DomainError | None = None
        try:
            async with self.database.transaction(call.remaining_seconds()) as connection:
                uow = UnitOfWork(connection, call, self.clock(), self.statements)
                try:
                    response = encode(await use_case(uow, command))
                except DomainError as error:
                    refusal = error
                    raise
                if not await uow._finish_once(key, rpc, digest, response):
                    raise _Answered
        except _Answered:
            return await self._replay(rpc, key, digest, call)
        except DomainError as error:
            # A retry of a change that did happen can fail against its own effects (IDENTIFIER_TAKEN,
            # INSUFFICIENT_BALANCE): then the first answer is the answer, not the refusal.
            if error is refusal and (replay := await self._replay(rpc, key, digest, call, must_exist=False)):
                return replay
            raise
        self._committed(uow)
        return response

    async def _replay(
        self, rpc: "Rpc", key: str, digest: bytes, call: CallContext, *, must_exist: bool = True
    ) -> Message | None:
        """The stored answer to this request under `key`; refused if the key answered another."""
        async with self.database.connection(call.remaining_seconds()) as connection:
            row = await connection.fetchrow(self.statements.claimed, call.tenant_id, key)
        if row is None:
            if must_exist:
                raise Aborted(Reason.CONCURRENT_MODIFICATION, "retry with the same key")
            return None
        if row["erased_at"] is not None:
            raise FailedPrecondition(
                Reason.CUSTOMER_ERASED, "the answer to this request was erased with the customer"
            )
        if row["method"] != rpc.method or bytes(row["fingerprint"]) != digest or row["response"] is None:
            raise FailedPrecondition(
                Reason.IDEMPOTENCY_KEY_REUSED,
                "this idempotency key was used for a different request",
                field="idempotency_key",
            )
        return rpc.response_type.FromString(row["response"])

    def _committed(self, uow: UnitOfWork) -> None:
        if uow.recorded_events and self.on_events is not None:
            self.on_events()


class _Answered(Exception):
    """The key was taken by a call that committed first: roll back, answer what it answered."""


def decode_rows(rows: Iterable[Any], factory: Callable[..., ResultT]) -> list[ResultT]:
    """Records -> dataclasses whose fields are the selected columns."""
    return [factory(**row) for row in rows]
