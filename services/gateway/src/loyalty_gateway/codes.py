"""Unknown-code attempts at preview, counted by the gateway itself (a preview calls no fraud service)
under fraud's thresholds: the tenant's BruteForcePolicy (GetBruteForcePolicy, kept per tenant for
`ttl` seconds; fraud's defaults while fraud does not answer). Counters live in Redis per terminal,
device, customer and IP (a key without a terminal counts as its own terminal): more than
`max_invalid_attempts` unknown codes within `window` set a lock for `lockout`, and while any lock of
the caller stands, codes are not evaluated at all: each is answered rejected with
CODE_ATTEMPTS_LOCKED, so guessing codes at a till stops paying off. Redis down: codes are evaluated
and not counted (fail open: a cache outage must not stop every till)."""

import hashlib
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty.common.v1 import errors_pb2
from loyalty.fraud.v1 import fraud_service_pb2 as fraud_api, rule_pb2
from loyalty.gateway.v1 import checkout_pb2 as pb
from loyalty_gateway.downstream import Downstream, DownstreamError, call

GUESSED = frozenset({errors_pb2.ERROR_REASON_VOUCHER_NOT_FOUND})
KINDS = {
    rule_pb2.VELOCITY_KEY_TERMINAL: "terminal",
    rule_pb2.VELOCITY_KEY_DEVICE: "device",
    rule_pb2.VELOCITY_KEY_CUSTOMER: "customer",
    rule_pb2.VELOCITY_KEY_IP: "ip",
}


@dataclass(frozen=True)
class Limit:
    kind: str
    max_attempts: int
    window: int
    lockout: int


# Fraud's documented defaults (BruteForcePolicy): terminal 20, device 10, customer 10 per 10 minutes,
# locked for 15 minutes.
DEFAULTS = (
    Limit("terminal", 20, 600, 900),
    Limit("device", 10, 600, 900),
    Limit("customer", 10, 600, 900),
)


@dataclass
class CodeCheck:
    guard: "CodeGuard"
    counters: list[tuple[str, Limit]]
    presented: list[str]
    allowed: list[str]

    def report(self, result: pb.CheckoutResult) -> None:
        """Put the locked-out codes into the result, in request order, as rejected."""
        if self.allowed == self.presented:
            return
        result.codes.extend(
            pb.CodeResult(
                code=code,
                accepted=False,
                reason=errors_pb2.ERROR_REASON_CODE_ATTEMPTS_LOCKED,
                message="Too many unknown codes; try later",
            )
            for code in self.presented
        )
        result.messages.append(
            pb.DisplayMessage(
                kind=pb.DISPLAY_MESSAGE_KIND_WARNING, text="Codes are locked after too many unknown ones"
            )
        )

    async def count(self, result: pb.CheckoutResult) -> None:
        misses = sum(1 for c in result.codes if not c.accepted and c.reason in GUESSED)
        if misses and self.counters:
            await self.guard.add(self.counters, misses)


class CodeGuard:
    def __init__(self, redis: Redis, downstream: Downstream, *, ttl: float) -> None:
        self.redis, self.downstream, self.ttl = redis, downstream, ttl
        self._policies: dict[str, tuple[float, tuple[Limit, ...]]] = {}

    async def limits(self, tenant: str) -> tuple[Limit, ...]:
        known = self._policies.get(tenant)
        if known is not None and time.monotonic() - known[0] < self.ttl:
            return known[1]
        try:
            answer = await call(
                "fraud", self.downstream.fraud.GetBruteForcePolicy, fraud_api.GetBruteForcePolicyRequest()
            )
        except DownstreamError:
            return known[1] if known else DEFAULTS
        limits = (
            tuple(
                Limit(
                    KINDS[lim.key],
                    lim.max_invalid_attempts,
                    int(lim.window.seconds),
                    int(lim.lockout.seconds),
                )
                for lim in answer.policy.limits
                if lim.key in KINDS and lim.max_invalid_attempts > 0
            )
            or DEFAULTS
        )
        if len(self._policies) > 10_000:
            self._policies.clear()
        self._policies[tenant] = (time.monotonic(), limits)
        return limits

    async def check(self, tenant: str, identities: dict[str, str], codes) -> CodeCheck:
        """`identities`: kind ("terminal", "device", "customer", "ip") -> value; empty ones skipped."""
        codes = list(codes)
        if not codes:
            return CodeCheck(self, [], codes, codes)
        counters = []
        for limit in await self.limits(tenant):
            value = identities.get(limit.kind)
            if value:
                digest = hashlib.sha256(value.encode()).hexdigest()[
                    :32
                ]  # device ids and IPs stay out of Redis
                counters.append((f"gateway:codes:{tenant}:{limit.kind}:{digest}", limit))
        try:
            locks = await self.redis.mget([f"{key}:lock" for key, _ in counters]) if counters else []
        except (RedisError, OSError):
            return CodeCheck(self, [], codes, codes)
        return CodeCheck(self, counters, codes, [] if any(locks) else codes)

    async def add(self, counters: list[tuple[str, Limit]], misses: int) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                # A window starts with its first miss (SET NX, not EXPIRE NX: Redis 6.2 has none).
                for key, limit in counters:
                    pipe.set(key, 0, ex=limit.window, nx=True).incrby(key, misses)
                counts = await pipe.execute()
            over = [
                (key, limit)
                for (key, limit), count in zip(counters, counts[1::2], strict=True)
                if count > limit.max_attempts
            ]
            if over:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key, limit in over:
                        pipe.set(f"{key}:lock", 1, ex=limit.lockout).delete(key)
                    await pipe.execute()
        except (RedisError, OSError):
            pass
