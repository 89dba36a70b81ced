"""The gateway as the runtime runs it: settings, its three public APIs, its schema and migrations, its
events, and its own authenticator (API keys and admin tokens instead of the internal token)."""

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from loyalty.gateway.v1 import admin_service_pb2, checkout_service_pb2, customer_service_pb2
from loyalty_gateway import jsonhttp, proxy
from loyalty_gateway.adjustments import Adjustments
from loyalty_gateway.admin import LoginThrottle
from loyalty_gateway.admin_servicer import AdminServicer
from loyalty_gateway.auth import Authenticator
from loyalty_gateway.checkout import Checkouts
from loyalty_gateway.checkout_servicer import CheckoutServicer, CustomerServicer
from loyalty_gateway.codes import CodeGuard
from loyalty_gateway.customers import Customers
from loyalty_gateway.downstream import Downstream, connect
from loyalty_gateway.proxy import AdminProxy
from loyalty_gateway.repository import SCHEMA
from loyalty_gateway.tenants import Tenants
from loyalty_gateway.tokens import CustomerTokens
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.server import Api, Forward, Resources, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


def _target(service: str) -> str:
    return f"dns:///loyalty-{service}-headless:{PORTS[service].grpc_port}"


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PORTS["gateway"].env_prefix)

    grpc_port: int = PORTS["gateway"].grpc_port
    metrics_port: int = PORTS["gateway"].metrics_port
    # The front door sheds load above this (RESOURCE_EXHAUSTED); tills at 128 concurrent calls fit.
    max_concurrent_calls: int = 256
    # JSON over HTTP (jsonhttp.py); 0 picks a free port.
    http_host: str = "0.0.0.0"
    http_port: int = PORTS["gateway"].http_port or 0
    profile_target: str = _target("profile")
    segmentation_target: str = _target("segmentation")
    promotion_target: str = _target("promotion")
    ledger_target: str = _target("ledger")
    fraud_target: str = _target("fraud")
    notification_target: str = _target("notification")
    # Verified API keys are remembered this long per replica (a revocation elsewhere takes this long).
    key_cache_seconds: float = 5.0
    key_cache_size: int = 10_000
    # Token bucket per API key; 0 turns rate limiting off.
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    # Admin tokens the gateway signs (HS256).
    jwt_secret: SecretStr = SecretStr("dev-gateway-jwt-secret-change-me-0123456789abcdefghijklmnopqrstuvwxyz")
    jwt_issuer: str = "loyalty-gateway"
    jwt_audience: str = "loyalty-admin"
    jwt_lifetime_seconds: int = 3600
    # An OIDC issuer's admin tokens, besides the gateway's own: its JWKS URL, issuer and audience, the
    # asymmetric algorithms it signs with, and the claims naming the tenant and the roles.
    oidc_jwks_url: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = "loyalty-admin"
    oidc_algorithms: tuple[str, ...] = ("RS256", "ES256")
    oidc_tenant_claim: str = "tenant"
    oidc_roles_claim: str = "roles"
    # Failed logins per username before further logins are refused for the window.
    login_failure_limit: int = 5
    login_window_seconds: float = 900.0
    # Customer context cache (customers.py): the staleness bound for changes made elsewhere.
    context_ttl_seconds: float = 30.0
    context_cache_size: int = 50_000
    tenant_cache_seconds: float = 30.0
    # A replica holds a checkout's saga this long per call; one that dies frees it after this.
    saga_lease_seconds: float = 10.0
    # Earned points withheld by a fraud REVIEW become available after this many days.
    review_hold_days: int = 14
    # Fraud's brute-force policy (unknown-code limits) is kept this long per tenant.
    brute_force_policy_seconds: float = 30.0
    # Keys the HMAC of card, device and IP signals before they go to fraud.
    signal_hash_secret: SecretStr = SecretStr("dev-gateway-signal-secret")


def _auth(resources: Resources) -> Authenticator:
    auth = getattr(resources, "gateway_auth", None)
    if auth is None:
        auth = Authenticator(resources.database, resources.redis, resources.settings)
        resources.gateway_auth = auth
    return auth


def _downstream(resources: Resources) -> Downstream:
    downstream = getattr(resources, "gateway_downstream", None)
    if downstream is None:
        downstream = connect(resources.settings, resources.tracer_provider)
        resources.gateway_downstream = downstream
    return downstream


def _checkouts(resources: Resources) -> Checkouts:
    checkouts = getattr(resources, "gateway_checkouts", None)
    if checkouts is None:
        s = resources.settings
        downstream = _downstream(resources)
        checkouts = Checkouts(
            resources.units,
            downstream,
            Customers(
                downstream,
                CustomerTokens(resources.redis),
                ttl=s.context_ttl_seconds,
                size=s.context_cache_size,
            ),
            Tenants(resources.units, s.tenant_cache_seconds),
            CodeGuard(
                resources.redis,
                downstream,
                resources.units,
                ttl=s.brute_force_policy_seconds,
                secret=s.signal_hash_secret.get_secret_value().encode(),
            ),
            s,
        )
        resources.gateway_checkouts = checkouts
    return checkouts


def _proxy(resources: Resources) -> AdminProxy:
    forwarding = getattr(resources, "gateway_proxy", None)
    if forwarding is None:
        forwarding = AdminProxy(resources.units, _downstream(resources).channels)
        resources.gateway_proxy = forwarding
    return forwarding


def _admin(resources: Resources) -> AdminServicer:
    s = resources.settings
    throttle = LoginThrottle(resources.redis, s.login_failure_limit, s.login_window_seconds)
    adjustments = Adjustments(resources.units, _downstream(resources), _checkouts(resources).customers)
    return AdminServicer(resources.units, _auth(resources), throttle, adjustments)


DEFINITION = ServiceDefinition(
    name="gateway",
    settings=GatewaySettings,
    apis=[
        Api(admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"], _admin),
        Api(
            checkout_service_pb2.DESCRIPTOR.services_by_name["CheckoutService"],
            lambda r: CheckoutServicer(_checkouts(r), _auth(r)),
        ),
        Api(
            customer_service_pb2.DESCRIPTOR.services_by_name["CustomerService"],
            lambda r: CustomerServicer(_checkouts(r), _auth(r)),
        ),
    ],
    schema=SCHEMA,
    migrations="loyalty_gateway:migrations",
    events="gateway.events",
    authenticator=lambda resources: _auth(resources).authenticate,
    forwards=[
        Forward(descriptor, lambda r, d=descriptor: _proxy(r).methods(d)) for descriptor in proxy.SERVICES
    ],
    background=[jsonhttp.serve],
)
