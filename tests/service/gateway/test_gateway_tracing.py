"""One trace (in-memory exporter, the tracer provider passed in) spans a commit: the gateway's server
span, each service it calls, and their database statements."""

import uuid
from contextlib import AsyncExitStack

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loyalty.gateway.v1 import checkout_service_pb2_grpc
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.testing import running_service
from tests.service.gateway.conftest import DOWNSTREAM, provision
from tests.service.gateway.test_gateway_checkout import commit_request, enrol


async def test_one_trace_spans_the_gateway_each_service_and_the_database(shop, services, shop_settings):
    tenant = await provision(shop, services)
    customer_id = await enrol(shop, tenant)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with AsyncExitStack() as stack:
        targets = {}
        for name, definition in DOWNSTREAM.items():
            traced = await stack.enter_async_context(
                running_service(definition, services[name].server.settings, tracer_provider=provider)
            )
            targets[f"{name}_target"] = traced.address
        gateway = await stack.enter_async_context(
            running_service(DEFINITION, shop_settings.model_copy(update=targets), tracer_provider=provider)
        )
        exporter.clear()
        stub = checkout_service_pb2_grpc.CheckoutServiceStub(gateway.channel)
        await stub.CommitCheckout(commit_request(uuid.uuid4().hex, customer_id), metadata=tenant.till_auth)
        spans = list(exporter.get_finished_spans())
    root = next(
        s
        for s in spans
        if s.name == "/loyalty.gateway.v1.CheckoutService/CommitCheckout" and s.kind.name == "SERVER"
    )
    trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
    servers = {s.name for s in trace if s.kind.name == "SERVER"}
    for method in (
        "/loyalty.fraud.v1.FraudService/AssessCheckout",
        "/loyalty.promotion.v1.PromotionService/EvaluateBasket",
        "/loyalty.profile.v1.ProfileService/GetCustomer",
        "/loyalty.ledger.v1.LedgerService/GetAccount",
    ):
        assert method in servers, (method, sorted(servers))
    assert any(s.attributes.get("db.system") == "postgresql" for s in trace), (
        "database statements join the trace"
    )
