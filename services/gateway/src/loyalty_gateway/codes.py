"""Unknown-code attempts at preview, counted by the gateway itself (a preview calls no fraud service):
per API key, terminal and customer in Redis, over a sliding-enough window (a counter that expires
`window` seconds after its first miss). From `limit` misses on, codes from that key, terminal or
customer are not evaluated at all: each is answered rejected with CODE_ATTEMPTS_LOCKED, so guessing
codes at a till stops paying off. Redis down: codes are evaluated and not counted."""

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty.common.v1 import errors_pb2
from loyalty.gateway.v1 import checkout_pb2 as pb

GUESSED = frozenset({errors_pb2.ERROR_REASON_VOUCHER_NOT_FOUND})


@dataclass
class CodeCheck:
    guard: "CodeGuard"
    keys: list[str]
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
        if misses:
            await self.guard.add(self.keys, misses)


class CodeGuard:
    def __init__(self, redis: Redis, *, limit: int, window: float) -> None:
        self.redis, self.limit, self.window = redis, limit, int(window)

    async def check(self, tenant: str, key_id: str, terminal_id: str, customer_id: str, codes) -> CodeCheck:
        codes = list(codes)
        keys = [f"gateway:codes:{tenant}:key:{key_id}"]
        if terminal_id:
            keys.append(f"gateway:codes:{tenant}:terminal:{terminal_id}")
        if customer_id:
            keys.append(f"gateway:codes:{tenant}:customer:{customer_id}")
        if not codes or self.limit <= 0:
            return CodeCheck(self, keys, codes, codes)
        try:
            counts = await self.redis.mget(keys)
        except (RedisError, OSError):
            return CodeCheck(self, [], codes, codes)
        locked = any(int(c or 0) >= self.limit for c in counts)
        return CodeCheck(self, keys, codes, [] if locked else codes)

    async def add(self, keys: list[str], misses: int) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incrby(key, misses).expire(key, self.window, nx=True)
                await pipe.execute()
        except (RedisError, OSError):
            pass
