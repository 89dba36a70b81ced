"""Pattern rules: points anomalies, refund abuse and referral self-dealing, judged on the history fraud
keeps (repository.py reads it, in the assessment's one statement, only as far as the rules need).

History is written only for actions not declined: a declined attempt must not make its device
"known" or its earn part of the "usual", or a fraudster would get through by trying twice.
Pure: the history comes in, what to record goes out.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loyalty_fraud.domain.model import (
    DEFAULT_MIN_EARNS,
    Action,
    Fingerprint,
    Kind,
    Pattern,
    PatternKind,
    Rule,
)

P = PatternKind
# Facts in the activity history.
EARN, BURN, PURCHASE, RETURN, REFERRAL, ACCOUNT_CHANGE = (
    "earn",
    "burn",
    "purchase",
    "return",
    "referral",
    "account_change",
)
CUSTOMER, STORE = "customer", "store"
# Profile's `customer.updated` fields that change how an account is reached or logged into.
ACCOUNT_FIELDS = frozenset({"email", "phone", "identifiers", "password"})
FINGERPRINT_NAMES = {
    Fingerprint.DEVICE: "device",
    Fingerprint.CARD: "payment card",
    Fingerprint.PHONE: "phone",
    Fingerprint.EMAIL: "e-mail",
}


@dataclass(frozen=True)
class Fact:
    customer_id: str
    fact: str
    subject_key: str
    amount: int
    value: str
    at: datetime


@dataclass(frozen=True)
class Needs:
    """What history the rules applying to one action read."""

    # (scope, id) pairs whose earn statistics are read.
    stats: tuple[tuple[str, str], ...] = ()
    # The customer's activity this far back (ms); 0 = none.
    activity_ms: int = 0
    # Customers whose fingerprints are read.
    fingerprints: tuple[str, ...] = ()
    # Referrals from the action's device this far back (ms); 0 = none.
    referrals_ms: int = 0

    @property
    def any(self) -> bool:
        return bool(self.stats or self.activity_ms or self.fingerprints or self.referrals_ms)


@dataclass(frozen=True)
class History:
    stats: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (earns, points)
    activity: tuple[Fact, ...] = ()
    fingerprints: Mapping[str, frozenset[tuple[Fingerprint, str]]] = field(default_factory=dict)
    referrals: tuple[Fact, ...] = ()


@dataclass(frozen=True)
class ToRecord:
    facts: tuple[Fact, ...] = ()
    # (scope, id, points) of one more earn.
    earns: tuple[tuple[str, str, int], ...] = ()
    # (customer, type, hash).
    fingerprints: tuple[tuple[str, Fingerprint, str], ...] = ()


def _patterns(rules: Iterable[Rule], action: Action) -> list[tuple[Rule, Pattern]]:
    return [(r, r.pattern) for r in rules if r.pattern is not None and r.applies(action.kind)]


def needs(rules: Iterable[Rule], action: Action) -> Needs:
    stats: dict[tuple[str, str], None] = {}
    activity_ms = referrals_ms = 0
    fingerprints: dict[str, None] = {}
    for _, pattern in _patterns(rules, action):
        kind = pattern.kind
        if kind is P.EARN_ABOVE_CUSTOMER_USUAL and action.customer_id and action.points_earned:
            stats[(CUSTOMER, action.customer_id)] = None
        elif kind is P.EARN_ABOVE_STORE_USUAL and action.store_id and action.points_earned:
            stats[(STORE, action.store_id)] = None
        elif kind in (P.BURN_AFTER_LARGE_EARN, P.BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE):
            if action.customer_id and action.points_burned:
                activity_ms = max(activity_ms, pattern.window_ms)
                if kind is P.BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE and action.device_hash:
                    fingerprints[action.customer_id] = None
        elif kind in (P.RETURN_VALUE_SHARE, P.RETURN_AFTER_POINTS_SPENT) and action.kind is Kind.RETURN:
            activity_ms = max(activity_ms, pattern.window_ms)
        elif kind is P.REFERRAL_SHARED_FINGERPRINT and action.kind is Kind.REFERRAL:
            fingerprints[action.referrer_id] = None
            fingerprints[action.customer_id] = None
        elif kind is P.REFERRAL_DEVICE_REFEREES and action.kind is Kind.REFERRAL and action.device_hash:
            referrals_ms = max(referrals_ms, pattern.window_ms)
    return Needs(tuple(stats), activity_ms, tuple(fingerprints), referrals_ms)


# --- evaluation -----------------------------------------------------------------------------------


def _since(history: Iterable[Fact], now: datetime, window_ms: int, *facts: str) -> list[Fact]:
    start = now - timedelta(milliseconds=window_ms)
    return [f for f in history if f.fact in facts and f.at > start]


def _ago(now: datetime, at: datetime) -> str:
    minutes = int((now - at).total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"


def _usual(pattern: Pattern, action: Action, stats: tuple[int, int] | None, whose: str) -> str | None:
    earns, points = stats or (0, 0)
    needed = pattern.min_value or DEFAULT_MIN_EARNS
    if earns < needed or points <= 0:
        return None
    # points_earned / (points / earns) > max_value / 100, in integers.
    if action.points_earned * 100 * earns > pattern.max_value * points:
        usual = points // earns
        share = action.points_earned * 100 * earns // points
        return (
            f"earn of {action.points_earned} points is {share} % of {whose} usual {usual}"
            f" over {earns} earns (limit {pattern.max_value} %)"
        )
    return None


def _fires(pattern: Pattern, action: Action, history: History) -> str | None:
    """Why the pattern fires on `action`, or None."""
    kind, now = pattern.kind, action.now
    if kind is P.EARN_ABOVE_CUSTOMER_USUAL and action.points_earned and action.customer_id:
        return _usual(pattern, action, history.stats.get((CUSTOMER, action.customer_id)), "the customer's")
    if kind is P.EARN_ABOVE_STORE_USUAL and action.points_earned and action.store_id:
        return _usual(pattern, action, history.stats.get((STORE, action.store_id)), "the store's")
    if kind is P.BURN_AFTER_LARGE_EARN and action.points_burned:
        large = [
            f for f in _since(history.activity, now, pattern.window_ms, EARN) if f.amount > pattern.max_value
        ]
        if large:
            last = max(large, key=lambda f: f.at)
            return (
                f"burn of {action.points_burned} points {_ago(now, last.at)} after an earn of {last.amount}"
                f" points (large: above {pattern.max_value})"
            )
        return None
    if kind is P.BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE and action.points_burned and action.device_hash:
        known = history.fingerprints.get(action.customer_id, frozenset())
        if (Fingerprint.DEVICE, action.device_hash) in known:
            return None
        changes = _since(history.activity, now, pattern.window_ms, ACCOUNT_CHANGE)
        changed_at = action.credentials_changed_at
        if changed_at is not None and now - timedelta(milliseconds=pattern.window_ms) < changed_at <= now:
            changes.append(Fact(action.customer_id, ACCOUNT_CHANGE, "", 0, "password or login", changed_at))
        if changes:
            last = max(changes, key=lambda f: f.at)
            return (
                f"burn of {action.points_burned} points from a device never seen for this customer,"
                f" {_ago(now, last.at)} after a change of {last.value}"
            )
        return None
    if kind is P.RETURN_VALUE_SHARE and action.kind is Kind.RETURN:
        window = _since(history.activity, now, pattern.window_ms, PURCHASE, RETURN)
        purchased = sum(f.amount for f in window if f.fact == PURCHASE and f.value == action.currency)
        returned = action.refund + sum(
            f.amount for f in window if f.fact == RETURN and f.value == action.currency
        )
        if returned and returned * 10_000 > pattern.max_value * purchased:
            share = f"{returned * 10_000 // purchased / 100:.2f} %" if purchased else "no purchases"
            return (
                f"returns of {returned} against purchases of {purchased} {action.currency} in"
                f" {pattern.window_ms // 86_400_000} days ({share}, limit {pattern.max_value / 100:.2f} %)"
            )
        return None
    if kind is P.RETURN_AFTER_POINTS_SPENT and action.kind is Kind.RETURN:
        purchase = [
            f
            for f in _since(history.activity, now, pattern.window_ms, EARN, PURCHASE)
            if f.subject_key == action.returned_checkout_id
        ]
        if not purchase:
            return None
        bought_at = min(f.at for f in purchase)
        earned = action.points_reversed or sum(f.amount for f in purchase if f.fact == EARN)
        burned = sum(
            f.amount for f in _since(history.activity, now, pattern.window_ms, BURN) if f.at > bought_at
        )
        if earned > 0 and burned > pattern.max_value:
            return (
                f"return of a purchase that earned {earned} points, {burned} points burned since"
                f" (limit {pattern.max_value})"
            )
        return None
    if kind is P.REFERRAL_SHARED_FINGERPRINT and action.kind is Kind.REFERRAL:
        if action.referrer_id == action.customer_id:
            return "referrer and referee are the same customer"
        referrer = action.referrer_fingerprints | history.fingerprints.get(action.referrer_id, frozenset())
        referee = _referee_fingerprints(action) | history.fingerprints.get(action.customer_id, frozenset())
        shared = sorted({FINGERPRINT_NAMES[kind_] for kind_, _ in referrer & referee})
        if shared:
            return f"referrer and referee share a {', '.join(shared)}"
        return None
    if kind is P.REFERRAL_DEVICE_REFEREES and action.kind is Kind.REFERRAL and action.device_hash:
        start = now - timedelta(milliseconds=pattern.window_ms)
        referees = {f.customer_id for f in history.referrals if f.at > start} | {action.customer_id}
        if len(referees) > pattern.max_value:
            return (
                f"{len(referees)} referees from one device in {pattern.window_ms // 3_600_000} h"
                f" (limit {pattern.max_value})"
            )
    return None


def _referee_fingerprints(action: Action) -> frozenset[tuple[Fingerprint, str]]:
    seen = {(Fingerprint.DEVICE, action.device_hash), (Fingerprint.CARD, action.card_hash)}
    return action.referee_fingerprints | {(kind, value) for kind, value in seen if value}


def fired(rules: Iterable[Rule], action: Action, history: History) -> list[tuple[Rule, str]]:
    """Each pattern rule that fires, with its reason's detail."""
    found = []
    for rule, pattern in _patterns(rules, action):
        detail = _fires(pattern, action, history)
        if detail is not None:
            found.append((rule, detail))
    return found


# --- what an assessment leaves behind -------------------------------------------------------------


def to_record(action: Action) -> ToRecord:
    """The history a recorded, not declined action adds."""
    customer, now, key = action.customer_id, action.now, action.subject_id
    facts: list[Fact] = []
    earns: list[tuple[str, str, int]] = []
    fingerprints: list[tuple[str, Fingerprint, str]] = []
    if not customer:
        return ToRecord()
    if action.kind is Kind.CHECKOUT and action.basket_total:
        facts.append(Fact(customer, PURCHASE, key, action.basket_total, action.currency, now))
    if action.kind in (Kind.CHECKOUT, Kind.EARN) and action.points_earned:
        facts.append(Fact(customer, EARN, key, action.points_earned, "", now))
        earns.append((CUSTOMER, customer, action.points_earned))
        if action.store_id:
            earns.append((STORE, action.store_id, action.points_earned))
    if action.kind is Kind.CHECKOUT and action.points_burned:
        facts.append(Fact(customer, BURN, key, action.points_burned, "", now))
    if action.kind is Kind.RETURN:
        facts.append(Fact(customer, RETURN, key, action.refund, action.currency, now))
    if action.kind is Kind.REFERRAL:
        facts.append(Fact(customer, REFERRAL, key, action.points_earned, action.device_hash, now))
        fingerprints += [(action.referrer_id, kind, value) for kind, value in action.referrer_fingerprints]
        fingerprints += [(customer, kind, value) for kind, value in _referee_fingerprints(action)]
    else:
        if action.device_hash:
            fingerprints.append((customer, Fingerprint.DEVICE, action.device_hash))
        if action.card_hash:
            fingerprints.append((customer, Fingerprint.CARD, action.card_hash))
    return ToRecord(tuple(facts), tuple(earns), tuple(dict.fromkeys(fingerprints)))


def account_changed(fields: Iterable[str]) -> str:
    """The account fields among a profile update's, comma-separated; empty when none changed."""
    return ", ".join(sorted(ACCOUNT_FIELDS.intersection(fields)))
