"""Logs carry identifiers and outcomes, never secrets or personal data, whatever arrives and whatever
fails (the end-of-run check in tests/conftest.py greps every line the suite writes as well)."""

import asyncio
import json
import logging

from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.logs import WITHHELD, JsonFormatter
from tests.conftest import rpc_failure
from tests.raw_http2 import raw_call

EMAIL = "canary.person@example.com"


async def settle() -> None:
    """Access lines are written after the answer has gone out: give them a moment."""
    await asyncio.sleep(0.1)


def written(records) -> str:
    formatter = JsonFormatter("test")
    return "\n".join(formatter.format(record) for record in records)


async def test_a_malformed_authorization_header_never_puts_the_token_in_a_log(echo, caplog):
    token = echo.server.settings.internal_token.get_secret_value()
    headers = [
        (b"authorization", b"Bearer " + token.encode() + b"\xff\xfe"),
        (b"x-loyalty-tenant", b"t1"),
        (b"x-contact", EMAIL.encode() + b"\xc3\x28"),
    ]
    with caplog.at_level(logging.DEBUG):
        status = await asyncio.to_thread(
            raw_call, echo.server.port, "/loyalty.testing.v1.EchoService/Echo", headers, b"\x0a\x02hi"
        )
        await settle()
    assert status in (None, "16")
    lines = written(caplog.records)
    assert token not in lines and EMAIL not in lines
    grpc_lines = [r for r in caplog.records if r.name.startswith("grpc")]
    assert all(json.loads(JsonFormatter("t").format(r))["msg"] == WITHHELD for r in grpc_lines)


async def test_failed_calls_are_logged_by_method_and_code_without_their_content(echo_stub, tenant, caplog):
    with caplog.at_level(logging.INFO):
        await rpc_failure(echo_stub.Echo(echo_pb2.EchoRequest(text=EMAIL + "\x00"), metadata=tenant))
        await rpc_failure(
            echo_stub.Wait(echo_pb2.WaitRequest(fail_reason="CUSTOMER_NOT_FOUND"), metadata=tenant)
        )
        await settle()
    access = [json.loads(JsonFormatter("t").format(r)) for r in caplog.records if r.getMessage() == "rpc"]
    assert {(a["method"].rsplit("/", 1)[1], a["code"]) for a in access} >= {
        ("Echo", "INVALID_ARGUMENT"),
        ("Wait", "FAILED_PRECONDITION"),
    }
    assert EMAIL not in written(caplog.records)


async def test_access_lines_carry_the_callers_trace_id(echo_stub, tenant, caplog):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = (*tenant, ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"))
    with caplog.at_level(logging.INFO):
        await rpc_failure(echo_stub.Echo(echo_pb2.EchoRequest(text="\x01"), metadata=metadata))
        await settle()
    access = [json.loads(JsonFormatter("t").format(r)) for r in caplog.records if r.getMessage() == "rpc"]
    assert any(a.get("trace_id") == trace_id for a in access)


async def test_every_call_can_be_logged_when_asked(echo_settings, caplog):
    from loyalty.testing.v1 import echo_pb2_grpc
    from loyalty_runtime.testing import ECHO, running_service

    verbose = echo_settings.model_copy(update={"log_every_call": True})
    with caplog.at_level(logging.INFO):
        async with running_service(ECHO, verbose) as service:
            stub = echo_pb2_grpc.EchoServiceStub(service.channel)
            await stub.Echo(echo_pb2.EchoRequest(text=EMAIL), metadata=service.metadata("t1"))
            await settle()
    access = [r for r in caplog.records if r.getMessage() == "rpc"]
    assert [getattr(r, "fields", {}).get("code") for r in access] == ["OK"]
    assert EMAIL not in written(caplog.records)
