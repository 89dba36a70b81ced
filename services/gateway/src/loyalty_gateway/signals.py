"""Raw card, device, IP, phone and e-mail values never leave the gateway: fraud gets keyed hashes
(HMAC-SHA-256 with the gateway's signal secret, per tenant, lower-case hex), the same value always
giving the same hash within a tenant and never across tenants."""

import hashlib
import hmac

from loyalty.common.v1 import customer_pb2
from loyalty.fraud.v1 import assessment_pb2


def keyed_hash(secret: bytes, tenant: str, value: str) -> str:
    if not value:
        return ""
    return hmac.new(secret, f"{tenant}:{value}".encode(), hashlib.sha256).hexdigest()


def enrolment_signals(secret: bytes, tenant: str, caller, signals, identifiers) -> assessment_pb2.RiskSignals:
    """What an enrolment (and a referral given at one) tells fraud: the client's signals hashed, the
    caller's terminal, store and channel, the e-mail domain in clear for domain blocklists."""
    emails = [i.value for i in identifiers if i.type == customer_pb2.IDENTIFIER_TYPE_EMAIL]
    return assessment_pb2.RiskSignals(
        card_hash=keyed_hash(secret, tenant, signals.card_fingerprint),
        device_hash=keyed_hash(secret, tenant, signals.device_id),
        ip_hash=keyed_hash(secret, tenant, signals.ip_address),
        ip_address=signals.ip_address,
        terminal_id=caller.terminal_id,
        store_id=caller.store_id,
        channel=caller.channel,
        email_domain=emails[0].rpartition("@")[2].lower() if emails else "",
    )
