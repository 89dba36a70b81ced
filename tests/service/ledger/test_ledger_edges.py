"""Every mutating ledger RPC, driven with invalid requests: never INTERNAL or UNKNOWN, never a row
written, never a value that reaches PostgreSQL unvalidated (issue 7: 114 of 403 invalid requests
answered INTERNAL, and a 65-character tier code was stored and then broke every earn reaching it).

Each example starts from a valid request of one RPC against a tenant with real rows behind it,
scrambles some of its top-level fields with arbitrary values of their type (garbage text, any int64,
undefined enum numbers, times out of range), then applies one change that makes it certainly
invalid, drawn from a table of what each field must refuse. A second test sends raw bytes that are
not a request of the method at all.
"""

import logging
import uuid

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings, strategies as st

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_runtime.db import asyncpg_dsn
from tests.service.ledger.helpers import Client, key

NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
REFUSED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
}
TABLES = (
    "programs",
    "accounts",
    "journal_entries",
    "postings",
    "lots",
    "holds",
    "idempotency_keys",
    # not the outbox: its relay deletes what it publishes, meanwhile
    "checkouts",
    "checkout_lines",
    "checkout_returns",
)
MUTATING = (
    "CreateProgram",
    "OpenAccount",
    "EarnPoints",
    "HoldPoints",
    "CaptureHold",
    "ReleaseHold",
    "ReverseEntry",
    "TransferPoints",
    "RunExpiry",
    "RecomputeTiers",
    "SettleCheckout",
    "ReturnCheckoutLines",
)


class World:
    """A tenant with a programme, two funded accounts, a live hold, an earn and a settled checkout."""

    async def build(self, client: Client) -> "World":
        self.client = client
        program = await client.program(
            tiers=[pb.Tier(code="SILVER", qualifying_points=10, earn_multiplier_bps=11_000)]
        )
        self.program = program.program_id
        self.account = await client.account(program)
        self.peer = await client.account(program)
        self.entry = (await client.earn(self.account, 500)).entry.entry_id
        await client.earn(self.peer, 500)
        self.hold = (await client.hold(self.account, 50)).hold_id
        settle = api.SettleCheckoutRequest(
            account_id=self.peer,
            checkout_id="chk-world",
            lines=[pb.CheckoutLine(line_id="a", quantity=2, earn_points=10)],
            idempotency_key=key(),
        )
        await client.SettleCheckout(settle)
        return self

    def valid(self, method: str):
        """A request of `method` that would succeed."""
        k = key()
        return {
            "CreateProgram": lambda: api.CreateProgramRequest(
                program=pb.Program(display_name="x", asset_kind=pb.ASSET_KIND_POINTS), idempotency_key=k
            ),
            "OpenAccount": lambda: api.OpenAccountRequest(
                program_id=self.program, customer_id=key(), idempotency_key=k
            ),
            "EarnPoints": lambda: api.EarnPointsRequest(account_id=self.account, amount=5, idempotency_key=k),
            "HoldPoints": lambda: api.HoldPointsRequest(account_id=self.account, amount=5, idempotency_key=k),
            "CaptureHold": lambda: api.CaptureHoldRequest(hold_id=self.hold, amount=5, idempotency_key=k),
            "ReleaseHold": lambda: api.ReleaseHoldRequest(hold_id=self.hold, idempotency_key=k),
            "ReverseEntry": lambda: api.ReverseEntryRequest(entry_id=self.entry, amount=5, idempotency_key=k),
            "TransferPoints": lambda: api.TransferPointsRequest(
                source_account_id=self.account, destination_account_id=self.peer, amount=5, idempotency_key=k
            ),
            "RunExpiry": lambda: api.RunExpiryRequest(program_id=self.program, idempotency_key=k),
            "RecomputeTiers": lambda: api.RecomputeTiersRequest(program_id=self.program, idempotency_key=k),
            "SettleCheckout": lambda: api.SettleCheckoutRequest(
                account_id=self.account,
                checkout_id=key(),
                hold_id=self.hold,
                lines=[pb.CheckoutLine(line_id="a", quantity=1, earn_points=3)],
                idempotency_key=k,
            ),
            "ReturnCheckoutLines": lambda: api.ReturnCheckoutLinesRequest(
                checkout_id="chk-world",
                lines=[pb.CheckoutLineReturn(line_id="a", quantity=1)],
                idempotency_key=k,
            ),
        }[method]()


def _set(path: str, value):
    """A change that sets `path` ("program.tiers[0].code", "amount") to `value`."""

    def change(request) -> None:
        *parents, leaf = path.split(".")
        target = request
        for part in parents:
            name, _, index = part.partition("[")
            target = getattr(target, name)
            if index:
                position = int(index.rstrip("]"))
                while len(target) <= position:
                    target.add()
                target = target[position]
        field = target.DESCRIPTOR.fields_by_name[leaf]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(target, leaf).CopyFrom(value)
        else:
            setattr(target, leaf, value)

    return change


def _times(seconds: int, nanos: int = 0):
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=seconds, nanos=nanos)


def _duration(seconds: int, nanos: int = 0):
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=seconds, nanos=nanos)


def _many_lines(request) -> None:
    del request.lines[:]
    request.lines.extend(pb.CheckoutLine(line_id=str(i), quantity=1) for i in range(1001))


def _duplicate_lines(request) -> None:
    request.lines.add().CopyFrom(request.lines[0])


def _string_breakers(field: str, limit: int):
    return [_set(field, "a\x00b"), _set(field, "x" * (limit + 1)), _set(field, "bell\x07")]


ID_BREAKERS = lambda field: [  # noqa: E731
    _set(field, "not-an-id"),
    _set(field, str(uuid.uuid4())),
    _set(field, "'; DROP TABLE ledger.accounts; --"),
    *_string_breakers(field, 36),
]
AMOUNT_BREAKERS = lambda field: [_set(field, v) for v in (0, -1, 10**15 + 1, -(2**63), 2**63 - 1)]  # noqa: E731
KEY_BREAKERS = [
    _set("idempotency_key", ""),
    _set("idempotency_key", "k" * 201),
    _set("idempotency_key", "k\x00"),
]

INVALID = {
    "CreateProgram": [
        *KEY_BREAKERS,
        _set("program.asset_kind", 0),
        _set("program.asset_kind", 77),
        _set("program.expiry_policy.rule", 42),
        _set("program.expiry_policy", pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=0)),
        _set("program.tiers[0].code", "G" * 65),
        _set("program.tiers[0].code", ""),
        _set("program.tiers[0].qualifying_points", -1),
        _set("program.tiers[0].earn_multiplier_bps", -5),
        _set("program.tier_window_days", -1),
        _set("program.default_hold_ttl", _duration(8 * 86_400)),
        _set("program.default_hold_ttl", _duration(-3)),
        _set("program.default_hold_ttl", _duration(10**12)),
        *_string_breakers("program.display_name", 200),
        *_string_breakers("program.asset_code", 16),
    ],
    "OpenAccount": [
        *KEY_BREAKERS,
        *ID_BREAKERS("program_id"),
        _set("customer_id", ""),
        *_string_breakers("customer_id", 200),
    ],
    "EarnPoints": [
        *KEY_BREAKERS,
        *ID_BREAKERS("account_id"),
        *AMOUNT_BREAKERS("amount"),
        _set("asset_code", "EUR"),
        *_string_breakers("reason", 500),
        *_string_breakers("source_ref", 200),
        _set("expire_time", _times(0)),
        _set("expire_time", _times(253_402_300_800)),
        _set("available_time", _times(253_402_300_799)),
        _set("available_time", _times(1, -1)),
    ],
    "HoldPoints": [
        *KEY_BREAKERS,
        *ID_BREAKERS("account_id"),
        *AMOUNT_BREAKERS("amount"),
        _set("amount", 10**12),
        _set("ttl", _duration(0, 5)),
        _set("ttl", _duration(-1)),
        _set("ttl", _duration(10**13)),
        *_string_breakers("reason", 500),
    ],
    "CaptureHold": [*KEY_BREAKERS, *ID_BREAKERS("hold_id"), *AMOUNT_BREAKERS("amount"), _set("amount", 51)],
    "ReleaseHold": [*KEY_BREAKERS, *ID_BREAKERS("hold_id")],
    "ReverseEntry": [
        *KEY_BREAKERS,
        *ID_BREAKERS("entry_id"),
        *AMOUNT_BREAKERS("amount"),
        _set("amount", 501),
    ],
    "TransferPoints": [
        *KEY_BREAKERS,
        *ID_BREAKERS("source_account_id"),
        *ID_BREAKERS("destination_account_id"),
        *AMOUNT_BREAKERS("amount"),
        _set("amount", 10**9),
    ],
    "RunExpiry": [*KEY_BREAKERS, *ID_BREAKERS("program_id")],
    "RecomputeTiers": [*KEY_BREAKERS, *ID_BREAKERS("program_id")],
    "SettleCheckout": [
        *KEY_BREAKERS,
        *ID_BREAKERS("account_id"),
        *ID_BREAKERS("hold_id"),
        _set("checkout_id", ""),
        *_string_breakers("checkout_id", 200),
        *AMOUNT_BREAKERS("burn_amount"),
        _set("lines[0].quantity", 0),
        _set("lines[0].earn_points", -1),
        _set("lines[0].burn_points", 7),
        _set("lines[0].line_id", ""),
        *_string_breakers("lines[0].line_id", 100),
        _many_lines,
        _duplicate_lines,
    ],
    "ReturnCheckoutLines": [
        *KEY_BREAKERS,
        _set("checkout_id", "never-settled"),
        _set("lines[0].quantity", 3),
        _set("lines[0].quantity", 0),
        _set("lines[0].line_id", "zz"),
        *_string_breakers("lines[0].line_id", 100),
        _duplicate_lines,
    ],
}


def _arbitrary(field: FieldDescriptor):
    """Any value of the field's type, valid or not."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=40), st.text(min_size=190, max_size=600))
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return st.integers(-(2**63), 2**63 - 1)
    if field.type == FieldDescriptor.TYPE_INT32:
        return st.integers(-(2**31), 2**31 - 1)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 9)
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
        return st.builds(_times, st.integers(-(2**40), 2**40), st.integers(-5, 10**9 + 5))
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.Duration":
        return st.builds(_duration, st.integers(-(2**40), 2**40), st.integers(-5, 10**9 + 5))
    return None


@st.composite
def invalid_requests(draw, world: World):
    method = draw(st.sampled_from(MUTATING))
    request = world.valid(method)
    fields = [
        f for f in request.DESCRIPTOR.fields if _arbitrary(f) is not None and f.name != "idempotency_key"
    ]
    for field in draw(st.lists(st.sampled_from(fields), max_size=3, unique=True)) if fields else ():
        _set(field.name, draw(_arbitrary(field), label=field.name))(request)
    breaker = draw(st.sampled_from(INVALID[method]))
    breaker(request)
    return method, request


async def _state(connection: asyncpg.Connection, tenant: str) -> dict:
    """Every row of the tenant, table by table: any insert or update shows."""
    return {
        table: sorted(
            map(tuple, await connection.fetch(f"SELECT * FROM ledger.{table} WHERE tenant_id = $1", tenant))
        )
        for table in TABLES
    }


@pytest.fixture(scope="module")
async def world(ledger):
    return await World().build(Client(ledger, f"edge-{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="module")
async def rows(ledger_settings):
    connection = await asyncpg.connect(asyncpg_dsn(ledger_settings.database_url))
    yield connection
    await connection.close()


@pytest.fixture
def unvalidated(caplog):
    """Warnings that a value reached the database unvalidated (db.as_domain_error's 22xxx)."""
    caplog.set_level(logging.WARNING, logger="loyalty.db")
    return lambda: [r for r in caplog.records if "unvalidated" in r.getMessage()]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_invalid_requests_are_refused_cleanly_and_write_nothing(world, rows, unvalidated, data):
    method, request = data.draw(invalid_requests(world))
    before = await _state(rows, world.client.tenant)
    try:
        await getattr(world.client, method)(request)
    except grpc.aio.AioRpcError as error:
        assert error.code() not in NEVER, f"{method} answered {error.code()}: {request}"
        assert error.code() in REFUSED, f"{method} answered {error.code()}: {error.details()}"
    else:
        raise AssertionError(f"{method} accepted an invalid request: {request}")
    assert await _state(rows, world.client.tenant) == before, f"{method} wrote: {request}"
    assert not unvalidated(), f"{method}: a value reached PostgreSQL unvalidated: {request}"


EVERY_METHOD = [m.name for m in api.DESCRIPTOR.services_by_name["LedgerService"].methods]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(EVERY_METHOD), body=st.binary(max_size=300))
async def test_bytes_that_are_no_request_never_fail_inside(ledger, world, rows, unvalidated, method, body):
    """Reads too: whatever the bytes, a refusal, never INTERNAL; and no row written."""
    call = ledger.channel.unary_unary(
        f"/loyalty.ledger.v1.LedgerService/{method}",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    before = await _state(rows, world.client.tenant)
    try:
        await call(body, metadata=world.client.md)
    except grpc.aio.AioRpcError as error:
        assert error.code() not in NEVER, f"{method} answered {error.code()} to {body!r}"
    assert await _state(rows, world.client.tenant) == before
    assert not unvalidated()
