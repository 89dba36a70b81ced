"""Demo data for `make run`: one tenant with an attribute schema, a customer who can be looked up,
a points programme with tiers, and her account with a welcome bonus. Every call carries a fixed
idempotency key, so a second `make run` seeds nothing twice."""

from dataclasses import dataclass

import grpc

from loyalty.common.v1 import customer_pb2
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty_runtime.catalogue import PORTS

DEMO_TENANT = "demo"


@dataclass(frozen=True)
class DemoData:
    customer_id: str
    program_id: str
    account_id: str


def local_target(service: str) -> str:
    """Where `make run` starts `service`: its catalogue port on this machine."""
    return f"127.0.0.1:{PORTS[service].grpc_port}"


async def seed_demo(
    internal_token: str,
    profile_target: str = local_target("profile"),
    ledger_target: str = local_target("ledger"),
) -> DemoData:
    metadata = (("authorization", f"Bearer {internal_token}"), ("x-loyalty-tenant", DEMO_TENANT))
    async with grpc.aio.insecure_channel(profile_target) as channel:
        profile = profile_service_pb2_grpc.ProfileServiceStub(channel)
        await profile.DefineAttribute(
            profile_api.DefineAttributeRequest(
                idempotency_key="demo-seed-attribute-favourite-store",
                definition=profile_pb2.AttributeDefinition(
                    name="favourite_store",
                    type=profile_pb2.ATTRIBUTE_TYPE_STRING,
                    description="Store most visited",
                ),
            ),
            metadata=metadata,
            timeout=5,
        )
        enrolled = await profile.EnrolCustomer(
            profile_api.EnrolCustomerRequest(
                idempotency_key="demo-seed-customer-ada",
                identifiers=[
                    customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value="ada@example.com"),
                    customer_pb2.Identifier(
                        type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value="DEMO-0001"
                    ),
                ],
                given_name="Ada",
                family_name="Lovelace",
                locale="en-GB",
                attributes={"favourite_store": profile_pb2.AttributeValue(string_value="store-1")},
            ),
            metadata=metadata,
            timeout=5,
        )
    customer_id = enrolled.customer.customer_id
    async with grpc.aio.insecure_channel(ledger_target) as channel:
        ledger = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        program = (
            await ledger.CreateProgram(
                ledger_api.CreateProgramRequest(
                    idempotency_key="demo-seed-program",
                    program=ledger_pb2.Program(
                        display_name="Demo Rewards",
                        asset_kind=ledger_pb2.ASSET_KIND_POINTS,
                        asset_code="POINTS",
                        expiry_policy=ledger_pb2.ExpiryPolicy(
                            rule=ledger_pb2.EXPIRY_RULE_MONTHS_AFTER_EARN, months=12
                        ),
                        tiers=[
                            ledger_pb2.Tier(
                                code="SILVER",
                                display_name="Silver",
                                qualifying_points=0,
                                earn_multiplier_bps=10_000,
                            ),
                            ledger_pb2.Tier(
                                code="GOLD",
                                display_name="Gold",
                                qualifying_points=5_000,
                                earn_multiplier_bps=15_000,
                            ),
                        ],
                    ),
                ),
                metadata=metadata,
                timeout=5,
            )
        ).program
        account = (
            await ledger.OpenAccount(
                ledger_api.OpenAccountRequest(
                    idempotency_key="demo-seed-account-ada",
                    program_id=program.program_id,
                    customer_id=customer_id,
                ),
                metadata=metadata,
                timeout=5,
            )
        ).account
        await ledger.EarnPoints(
            ledger_api.EarnPointsRequest(
                idempotency_key="demo-seed-welcome-bonus",
                account_id=account.account_id,
                amount=500,
                reason="welcome bonus",
                source_ref="demo-seed",
            ),
            metadata=metadata,
            timeout=5,
        )
    return DemoData(customer_id, program.program_id, account.account_id)
