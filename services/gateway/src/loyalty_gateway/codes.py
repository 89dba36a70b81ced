"""Unknown-code attempts at preview, counted by the gateway itself (a preview calls no fraud service)
under fraud's thresholds: the tenant's BruteForcePolicy (GetBruteForcePolicy, kept per tenant for
`ttl` seconds; fraud's defaults while fraud does not answer). Counters live in Redis per terminal,
device, customer and IP (a key without a terminal counts as its own terminal): more than
`max_invalid_attempts` unknown codes within `window` set a lock for `lockout`, and while any lock of
the caller stands, codes are not evaluated at all: each is answered rejected with
CODE_ATTEMPTS_LOCKED, so guessing codes at a till stops paying off. Redis down: codes are evaluated
and not counted (fail open: a cache outage must not stop every till).

Fraud sees the lockouts: each lock set (once, SET NX, however many previews cross the limit at once)
is published as `code_attempts.locked` through the gateway's outbox, device and IP as the keyed hashes
fraud knows them by."""

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta

from google.protobuf import duration_pb2
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty.common.v1 import errors_pb2
from loyalty.fraud.v1 import fraud_service_pb2 as fraud_api, rule_pb2
from loyalty.gateway.v1 import checkout_pb2 as pb, events_pb2
from loyalty_gateway.downstream import Downstream, DownstreamError, call
from loyalty_gateway.signals import keyed_hash
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitsOfWork

GUESSED = frozenset({errors_pb2.ERROR_REASON_VOUCHER_NOT_FOUND})
KINDS = {
    rule_pb2.VELOCITY_KEY_TERMINAL: "terminal",
    rule_pb2.VELOCITY_KEY_DEVICE: "device",
    rule_pb2.VELOCITY_KEY_CUSTOMER: "customer",
    rule_pb2.VELOCITY_KEY_IP: "ip",
}
EVENT_KEYS = {
    "terminal": events_pb2.CODE_ATTEMPT_KEY_TERMINAL,
    "device": events_pb2.CODE_ATTEMPT_KEY_DEVICE,
    "customer": events_pb2.CODE_ATTEMPT_KEY_CUSTOMER,
    "ip": events_pb2.CODE_ATTEMPT_KEY_IP,
}
# Values fraud knows by their keyed hash (RiskSignals); terminal and customer ids go as they are.
HASHED = frozenset({"device", "ip"})


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


@dataclass(frozen=True)
class Counter:
    key: str  # the Redis key
    limit: Limit
    value: str  # what the event names: an id, or a keyed hash


@dataclass
class CodeCheck:
    guard: "CodeGuard"
    tenant: str
    terminal: str
    counters: list[Counter]
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
            await self.guard.add(self, misses)


class CodeGuard:
    def __init__(
        self, redis: Redis, downstream: Downstream, units: UnitsOfWork, *, ttl: float, secret: bytes
    ) -> None:
        self.redis, self.downstream, self.units, self.ttl = redis, downstream, units, ttl
        self.secret = secret
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
        terminal = identities.get("terminal", "")
        if not codes:
            return CodeCheck(self, tenant, terminal, [], codes, codes)
        counters = []
        for limit in await self.limits(tenant):
            value = identities.get(limit.kind)
            if value:
                # Device ids and IPs stay out of Redis.
                digest = hashlib.sha256(value.encode()).hexdigest()[:32]
                named = keyed_hash(self.secret, tenant, value) if limit.kind in HASHED else value
                counters.append(Counter(f"gateway:codes:{tenant}:{limit.kind}:{digest}", limit, named))
        try:
            locks = await self.redis.mget([f"{c.key}:lock" for c in counters]) if counters else []
        except (RedisError, OSError):
            return CodeCheck(self, tenant, terminal, [], codes, codes)
        return CodeCheck(self, tenant, terminal, counters, codes, [] if any(locks) else codes)

    async def add(self, check: CodeCheck, misses: int) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                # A window starts with its first miss (SET NX, not EXPIRE NX: Redis 6.2 has none).
                for counter in check.counters:
                    pipe.set(counter.key, 0, ex=counter.limit.window, nx=True).incrby(counter.key, misses)
                counts = await pipe.execute()
            over = [
                (counter, count)
                for counter, count in zip(check.counters, counts[1::2], strict=True)
                if count > counter.limit.max_attempts
            ]
            if not over:
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                for counter, _ in over:
                    pipe.set(f"{counter.key}:lock", 1, ex=counter.limit.lockout, nx=True).delete(counter.key)
                set_now = (await pipe.execute())[0::2]
        except (RedisError, OSError):
            return
        await self._publish(check, [(c, n) for (c, n), fresh in zip(over, set_now, strict=True) if fresh])

    async def _publish(self, check: CodeCheck, locked: list[tuple[Counter, int]]) -> None:
        """The locks this call set, as `code_attempts.locked`, in one transaction of the outbox."""
        if not locked:
            return
        async with self.units.change() as uow:
            for counter, count in locked:
                limit = counter.limit
                uow.record(
                    events_pb2.CodeAttemptsLocked(
                        key=EVENT_KEYS[limit.kind],
                        value=counter.value,
                        invalid_attempts=count,
                        max_invalid_attempts=limit.max_attempts,
                        window=duration_pb2.Duration(seconds=limit.window),
                        lock_time=timestamp(uow.now),
                        unlock_time=timestamp(uow.now + timedelta(seconds=limit.lockout)),
                        terminal_id="" if check.terminal.startswith("key:") else check.terminal,
                    ),
                    key=counter.value,
                )
