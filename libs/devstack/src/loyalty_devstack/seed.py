"""Demo data for `make run`: one tenant with an attribute schema and a customer who can be looked up.
Every call carries a fixed idempotency key, so a second `make run` seeds nothing twice."""

import grpc

from loyalty.common.v1 import customer_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2_grpc
from loyalty.profile.v1 import profile_service_pb2 as profile_api

DEMO_TENANT = "demo"


async def seed_demo(internal_token: str) -> None:
    metadata = (("authorization", f"Bearer {internal_token}"), ("x-loyalty-tenant", DEMO_TENANT))
    async with grpc.aio.insecure_channel("127.0.0.1:50052") as channel:
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
        await profile.EnrolCustomer(
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
