"""A scripted code-guessing attack through the gateway and the real services: 1,000 random codes from
one terminal are locked out after the tenant's threshold, a real code from that terminal too, and fraud
records the lockout (once, however many previews cross the limit at the same moment) for reviewers."""

import asyncio
import secrets

import pytest

from loyalty.common.v1 import errors_pb2 as err
from loyalty.fraud.v1 import fraud_service_pb2 as fraud_api, fraud_service_pb2_grpc, rule_pb2
from loyalty.gateway.v1 import checkout_service_pb2 as api
from loyalty_runtime.testing import internal_metadata
from tests.service.gateway.conftest import provision
from tests.service.gateway.test_gateway_checkout import basket, voucher

TERMINAL_LIMIT = 20  # fraud's default per terminal (BruteForcePolicy)
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


def random_codes(n: int) -> list[str]:
    return ["".join(secrets.choice(ALPHABET) for _ in range(8)) for _ in range(n)]


async def lockouts(services, tenant, count: int, **filters) -> list[rule_pb2.CodeLockout]:
    """Fraud's record of the tenant's lockouts once there are `count` (its consumer works behind)."""
    stub = fraud_service_pb2_grpc.FraudServiceStub(services["fraud"].channel)
    metadata = internal_metadata(services["fraud"].server.settings, tenant.tenant_id)
    async with asyncio.timeout(15):
        while True:
            found = await stub.ListCodeLockouts(
                fraud_api.ListCodeLockoutsRequest(**filters), metadata=metadata
            )
            if len(found.lockouts) >= count:
                return list(found.lockouts)
            await asyncio.sleep(0.05)


async def test_a_thousand_random_codes_from_one_terminal_are_locked_out_after_the_threshold(
    shop, services, tenant
):
    await voucher(services, tenant, "REALCODE", uses=100)
    answers = []
    for _ in range(100):  # 100 previews of 10 random codes: 1,000 guesses
        preview = await shop.checkout.PreviewCheckout(
            api.PreviewCheckoutRequest(basket=basket(), codes=random_codes(10)), metadata=tenant.till_auth
        )
        answers += [c.reason for c in preview.result.codes]
    assert len(answers) == 1000
    evaluated = [r for r in answers if r != err.ERROR_REASON_CODE_ATTEMPTS_LOCKED]
    # Counted per preview: the one that takes the count past the limit still had its codes evaluated.
    assert len(evaluated) == TERMINAL_LIMIT + 10
    assert set(evaluated) == {err.ERROR_REASON_VOUCHER_NOT_FOUND}
    real = await shop.checkout.PreviewCheckout(
        api.PreviewCheckoutRequest(basket=basket(), codes=["REALCODE"]), metadata=tenant.till_auth
    )
    assert [(c.accepted, c.reason) for c in real.result.codes] == [
        (False, err.ERROR_REASON_CODE_ATTEMPTS_LOCKED)
    ]

    (lockout,) = await lockouts(services, tenant, 1)
    assert (lockout.key, lockout.value, lockout.terminal_id) == (
        rule_pb2.VELOCITY_KEY_TERMINAL,
        tenant.till,
        tenant.till,
    )
    assert (lockout.invalid_attempts, lockout.max_invalid_attempts) == (TERMINAL_LIMIT + 10, TERMINAL_LIMIT)
    assert lockout.unlock_time.seconds - lockout.lock_time.seconds == 900
    await asyncio.sleep(0.3)  # nothing more arrives: the locked previews counted nothing
    assert len(await lockouts(services, tenant, 1)) == 1


async def test_previews_crossing_the_limit_at_once_lock_and_report_once(shop, services, tenant):
    await asyncio.gather(
        *(
            shop.checkout.PreviewCheckout(
                api.PreviewCheckoutRequest(basket=basket(), codes=random_codes(1)), metadata=tenant.till_auth
            )
            for _ in range(3 * TERMINAL_LIMIT)
        )
    )
    (lockout,) = await lockouts(services, tenant, 1, key=rule_pb2.VELOCITY_KEY_TERMINAL, value=tenant.till)
    assert lockout.invalid_attempts > TERMINAL_LIMIT
    await asyncio.sleep(0.3)
    assert len(await lockouts(services, tenant, 1)) == 1
    assert not await lockouts(services, tenant, 0, key=rule_pb2.VELOCITY_KEY_DEVICE)
