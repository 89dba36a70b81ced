"""Unique codes from a pattern, as pure functions over a source of random bytes (the service passes
`secrets.token_bytes`, a cryptographic source; tests pass their own).

A pattern copies every character but '#', which becomes a random character of the charset (by
default 32 characters without the ambiguous 0/O and 1/I/L). A pattern of n '#' over a charset of c
characters has c**n codes, n * log2(c) bits of entropy: "SPRING-####-####" with the default charset
has 40 bits (about 1.1e12 codes). A request for k codes is refused unless the space holds at least
100 * k codes, so that a guess hits a real code with probability at most 1 in 100 and collisions
while generating stay rare (each is retried; the unique index is the final word)."""

import math
from collections.abc import Callable
from dataclasses import dataclass

from loyalty_promotion.domain.vouchers import CODE_CHARACTERS, MAX_CODE_LENGTH

DEFAULT_CHARSET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
SLOT = "#"
# The space must hold this many times the codes asked for.
SPACE_FACTOR = 100
MAX_COUNT = 1_000_000


class PatternRefused(ValueError):
    def __init__(self, field: str, description: str, too_small: bool = False) -> None:
        super().__init__(description)
        self.field = field
        self.description = description
        self.too_small = too_small


@dataclass(frozen=True)
class Pattern:
    template: str  # the pattern with each '#' as '%s'
    slots: int
    charset: str

    @property
    def entropy_bits(self) -> float:
        return self.slots * math.log2(len(self.charset))

    @property
    def space(self) -> int:
        return len(self.charset) ** self.slots


def parse(pattern: str, charset: str = "") -> Pattern:
    """The pattern upper-cased, or PatternRefused naming the field."""
    pattern, charset = pattern.strip().upper(), (charset or DEFAULT_CHARSET).upper()
    if (
        len(set(charset)) != len(charset)
        or len(charset) < 2
        or not all(ch.isascii() and ch.isalnum() for ch in charset)
    ):
        raise PatternRefused("pattern.charset", "a charset is 2 or more distinct letters and digits")
    slots = pattern.count(SLOT)
    if not slots:
        raise PatternRefused("pattern.pattern", "a pattern needs at least one '#'")
    example = pattern.replace(SLOT, charset[0])
    if len(pattern) > MAX_CODE_LENGTH or not CODE_CHARACTERS.match(example):
        raise PatternRefused(
            "pattern.pattern", f"a pattern has up to {MAX_CODE_LENGTH} letters, digits, '-', '_' and '#'"
        )
    return Pattern(pattern.replace("%", "%%").replace(SLOT, "%s"), slots, charset)


def check_space(pattern: Pattern, count: int) -> None:
    if pattern.space < SPACE_FACTOR * count:
        raise PatternRefused(
            "pattern.pattern",
            f"the pattern has {pattern.space} codes ({pattern.entropy_bits:.1f} bits); {count} codes need "
            f"at least {SPACE_FACTOR * count}",
            too_small=True,
        )


def random_characters(charset: str, count: int, random_bytes: Callable[[int], bytes]) -> str:
    """`count` characters drawn uniformly from `charset`: bytes at or above the largest multiple
    of len(charset) are dropped (no modulo bias), the rest mapped by remainder, all in C."""
    size = len(charset)
    usable = 256 - 256 % size
    table = bytes(ord(charset[b % size]) if b < usable else 0 for b in range(256))
    drop = bytes(range(usable, 256))
    found = b""
    while len(found) < count:
        wanted = (count - len(found)) * 256 // usable + 16
        found += random_bytes(wanted).translate(table, drop)
    return found[:count].decode("ascii")


def generate(pattern: Pattern, count: int, random_bytes: Callable[[int], bytes]) -> list[str]:
    """`count` distinct codes (duplicates within the draw are drawn again)."""
    codes: set[str] = set()
    template, slots = pattern.template, pattern.slots
    while len(codes) < count:
        missing = count - len(codes)
        chars = random_characters(pattern.charset, missing * slots, random_bytes)
        if template == "%s" * slots:
            codes.update(chars[i : i + slots] for i in range(0, len(chars), slots))
        else:
            codes.update(template % tuple(chars[i : i + slots]) for i in range(0, len(chars), slots))
    return list(codes)[:count]
