"""The shapes the fraud rules work on. Money is integer minor units, points integers, shares basis
points; a velocity window is integer milliseconds."""

import enum
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime


class Kind(enum.Enum):
    CHECKOUT = "checkout"
    REDEMPTION = "redemption"
    EARN = "earn"
    RETURN = "return"
    REFERRAL = "referral"
    ENROLMENT = "enrolment"


class Decision(enum.IntEnum):
    """Ordered by severity: the most severe of the forced and the score's decision wins."""

    ALLOW = 1
    REVIEW = 2
    DECLINE = 3


class RuleState(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    # Evaluated and reported, never changes a decision.
    SHADOW = "shadow"


class VelocityKey(enum.Enum):
    CUSTOMER = "customer"
    CARD = "card"
    DEVICE = "device"
    IP = "ip"
    TERMINAL = "terminal"
    STORE = "store"
    CODE = "code"


class Measure(enum.Enum):
    COUNT = "count"
    POINTS = "points"
    AMOUNT = "amount"


class ThresholdMetric(enum.Enum):
    BASKET_TOTAL = "basket_total"
    DISCOUNT_TOTAL = "discount_total"
    DISCOUNT_SHARE_BPS = "discount_share_bps"
    POINTS_EARNED = "points_earned"
    POINTS_BURNED = "points_burned"
    CODE_COUNT = "code_count"
    BURN_ACCOUNT_AGE_DAYS = "burn_account_age_days"


class PatternKind(enum.Enum):
    EARN_ABOVE_CUSTOMER_USUAL = "earn_above_customer_usual"
    EARN_ABOVE_STORE_USUAL = "earn_above_store_usual"
    BURN_AFTER_LARGE_EARN = "burn_after_large_earn"
    BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE = "burn_new_device_after_account_change"
    RETURN_VALUE_SHARE = "return_value_share"
    RETURN_AFTER_POINTS_SPENT = "return_after_points_spent"
    REFERRAL_SHARED_FINGERPRINT = "referral_shared_fingerprint"
    REFERRAL_DEVICE_REFEREES = "referral_device_referees"


# The kinds measured against a customer's or store's usual earn: all their history, no window.
USUAL_PATTERNS = frozenset({PatternKind.EARN_ABOVE_CUSTOMER_USUAL, PatternKind.EARN_ABOVE_STORE_USUAL})
DEFAULT_MIN_EARNS = 5
# The kinds that look at no window of history.
WINDOWLESS_PATTERNS = USUAL_PATTERNS | {PatternKind.REFERRAL_SHARED_FINGERPRINT}


class Fingerprint(enum.Enum):
    DEVICE = "device"
    CARD = "card"
    PHONE = "phone"
    EMAIL = "email"


MONEY_METRICS = frozenset({ThresholdMetric.BASKET_TOTAL, ThresholdMetric.DISCOUNT_TOTAL})


class BlocklistEntryType(enum.Enum):
    CUSTOMER = "customer"
    CARD = "card"
    DEVICE = "device"
    IP = "ip"
    IP_RANGE = "ip_range"
    EMAIL_DOMAIN = "email_domain"


@dataclass(frozen=True)
class Velocity:
    key: VelocityKey
    window_ms: int
    measure: Measure
    limit: int
    # For Measure.AMOUNT: the limit's currency; actions in another currency are not counted.
    currency: str = ""


@dataclass(frozen=True)
class Threshold:
    metric: ThresholdMetric
    limit: int
    currency: str = ""


@dataclass(frozen=True)
class Pattern:
    kind: PatternKind
    # 0 for the kinds that look at no window (WINDOWLESS_PATTERNS).
    window_ms: int
    max_value: int
    min_value: int = 0


@dataclass(frozen=True)
class Rule:
    rule_id: str
    state: RuleState
    # Empty: every kind.
    applies_to: frozenset[Kind]
    # Forced when the rule fires; None only adds the score.
    action: Decision | None
    score: int
    # The ErrorReason number reported when it fires.
    reason: int
    velocity: Velocity | None = None
    threshold: Threshold | None = None
    # Changes when the window or key changes, so its counters start afresh.
    generation: str = ""
    pattern: Pattern | None = None

    def applies(self, kind: Kind) -> bool:
        return self.state is not RuleState.DISABLED and (not self.applies_to or kind in self.applies_to)


@dataclass(frozen=True)
class Settings:
    review_threshold: int = 500
    decline_threshold: int = 800
    # What the caller should do with an operation assessed without counters; missing = ALLOW.
    degraded: dict[Kind, Decision] = field(default_factory=dict)

    def degraded_policy(self, kind: Kind) -> Decision:
        return self.degraded.get(kind, Decision.ALLOW)


@dataclass(frozen=True)
class Action:
    """What is assessed, flattened from the three kinds of request."""

    kind: Kind
    # The idempotency key: checkout id, or the request's key.
    subject_id: str
    customer_id: str = ""
    currency: str = ""
    basket_total: int = 0
    discount_total: int = 0
    points_earned: int = 0
    points_burned: int = 0
    codes: tuple[str, ...] = ()
    card_hash: str = ""
    device_hash: str = ""
    ip_hash: str = ""
    # Only for range rules; never stored.
    ip_address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    email_domain: str = ""
    terminal_id: str = ""
    store_id: str = ""
    enrolled_at: datetime | None = None
    # The last password or login change the caller knows of.
    credentials_changed_at: datetime | None = None
    now: datetime | None = None
    # Returns: the purchase returned, the value refunded and the points taken back.
    returned_checkout_id: str = ""
    refund: int = 0
    points_reversed: int = 0
    # Referrals: `customer_id` is the referee; each party's fingerprints as given.
    referrer_id: str = ""
    referrer_fingerprints: frozenset[tuple[Fingerprint, str]] = frozenset()
    referee_fingerprints: frozenset[tuple[Fingerprint, str]] = frozenset()


@dataclass(frozen=True)
class BlocklistEntry:
    entry_id: str
    type: BlocklistEntryType
    value: str
    expire_at: datetime | None = None


@dataclass(frozen=True)
class Counter:
    """One sliding-window counter an assessment checks and increments."""

    rule_id: str
    # Identifies the window: rule, generation and the key's value (a hash or an id, never an IP).
    slot: str
    window_ms: int
    amount: int
    is_count: bool


@dataclass(frozen=True)
class Finding:
    """One reason behind a decision."""

    reason: int
    score: int
    detail: str
    rule_id: str = ""
    entry_id: str = ""
    action: Decision | None = None
    shadow: bool = False


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    score: int
    findings: tuple[Finding, ...]
    degraded: bool = False
    skipped_rule_ids: tuple[str, ...] = ()
    degraded_policy: Decision | None = None
