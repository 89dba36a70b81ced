"""Velocity counters in Redis: every counter of one assessment checked and incremented by one Lua
script, so an assessment costs one round trip and concurrent assessments see exact totals (Redis
runs a script alone).

One sorted set per counter (rule, generation, key value): members are "<subject>|<amount>" scored
with the assessment's time in milliseconds (the unit of work's clock, so tests move windows). The
member is the idempotency key: a retry of the same assessment finds its member and counts nothing
twice. Entries older than the window are trimmed on every touch and the key expires with its window,
so nothing (an IP hash included) is kept longer than a window needs. Key values are ids and keyed
hashes, never a clear IP address.
"""

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from loyalty_fraud.domain.model import Counter

# KEYS: one sorted set per counter. ARGV: now_ms, subject, record ("1"; "0" for a dry run), then per
# key: window_ms, amount, is_count ("1" counts members, "0" sums their amounts).
# Returns each counter's total with this action included.
SCRIPT = """
local now = tonumber(ARGV[1])
local subject = ARGV[2]
local record = ARGV[3] == '1'
local totals = {}
for i, key in ipairs(KEYS) do
  local base = 3 + (i - 1) * 3
  local window = tonumber(ARGV[base + 1])
  local amount = tonumber(ARGV[base + 2])
  local is_count = ARGV[base + 3] == '1'
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local member = subject .. '|' .. ARGV[base + 2]
  local seen = redis.call('ZSCORE', key, member)
  local total = 0
  if is_count then
    total = redis.call('ZCARD', key)
  else
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      total = total + tonumber(string.match(m, '|(%-?%d+)$'))
    end
  end
  if not seen then
    total = total + amount
    if record then
      redis.call('ZADD', key, now, member)
      redis.call('PEXPIRE', key, window)
    end
  end
  totals[i] = total
end
return totals
"""

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class Counters:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(SCRIPT)

    async def count(
        self, tenant: str, subject: str, counters: list[Counter], now_ms: int, *, record: bool
    ) -> list[int] | None:
        """The totals with this action included (counted unless `record` is False); None when Redis
        cannot be reached, so the caller answers degraded instead of failing."""
        if not counters:
            return []
        keys = [f"fraud:{{{tenant}}}:v:{counter.slot}" for counter in counters]
        args: list = [now_ms, subject, "1" if record else "0"]
        for counter in counters:
            args += [counter.window_ms, counter.amount, "1" if counter.is_count else "0"]
        try:
            return [int(total) for total in await self._script(keys=keys, args=args)]
        except UNREACHABLE:
            return None
