"""Auth at the gateway: API keys (hashed, shown once, revoked, rotated, scoped, bound to terminals),
admin tokens (pinned algorithm, expiry, audience), roles, throttled logins, per-key rate limits, the
audit log's hash chain, and another tenant's ids. Every denial leaves nothing done."""

import time
import uuid

import asyncpg
import grpc
import jwt
import pytest
from grpc_status import rpc_status

from loyalty.gateway.v1 import (
    admin_pb2,
    admin_service_pb2 as api,
    admin_service_pb2_grpc,
    checkout_service_pb2,
    checkout_service_pb2_grpc,
)
from loyalty_gateway import bootstrap
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.errors import retry_info
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import PASSWORD, bearer, login


def key_request(scopes, terminal_id: str = "", key: str | None = None):
    return api.CreateApiKeyRequest(
        idempotency_key=key or uuid.uuid4().hex,
        api_key={"display_name": "till 1", "scopes": scopes, "terminal_id": terminal_id},
    )


async def terminal(tenant) -> str:
    response = await tenant.gateway.admin.CreateTerminal(
        api.CreateTerminalRequest(
            idempotency_key=uuid.uuid4().hex, terminal={"display_name": "till", "store_id": "s1"}
        ),
        metadata=tenant.auth,
    )
    return response.terminal.terminal_id


async def checkout_key(tenant, terminal_id: str = "") -> str:
    response = await tenant.gateway.admin.CreateApiKey(
        key_request([admin_pb2.API_SCOPE_CHECKOUT], terminal_id), metadata=tenant.auth
    )
    return response.secret


async def preview_code(gateway, secret: str) -> grpc.StatusCode:
    """What a checkout call with this key answers: UNAUTHENTICATED if the key is refused."""
    stub = checkout_service_pb2_grpc.CheckoutServiceStub(gateway.channel)
    try:
        await stub.GetCheckout(
            checkout_service_pb2.GetCheckoutRequest(checkout_id="x"), metadata=bearer(secret)
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_key_is_shown_once_stored_hashed_and_works_until_revoked(gateway, tenant):
    till = await terminal(tenant)
    request = key_request([admin_pb2.API_SCOPE_CHECKOUT], till)
    created = await gateway.admin.CreateApiKey(request, metadata=tenant.auth)
    assert created.secret.startswith("lk_") and created.api_key.key_prefix == created.secret[:11]
    replay = await gateway.admin.CreateApiKey(request, metadata=tenant.auth)
    assert replay.api_key.api_key_id == created.api_key.api_key_id and replay.secret == ""
    fetched = await gateway.admin.GetApiKey(
        api.GetApiKeyRequest(api_key_id=created.api_key.api_key_id), metadata=tenant.auth
    )
    assert fetched.api_key.state == admin_pb2.API_KEY_STATE_ACTIVE
    pool = await asyncpg.connect(asyncpg_dsn(gateway.server.settings.database_url))
    stored = await pool.fetchval(
        "SELECT secret_hash FROM gateway.api_keys WHERE api_key_id = $1",
        uuid.UUID(created.api_key.api_key_id),
    )
    await pool.close()
    assert created.secret.encode() not in stored and len(stored) == 32

    assert await preview_code(gateway, created.secret) != grpc.StatusCode.UNAUTHENTICATED
    flipped = created.secret[:-1] + ("x" if created.secret[-1] != "x" else "y")
    assert await preview_code(gateway, flipped) == grpc.StatusCode.UNAUTHENTICATED
    await gateway.admin.RevokeApiKey(
        api.RevokeApiKeyRequest(idempotency_key=uuid.uuid4().hex, api_key_id=created.api_key.api_key_id),
        metadata=tenant.auth,
    )
    assert await preview_code(gateway, created.secret) == grpc.StatusCode.UNAUTHENTICATED


async def test_revoking_a_terminal_revokes_its_keys(gateway, tenant):
    till = await terminal(tenant)
    secret = await checkout_key(tenant, till)
    assert await preview_code(gateway, secret) != grpc.StatusCode.UNAUTHENTICATED
    await gateway.admin.RevokeTerminal(
        api.RevokeTerminalRequest(idempotency_key=uuid.uuid4().hex, terminal_id=till), metadata=tenant.auth
    )
    assert await preview_code(gateway, secret) == grpc.StatusCode.UNAUTHENTICATED
    failure = await rpc_failure(
        gateway.admin.CreateApiKey(key_request([admin_pb2.API_SCOPE_CHECKOUT], till), metadata=tenant.auth)
    )
    assert failure.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_rotation_gives_a_successor_and_the_old_key_expires_after_the_overlap(gateway, tenant):
    old = await gateway.admin.CreateApiKey(key_request([admin_pb2.API_SCOPE_CHECKOUT]), metadata=tenant.auth)
    rotated = await gateway.admin.RotateApiKey(
        api.RotateApiKeyRequest(
            idempotency_key=uuid.uuid4().hex, api_key_id=old.api_key.api_key_id, overlap={"seconds": 0}
        ),
        metadata=tenant.auth,
    )
    assert rotated.secret and rotated.api_key.rotated_from == old.api_key.api_key_id
    assert list(rotated.api_key.scopes) == [admin_pb2.API_SCOPE_CHECKOUT]
    assert rotated.previous_api_key.state == admin_pb2.API_KEY_STATE_EXPIRED
    assert await preview_code(gateway, old.secret) == grpc.StatusCode.UNAUTHENTICATED
    assert await preview_code(gateway, rotated.secret) != grpc.StatusCode.UNAUTHENTICATED


async def test_scopes_and_roles_are_enforced(gateway, tenant):
    secret = await checkout_key(tenant)
    failure = await rpc_failure(
        gateway.admin.ListTerminals(api.ListTerminalsRequest(), metadata=bearer(secret))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")

    admin_key = await gateway.admin.CreateApiKey(
        key_request([admin_pb2.API_SCOPE_ADMIN]), metadata=tenant.auth
    )
    await gateway.admin.ListTerminals(api.ListTerminalsRequest(), metadata=bearer(admin_key.secret))

    analyst = await tenant.create_user("ann", [admin_pb2.ADMIN_ROLE_ANALYST])
    before = await gateway.admin.ListApiKeys(api.ListApiKeysRequest(), metadata=tenant.auth)
    failure = await rpc_failure(
        gateway.admin.CreateApiKey(key_request([admin_pb2.API_SCOPE_CHECKOUT]), metadata=bearer(analyst))
    )
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED
    after = await gateway.admin.ListApiKeys(api.ListApiKeysRequest(), metadata=tenant.auth)
    assert len(after.api_keys) == len(before.api_keys)
    failure = await rpc_failure(
        gateway.admin.VerifyAuditLog(api.VerifyAuditLogRequest(), metadata=bearer(analyst))
    )
    assert failure.code == grpc.StatusCode.PERMISSION_DENIED

    auditor = await tenant.create_user("audrey", [admin_pb2.ADMIN_ROLE_AUDITOR])
    verified = await gateway.admin.VerifyAuditLog(api.VerifyAuditLogRequest(), metadata=bearer(auditor))
    assert verified.intact

    anonymous = await rpc_failure(
        gateway.admin.ListTerminals(
            api.ListTerminalsRequest(), metadata=(("x-loyalty-tenant", tenant.tenant_id),)
        )
    )
    assert anonymous.code == grpc.StatusCode.UNAUTHENTICATED
    nothing = await rpc_failure(gateway.admin.ListTerminals(api.ListTerminalsRequest()))
    assert nothing.code == grpc.StatusCode.UNAUTHENTICATED


def forged(settings, tenant_id: str, **changes) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "someone",
        "tenant": tenant_id,
        "roles": ["admin"],
        "iat": now,
        "exp": now + 600,
    } | changes.pop("claims", {})
    key = changes.pop("key", settings.jwt_secret.get_secret_value())
    return jwt.encode(claims, key, algorithm=changes.pop("algorithm", "HS256"))


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda s, t: forged(s, t, claims={"exp": int(time.time()) - 60}), id="expired"),
        pytest.param(lambda s, t: forged(s, t, claims={"aud": "somebody-else"}), id="wrong-audience"),
        pytest.param(lambda s, t: forged(s, t, claims={"iss": "evil"}), id="wrong-issuer"),
        pytest.param(
            lambda s, t: forged(s, t, key="another-secret-of-enough-length-0123456789"), id="wrong-key"
        ),
        pytest.param(lambda s, t: forged(s, t, algorithm="none", key=None), id="alg-none"),
        pytest.param(lambda s, t: forged(s, t, algorithm="HS512"), id="other-alg"),
        pytest.param(lambda s, t: "not.a.token", id="garbage"),
    ],
)
async def test_bad_admin_tokens_are_refused(gateway, tenant, token):
    bad = token(gateway.server.settings, tenant.tenant_id)
    failure = await rpc_failure(gateway.admin.ListTerminals(api.ListTerminalsRequest(), metadata=bearer(bad)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_logins_are_throttled_per_username(gateway, tenant):
    for _ in range(gateway.server.settings.login_failure_limit):
        failure = await rpc_failure(login(gateway, tenant.tenant_id, "root", "wrong password!!"))
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    throttled = await rpc_failure(login(gateway, tenant.tenant_id, "root"))
    assert (throttled.code, throttled.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")
    unknown = await rpc_failure(login(gateway, tenant.tenant_id, "nobody"))
    assert unknown.code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_over_its_rate_limit_is_told_when_to_retry(gateway_settings, tenant):
    limited = gateway_settings.model_copy(update={"rate_limit_per_second": 1.0, "rate_limit_burst": 3})
    secret = await checkout_key(tenant)
    async with running_service(DEFINITION, limited) as replica:
        codes = [await preview_code(replica, secret) for _ in range(3)]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in codes
        stub = checkout_service_pb2_grpc.CheckoutServiceStub(replica.channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetCheckout(
                checkout_service_pb2.GetCheckoutRequest(checkout_id="x"), metadata=bearer(secret)
            )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(raised.value)
    assert retry_info(status).retry_delay.ToMilliseconds() > 0


async def test_another_tenants_ids_look_unknown_and_nothing_changes(gateway, tenant, other_tenant):
    till = await terminal(tenant)
    key = await gateway.admin.CreateApiKey(
        key_request([admin_pb2.API_SCOPE_CHECKOUT], till), metadata=tenant.auth
    )
    for call in (
        gateway.admin.GetTerminal(api.GetTerminalRequest(terminal_id=till), metadata=other_tenant.auth),
        gateway.admin.RevokeTerminal(
            api.RevokeTerminalRequest(idempotency_key=uuid.uuid4().hex, terminal_id=till),
            metadata=other_tenant.auth,
        ),
        gateway.admin.RevokeApiKey(
            api.RevokeApiKeyRequest(idempotency_key=uuid.uuid4().hex, api_key_id=key.api_key.api_key_id),
            metadata=other_tenant.auth,
        ),
        gateway.admin.GetApiKey(
            api.GetApiKeyRequest(api_key_id=uuid.uuid4().hex), metadata=other_tenant.auth
        ),
    ):
        failure = await rpc_failure(call)
        assert failure.code == grpc.StatusCode.NOT_FOUND
    listed = await gateway.admin.ListTerminals(api.ListTerminalsRequest(), metadata=other_tenant.auth)
    assert listed.terminals == []
    assert await preview_code(gateway, key.secret) != grpc.StatusCode.UNAUTHENTICATED


async def test_the_audit_log_records_changes_and_detects_an_edit_made_in_sql(gateway, tenant):
    till = await terminal(tenant)
    await checkout_key(tenant, till)
    records = await gateway.admin.ListAuditRecords(api.ListAuditRecordsRequest(), metadata=tenant.auth)
    assert [r.action for r in records.records][:2] == ["CreateApiKey", "CreateTerminal"]
    assert all(PASSWORD not in str(r) for r in records.records)
    assert (await gateway.admin.VerifyAuditLog(api.VerifyAuditLogRequest(), metadata=tenant.auth)).intact

    connection = await asyncpg.connect(asyncpg_dsn(gateway.server.settings.database_url))
    with pytest.raises(asyncpg.PostgresError):
        await connection.execute(
            "UPDATE gateway.audit_log SET principal = 'x' WHERE tenant_id = $1", tenant.tenant_id
        )
    # The owner can switch the trigger off; the chain still shows the edit.
    await connection.execute("ALTER TABLE gateway.audit_log DISABLE TRIGGER append_only")
    try:
        await connection.execute(
            "UPDATE gateway.audit_log SET fields = '{}' WHERE tenant_id = $1 AND sequence = 2",
            tenant.tenant_id,
        )
    finally:
        await connection.execute("ALTER TABLE gateway.audit_log ENABLE TRIGGER append_only")
        await connection.close()
    verified = await gateway.admin.VerifyAuditLog(api.VerifyAuditLogRequest(), metadata=tenant.auth)
    assert (verified.intact, verified.first_broken_sequence) == (False, 2)
    offline = await bootstrap.verify_audit_log(gateway.server.settings.database_url, tenant.tenant_id)
    assert (offline.intact, offline.first_broken) == (False, 2)


async def test_an_oidc_issuers_tokens_are_verified_with_its_jwks(gateway_settings, tenant):
    """RS256 tokens from a configured issuer, checked against its JWKS (served here); a token signed
    with another key, or an HS256 token keyed with the issuer's public key, is refused."""
    import json

    from aiohttp import web
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from loyalty_devstack.infra import free_port

    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(signing.public_key())) | {"kid": "k1", "use": "sig", "alg": "RS256"}
    app = web.Application()

    async def jwks(_request):
        return web.json_response({"keys": [jwk]})

    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    now = int(time.time())
    claims = {
        "iss": "https://idp.test",
        "aud": "loyalty-admin",
        "sub": "ann",
        "tenant": tenant.tenant_id,
        "roles": ["admin"],
        "iat": now,
        "exp": now + 300,
    }
    oidc = gateway_settings.model_copy(
        update={"oidc_jwks_url": f"http://127.0.0.1:{port}/jwks", "oidc_issuer": "https://idp.test"}
    )
    public_pem = signing.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        async with running_service(DEFINITION, oidc) as replica:
            stub = admin_service_pb2_grpc.AdminServiceStub(replica.channel)
            good = jwt.encode(claims, signing, algorithm="RS256", headers={"kid": "k1"})
            await stub.ListTerminals(api.ListTerminalsRequest(), metadata=bearer(good))
            # The gateway's own tokens keep working beside the issuer's.
            await stub.ListTerminals(api.ListTerminalsRequest(), metadata=tenant.auth)
            forged_rsa = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "k1"})
            wrong_issuer = jwt.encode(
                claims | {"iss": "https://evil.test"}, signing, algorithm="RS256", headers={"kid": "k1"}
            )
            for bad in (forged_rsa, wrong_issuer):
                failure = await rpc_failure(
                    stub.ListTerminals(api.ListTerminalsRequest(), metadata=bearer(bad))
                )
                assert failure.code == grpc.StatusCode.UNAUTHENTICATED
            try:
                confused = jwt.encode(claims, public_pem, algorithm="HS256", headers={"kid": "k1"})
            except jwt.PyJWTError:
                confused = None  # PyJWT refuses to HMAC with a PEM key at all
            if confused is not None:
                failure = await rpc_failure(
                    stub.ListTerminals(api.ListTerminalsRequest(), metadata=bearer(confused))
                )
                assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await runner.cleanup()
