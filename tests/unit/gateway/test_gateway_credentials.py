"""API key format, permissions (fail closed) and the audit chain."""

from dataclasses import replace
from datetime import UTC, datetime

from loyalty.gateway.v1 import admin_service_pb2, checkout_service_pb2, customer_service_pb2
from loyalty_gateway.domain import audit, credentials


def test_a_key_parses_to_its_id_and_matches_only_its_hash():
    key = credentials.new_key()
    assert credentials.parse_key(key.secret) == key.api_key_id
    assert credentials.secret_matches(key.secret, key.secret_hash)
    other = "B" if key.secret[-1] != "B" else "C"
    assert not credentials.secret_matches(key.secret[:-1] + other, key.secret_hash)
    for bad in ("", "lk_", key.secret + "x", key.secret.upper(), "Bearer " + key.secret):
        assert credentials.parse_key(bad) is None


def test_every_rpc_has_a_permission_and_unknown_ones_are_refused():
    rpcs = {
        m.name
        for module in (admin_service_pb2, checkout_service_pb2, customer_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    assert rpcs <= set(credentials.PERMISSIONS), rpcs - set(credentials.PERMISSIONS)
    assert not credentials.permitted("SomethingNew", frozenset({"admin", "role.admin"}))
    assert credentials.permitted("CreateAdminToken", frozenset())
    assert not credentials.permitted("CommitCheckout", frozenset({"customer.read", "role.admin"}))
    assert credentials.permitted("VerifyAuditLog", frozenset({"role.auditor"}))
    assert not credentials.permitted("CreateApiKey", frozenset({"role.marketer", "role.analyst"}))


def _chain(n: int):
    previous, out = audit.GENESIS, []
    for i in range(1, n + 1):
        entry = audit.AuditEntry(
            i, "admin:1", "CreateTerminal", f"terminals/{i}", ("store_id",), datetime(2030, 1, 1, tzinfo=UTC)
        )
        previous = audit.chain_hash(previous, entry)
        out.append((entry, previous))
    return out


def test_the_chain_verifies_and_any_edit_deletion_or_insertion_breaks_it():
    chain = _chain(5)
    assert audit.verify(chain) == audit.Verification(True, 5, 0)
    edited = list(chain)
    edited[2] = (replace(edited[2][0], principal="admin:2"), edited[2][1])
    assert audit.verify(edited).first_broken == 3
    assert audit.verify(chain[:2] + chain[3:]).first_broken == 4
    rehashed = list(chain)
    rehashed[1] = (rehashed[1][0], audit.chain_hash(audit.GENESIS, rehashed[1][0]))
    assert not audit.verify(rehashed).intact
    assert audit.verify([]) == audit.Verification(True, 0, 0)
