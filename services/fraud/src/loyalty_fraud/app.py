"""The fraud service's use cases: one `async def` per RPC taking the unit of work and a command.

An assessment is: one statement reading everything it needs (a decision already recorded under its
key, the tenant's rules and settings, the blocklist entries that could match), one Redis round trip
for every velocity counter (counters.py), then, unless it is a dry run, one statement recording the
decision (with its review case and the case's audit line). Each write is one statement, so no
explicit transaction is needed. It is idempotent on the request's key: the recorded decision is read
first, Redis counts a key once, and two concurrent calls with one key meet at the assessments'
unique index, where the second replays the first's decision.

Assessments are answered as the contract's message that is also what is stored, so a replay and a
listing answer byte for byte what the first call answered.
"""

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache

from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    blocklist_pb2 as bpb,
    events_pb2,
    review_pb2,
    rule_pb2 as rpb,
)
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty_fraud import cache, encoding, repository
from loyalty_fraud.counters import Counters
from loyalty_fraud.domain import model, patterns, rules as fraud_rules
from loyalty_fraud.encoding import Assessed
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

log = logging.getLogger("loyalty.fraud")


def new_id() -> str:
    return str(uuid.uuid4())


def _etag() -> str:
    return uuid.uuid4().hex[:16]


# --- assessments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assess:
    action: model.Action
    fingerprint: bytes
    dry_run: bool


def config_source(uow: UnitOfWork) -> cache.Source:
    async def load() -> cache.Config:
        rows = await repository.config(uow)
        version = next((row["version"] for row in rows if row["part"] == "version"), 0)
        settings = next((row["body"] for row in rows if row["part"] == "settings"), None)
        return cache.build(version, [row["body"] for row in rows if row["part"] == "rule"], settings)

    return cache.Source(lambda: repository.config_version(uow), load)


def _history(parts: dict[str, list]) -> patterns.History:
    def fact(row) -> patterns.Fact:
        return patterns.Fact(
            row["customer_id"], row["fact"], row["subject_key"], row["amount"], row["value"], row["at"]
        )

    fingerprints: dict[str, set] = {}
    for row in parts["fingerprint"]:
        fingerprints.setdefault(row["customer_id"], set()).add((model.Fingerprint(row["fact"]), row["value"]))
    return patterns.History(
        stats={
            (row["customer_id"], row["subject_key"]): (row["earns"], row["amount"]) for row in parts["stats"]
        },
        activity=tuple(fact(row) for row in parts["activity"]),
        fingerprints={customer: frozenset(found) for customer, found in fingerprints.items()},
        referrals=tuple(fact(row) for row in parts["referral"]),
    )


async def assess(
    uow: UnitOfWork, counters: Counters, configs: cache.ConfigCache, command: Assess
) -> apb.Assessment:
    action = replace(command.action, now=uow.now)
    kind = action.kind.value
    config = await configs.get(uow.tenant, config_source(uow))
    rules = list(config.rules)
    lookups = fraud_rules.blocklist_lookups(action)
    rows = await repository.assessment_inputs(
        uow,
        kind,
        action.subject_id,
        [kind_.value for kind_, _ in lookups],
        [value for _, value in lookups],
        ranges=action.ip_address is not None,
        needs=patterns.needs(rules, action),
        customer_id=action.customer_id,
        device_hash=action.device_hash,
    )
    parts: dict[str, list] = {
        "assessment": [],
        "blocklist": [],
        "stats": [],
        "activity": [],
        "fingerprint": [],
        "referral": [],
    }
    for row in rows:
        parts[row["part"]].append(row)
    if not command.dry_run and parts["assessment"]:
        return _replayed(parts["assessment"][0], kind, command.fingerprint)
    entries = [_entry(row["body"]) for row in parts["blocklist"]]
    blocked = fraud_rules.blocklist_matches(entries, action)
    needed = fraud_rules.counters_for(rules, action)
    now_ms = int(uow.now.timestamp() * 1000)
    subject = f"{kind}:{action.subject_id}"
    totals = await counters.count(uow.tenant, subject, needed, now_ms, record=not command.dry_run)
    verdict = fraud_rules.decide(
        rules,
        config.settings,
        action,
        blocked=blocked,
        counters=needed,
        totals=totals,
        history=_history(parts),
    )
    if command.dry_run:
        return encoding.encode_assessment(Assessed("", action, verdict, True, uow.now))
    return await _record(uow, Assessed(new_id(), action, verdict, False, uow.now), command.fingerprint)


@lru_cache(maxsize=4096)
def _entry(body: bytes) -> model.BlocklistEntry:
    return encoding.decode_entry(bpb.BlocklistEntry.FromString(body))


def _replayed(row, kind: str, digest: bytes) -> apb.Assessment:
    if bytes(row["fingerprint"]) != digest:
        raise FailedPrecondition(
            Reason.IDEMPOTENCY_KEY_REUSED,
            "this key was assessed with a different request",
            field="checkout_id" if kind == "checkout" else "idempotency_key",
        )
    return apb.Assessment.FromString(row["body"])


async def _record(uow: UnitOfWork, assessed: Assessed, digest: bytes) -> apb.Assessment:
    """Record the decision (a REVIEW opens its case); a concurrent first call's decision wins."""
    if assessed.verdict.decision is model.Decision.REVIEW:
        assessed = replace(assessed, review_case_id=new_id())
    message = encoding.encode_assessment(assessed)
    action = assessed.action
    # A declined attempt leaves no history: its device must not become "known", its earn "usual".
    declined = assessed.verdict.decision is model.Decision.DECLINE
    recorded = await repository.record_assessment(
        uow,
        assessed.assessment_id,
        action.kind.value,
        action.subject_id,
        digest,
        action.customer_id,
        assessed.verdict.decision.name.lower(),
        message.SerializeToString(deterministic=True),
        assessed.review_case_id,
        patterns.ToRecord() if declined else patterns.to_record(action),
    )
    if recorded:
        return message
    row = await repository.assessment_by_subject(uow, action.kind.value, action.subject_id)
    return _replayed(row, action.kind.value, digest)


async def get_assessment(uow: UnitOfWork, assessment_id: str) -> apb.Assessment:
    body = await repository.assessment(uow, assessment_id)
    if body is None:
        raise NotFound(Reason.ASSESSMENT_NOT_FOUND, "assessment not found", field="assessment_id")
    return apb.Assessment.FromString(body)


@dataclass(frozen=True)
class ListAssessments:
    customer_id: str
    kind: model.Kind | None
    decision: model.Decision | None
    start: datetime | None
    end: datetime | None
    before: tuple[datetime, str] | None
    limit: int


async def list_assessments(uow: UnitOfWork, command: ListAssessments) -> list:
    """Rows of (assessment_id, created_at, body), newest first; one more than a page tells of the next."""
    return await repository.list_assessments(
        uow,
        customer_id=command.customer_id,
        kind=command.kind.value if command.kind else None,
        decision=command.decision.name.lower() if command.decision else None,
        start=command.start,
        end=command.end,
        before=command.before,
        limit=command.limit + 1,
    )


# --- rules ----------------------------------------------------------------------------------------

UPDATABLE = (
    "display_name",
    "description",
    "state",
    "applies_to",
    "action",
    "score",
    "reason",
    "velocity",
    "threshold",
    "pattern",
)
KINDS = ("velocity", "threshold", "pattern")


def _stamped(rule: rpb.Rule, now: datetime) -> rpb.Rule:
    rule.update_time.CopyFrom(timestamp(now))
    rule.etag = _etag()
    if rule.state == rpb.RULE_STATE_UNSPECIFIED:
        rule.state = rpb.RULE_STATE_ENABLED
    return rule


def _state(rule: rpb.Rule) -> str:
    return encoding.RULE_STATES.decode(rule.state, "rule.state").value


async def create_rule(uow: UnitOfWork, rule: rpb.Rule) -> rpb.Rule:
    created = rpb.Rule()
    created.CopyFrom(rule)
    created.rule_id = new_id()
    created.create_time.CopyFrom(timestamp(uow.now))
    _stamped(created, uow.now)
    encoding.decode_rule(created)
    await repository.insert_rule(
        uow, created.rule_id, _state(created), created.SerializeToString(deterministic=True)
    )
    await repository.bump_config_version(uow)
    return created


async def get_rule(uow: UnitOfWork, rule_id: str, *, lock: bool = False) -> rpb.Rule:
    body = await repository.rule(uow, rule_id, lock=lock)
    if body is None:
        raise NotFound(Reason.RULE_NOT_FOUND, "rule not found", field="rule_id")
    return rpb.Rule.FromString(body)


@dataclass(frozen=True)
class UpdateRule:
    rule: rpb.Rule
    paths: tuple[str, ...]


def _require_etag(given: str, current: str, field: str) -> None:
    if given and given != current:
        raise Aborted(Reason.CONCURRENT_MODIFICATION, "the rule changed since it was read", field=field)


async def update_rule(uow: UnitOfWork, command: UpdateRule) -> rpb.Rule:
    current = await get_rule(uow, command.rule.rule_id, lock=True)
    _require_etag(command.rule.etag, current.etag, "rule.etag")
    paths = command.paths or UPDATABLE
    for path in paths:
        if path not in UPDATABLE:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{path} cannot be updated", field="update_mask")
        if path in KINDS and current.WhichOneof("kind") != path:
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT,
                "a rule's kind (velocity, threshold or pattern) is immutable",
                field=f"rule.{path}",
            )
        current.ClearField(path)
        if path == "applies_to":
            current.applies_to.extend(command.rule.applies_to)
        elif path in KINDS:
            getattr(current, path).CopyFrom(getattr(command.rule, path))
        else:
            setattr(current, path, getattr(command.rule, path))
    _stamped(current, uow.now)
    encoding.decode_rule(current)
    await repository.update_rule(
        uow, current.rule_id, _state(current), current.SerializeToString(deterministic=True)
    )
    await repository.bump_config_version(uow)
    return current


async def delete_rule(uow: UnitOfWork, rule_id: str, etag: str) -> None:
    current = await get_rule(uow, rule_id, lock=True)
    _require_etag(etag, current.etag, "etag")
    await repository.delete_rule(uow, rule_id)
    await repository.bump_config_version(uow)


async def list_rules(
    uow: UnitOfWork, state: model.RuleState | None, after: str, limit: int
) -> list[rpb.Rule]:
    bodies = await repository.list_rules(uow, state.value if state else None, after, limit + 1)
    return [rpb.Rule.FromString(body) for body in bodies]


# --- settings -------------------------------------------------------------------------------------

SETTINGS_FIELDS = (
    "review_threshold",
    "decline_threshold",
    "degraded_checkout_decision",
    "degraded_redemption_decision",
    "degraded_earn_decision",
    "degraded_return_decision",
    "degraded_referral_decision",
    "degraded_enrolment_decision",
    "brute_force",
)


async def get_settings(uow: UnitOfWork, *, lock: bool = False) -> rpb.FraudSettings:
    body = await repository.settings(uow, lock=lock)
    return rpb.FraudSettings.FromString(body) if body is not None else encoding.default_settings()


@dataclass(frozen=True)
class UpdateSettings:
    settings: rpb.FraudSettings
    paths: tuple[str, ...]


async def update_settings(uow: UnitOfWork, command: UpdateSettings) -> rpb.FraudSettings:
    current = await get_settings(uow, lock=True)
    before = rpb.BruteForcePolicy()
    before.CopyFrom(encoding.brute_force_policy(current))
    if command.settings.etag and command.settings.etag != current.etag:
        raise Aborted(
            Reason.CONCURRENT_MODIFICATION, "the settings changed since they were read", field="settings.etag"
        )
    for path in command.paths or SETTINGS_FIELDS:
        if path not in SETTINGS_FIELDS:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{path} cannot be updated", field="update_mask")
        if path == "brute_force":
            current.brute_force.CopyFrom(command.settings.brute_force)
        else:
            setattr(current, path, getattr(command.settings, path))
    fraud_rules.validate_settings(encoding.decode_settings(current))
    encoding.validate_brute_force(current.brute_force)
    current.update_time.CopyFrom(timestamp(uow.now))
    current.etag = _etag()
    await repository.put_settings(uow, current.SerializeToString(deterministic=True))
    await repository.bump_config_version(uow)
    policy = encoding.brute_force_policy(current)
    if policy != before:
        uow.record(
            events_pb2.BruteForcePolicyChanged(policy=policy, etag=encoding.brute_force_etag(policy)),
            key=uow.tenant,
        )
    return current


async def brute_force_policy(uow: UnitOfWork, configs: cache.ConfigCache) -> tuple[rpb.BruteForcePolicy, str]:
    """The tenant's limits from this replica's cache: no database read while the copy is fresh."""
    config = await configs.get(uow.tenant, config_source(uow))
    policy = encoding.brute_force_policy(config.message)
    return policy, encoding.brute_force_etag(policy)


async def config_changed(uow: UnitOfWork, configs: cache.ConfigCache) -> None:
    """After a committed change to rules or settings."""
    await configs.changed(uow.tenant, await repository.config_version(uow))


# --- blocklist ------------------------------------------------------------------------------------


async def create_entry(uow: UnitOfWork, entry: bpb.BlocklistEntry) -> bpb.BlocklistEntry:
    """Blocking a value already blocked returns the existing entry."""
    kind = encoding.BLOCKLIST_TYPES.decode(entry.type, "entry.type")
    created = bpb.BlocklistEntry()
    created.CopyFrom(entry)
    created.value = fraud_rules.require_blocklist_value(kind, entry.value, "entry.value")
    created.entry_id = new_id()
    created.create_time.CopyFrom(timestamp(uow.now))
    created.update_time.CopyFrom(timestamp(uow.now))
    expire_at = entry.expire_time.ToDatetime(tzinfo=uow.now.tzinfo) if entry.HasField("expire_time") else None
    body = await repository.insert_entry(
        uow,
        created.entry_id,
        kind.value,
        created.value,
        expire_at,
        created.SerializeToString(deterministic=True),
    )
    if body is None:
        body = await repository.entry_by_value(uow, kind.value, created.value)
    return bpb.BlocklistEntry.FromString(body)


async def get_entry(uow: UnitOfWork, entry_id: str) -> bpb.BlocklistEntry:
    body = await repository.entry(uow, entry_id)
    if body is None:
        raise NotFound(Reason.BLOCKLIST_ENTRY_NOT_FOUND, "blocklist entry not found", field="entry_id")
    return bpb.BlocklistEntry.FromString(body)


@dataclass(frozen=True)
class UpdateEntry:
    entry: bpb.BlocklistEntry
    paths: tuple[str, ...]


ENTRY_FIELDS = ("note", "expire_time")


async def update_entry(uow: UnitOfWork, command: UpdateEntry) -> bpb.BlocklistEntry:
    """The note or expiry; what an entry blocks (type, value) is immutable."""
    if not command.entry.entry_id:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "entry.entry_id is required", field="entry.entry_id")
    paths = command.paths or ENTRY_FIELDS
    for path in paths:
        if path not in ENTRY_FIELDS:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{path} cannot be updated", field="update_mask")
    body = await repository.entry_for_update(uow, command.entry.entry_id)
    if body is None:
        raise NotFound(Reason.BLOCKLIST_ENTRY_NOT_FOUND, "blocklist entry not found", field="entry.entry_id")
    current = bpb.BlocklistEntry.FromString(body)
    if "note" in paths:
        current.note = command.entry.note
    if "expire_time" in paths:
        current.ClearField("expire_time")
        if command.entry.HasField("expire_time"):
            current.expire_time.CopyFrom(command.entry.expire_time)
    current.update_time.CopyFrom(timestamp(uow.now))
    expire_at = (
        current.expire_time.ToDatetime(tzinfo=uow.now.tzinfo) if current.HasField("expire_time") else None
    )
    await repository.update_entry(
        uow, current.entry_id, expire_at, current.SerializeToString(deterministic=True)
    )
    return current


async def delete_entry(uow: UnitOfWork, entry_id: str) -> None:
    if not await repository.delete_entry(uow, entry_id):
        raise NotFound(Reason.BLOCKLIST_ENTRY_NOT_FOUND, "blocklist entry not found", field="entry_id")


@dataclass(frozen=True)
class ListEntries:
    kind: model.BlocklistEntryType | None
    value: str
    show_expired: bool
    after: str
    limit: int


async def list_entries(uow: UnitOfWork, command: ListEntries) -> list[bpb.BlocklistEntry]:
    bodies = await repository.list_entries(
        uow,
        command.kind.value if command.kind else None,
        command.value,
        command.show_expired,
        command.after,
        command.limit + 1,
    )
    return [bpb.BlocklistEntry.FromString(body) for body in bodies]


# --- review cases ---------------------------------------------------------------------------------

CASE_STATES = {
    "open": review_pb2.REVIEW_CASE_STATE_OPEN,
    "approved": review_pb2.REVIEW_CASE_STATE_APPROVED,
    "rejected": review_pb2.REVIEW_CASE_STATE_REJECTED,
}


def _case(row) -> review_pb2.ReviewCase:
    case = review_pb2.ReviewCase(
        review_case_id=row["review_case_id"],
        state=CASE_STATES[row["state"]],
        assessment=apb.Assessment.FromString(row["assessment"]),
        customer_id=row["customer_id"],
        resolved_by=row["resolved_by"],
        resolution_note=row["resolution_note"],
        create_time=timestamp(row["created_at"]),
        assignee=row["assignee"],
    )
    if row["resolved_at"] is not None:
        case.resolve_time.CopyFrom(timestamp(row["resolved_at"]))
    return case


async def get_case(uow: UnitOfWork, case_id: str) -> review_pb2.ReviewCase:
    row = await repository.case(uow, case_id)
    if row is None:
        raise NotFound(Reason.REVIEW_CASE_NOT_FOUND, "review case not found", field="review_case_id")
    return _case(row)


@dataclass(frozen=True)
class ListCases:
    state: str | None
    customer_id: str
    assignee: str
    after: tuple[datetime, str] | None
    limit: int


async def list_cases(uow: UnitOfWork, command: ListCases) -> list:
    """Rows (for the page token) and their cases, oldest first, one more than a page."""
    rows = await repository.list_cases(
        uow, command.state, command.customer_id, command.assignee, command.after, command.limit + 1
    )
    return [(row, _case(row)) for row in rows]


@dataclass(frozen=True)
class AssignCase:
    case_id: str
    assignee: str


async def assign_case(uow: UnitOfWork, command: AssignCase) -> review_pb2.ReviewCase:
    """An open case to a reviewer (empty: unassigned), audited in the same statement."""
    assigned = await repository.assign_case(uow, command.case_id, command.assignee.strip())
    case = await get_case(uow, command.case_id)
    if not assigned:
        raise FailedPrecondition(
            Reason.REVIEW_CASE_RESOLVED, "a resolved case is not assigned", field="review_case_id"
        )
    return case


@dataclass(frozen=True)
class ResolveCase:
    case_id: str
    resolution: str  # "approved" or "rejected"
    note: str
    blocklist_customer: bool


@dataclass(frozen=True)
class Resolved:
    case: review_pb2.ReviewCase
    entry: bpb.BlocklistEntry | None


async def resolve_case(uow: UnitOfWork, command: ResolveCase) -> Resolved:
    """Open -> approved or rejected, audited in the same statement; resolving it the same way again
    answers the case as it is, the other way is refused."""
    if command.blocklist_customer and command.resolution != "rejected":
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "only a rejection can blocklist the customer", field="blocklist_customer"
        )
    resolved = await repository.resolve_case(uow, command.case_id, command.resolution, command.note)
    case = await get_case(uow, command.case_id)
    if not resolved and case.state != CASE_STATES[command.resolution]:
        raise FailedPrecondition(
            Reason.REVIEW_CASE_RESOLVED, "the case was resolved the other way", field="resolution"
        )
    entry = None
    if command.blocklist_customer and case.customer_id:
        entry = await create_entry(
            uow,
            bpb.BlocklistEntry(
                type=bpb.BLOCKLIST_ENTRY_TYPE_CUSTOMER,
                value=case.customer_id,
                note=command.note,
                review_case_id=case.review_case_id,
            ),
        )
    if resolved:
        uow.record(
            events_pb2.CaseResolved(
                review_case_id=case.review_case_id,
                assessment_id=case.assessment.assessment_id,
                kind=case.assessment.kind,
                subject_id=case.assessment.subject_id,
                customer_id=case.customer_id,
                resolution=case.state,
                blocklist_entry_id=entry.entry_id if entry is not None else "",
            ),
            key=case.customer_id or case.review_case_id,
        )
    return Resolved(case, entry)


# --- events ---------------------------------------------------------------------------------------


async def customer_updated(uow: UnitOfWork, event) -> None:
    """profile's customer.updated: a change of e-mail, phone or login identifiers is what the
    takeover rule (a burn from a new device right after it) looks for."""
    fields = patterns.account_changed(event.fields)
    if fields and event.customer_id:
        await repository.record_account_change(
            uow, event.customer_id, f"customer.updated:{uow.now.isoformat()}", fields
        )


# --- code lockouts -------------------------------------------------------------------------------

LOCKOUT_KEYS = {
    gateway_events.CODE_ATTEMPT_KEY_TERMINAL: (rpb.VELOCITY_KEY_TERMINAL, "terminal"),
    gateway_events.CODE_ATTEMPT_KEY_DEVICE: (rpb.VELOCITY_KEY_DEVICE, "device"),
    gateway_events.CODE_ATTEMPT_KEY_CUSTOMER: (rpb.VELOCITY_KEY_CUSTOMER, "customer"),
    gateway_events.CODE_ATTEMPT_KEY_IP: (rpb.VELOCITY_KEY_IP, "ip"),
}
# VelocityKey -> the stored key name, for ListCodeLockouts' filter.
LOCKOUT_KEY_NAMES = dict(LOCKOUT_KEYS.values())


async def code_attempts_locked(uow: UnitOfWork, event: gateway_events.CodeAttemptsLocked) -> None:
    """The gateway's `code_attempts.locked`: kept for reviewers (ListCodeLockouts). The consumer handles
    each event once, so a redelivery records nothing twice."""
    if event.key not in LOCKOUT_KEYS or not event.value:
        return
    key, name = LOCKOUT_KEYS[event.key]
    lockout = rpb.CodeLockout(
        lockout_id=new_id(),
        key=key,
        value=event.value,
        invalid_attempts=event.invalid_attempts,
        max_invalid_attempts=event.max_invalid_attempts,
        window=event.window,
        lock_time=event.lock_time,
        unlock_time=event.unlock_time,
        terminal_id=event.terminal_id,
    )
    locked_at = event.lock_time.ToDatetime(tzinfo=uow.now.tzinfo) if event.HasField("lock_time") else uow.now
    await repository.record_lockout(
        uow, name, event.value, locked_at, lockout.SerializeToString(deterministic=True)
    )


@dataclass(frozen=True)
class ListLockouts:
    key: str | None
    value: str
    before: int | None
    limit: int


async def list_lockouts(uow: UnitOfWork, command: ListLockouts) -> list[tuple[int, rpb.CodeLockout]]:
    """One more than a page, newest first, with each one's position for the page token. The value is
    the column's: a merge moves a customer's lockouts to the survivor there."""
    rows = await repository.list_lockouts(uow, command.key, command.value, command.before, command.limit + 1)
    found = []
    for seq, value, body in rows:
        lockout = rpb.CodeLockout.FromString(body)
        lockout.value = value
        found.append((seq, lockout))
    return found


# --- customer data --------------------------------------------------------------------------------


async def export_customer_data(uow: UnitOfWork, customer_id: str) -> list:
    """The decisions about the customer, and the fingerprints (keyed hashes) fraud saw them with."""
    records: list = [
        apb.Assessment.FromString(body) for body in await repository.customer_assessments(uow, customer_id)
    ]
    seen = apb.PartyFingerprints()
    for row in await repository.customer_fingerprints(uow, customer_id):
        kind = model.Fingerprint(row["type"])
        if kind is model.Fingerprint.PHONE:
            seen.phone_hash = row["value"]
        elif kind is model.Fingerprint.EMAIL:
            seen.email_hash = row["value"]
        elif kind is model.Fingerprint.DEVICE:
            seen.device_hashes.append(row["value"])
        else:
            seen.card_hashes.append(row["value"])
    if seen.ByteSize():
        records.append(seen)
    return records


async def erase_customer(uow: UnitOfWork, customer_id: str) -> None:
    await repository.erase_history(uow, customer_id)


async def merge_customers(uow: UnitOfWork, survivor_id: str, merged_id: str) -> None:
    await repository.merge_history(uow, survivor_id, merged_id)


# --- retention ------------------------------------------------------------------------------------

RETENTION_BATCH = 5000


async def forget_old_history(units: UnitsOfWork) -> int:
    """Facts older than the longest window a pattern rule may have (90 days) are never read again:
    delete them, tenant by tenant, in batches (short transactions)."""
    async with units.database.connection() as connection:
        tenants = await repository.history_tenants(connection)
    forgotten = 0
    for tenant in tenants:
        token = bind_call(CallContext(tenant_id=tenant, principal="fraud-retention"))
        try:
            while True:
                async with units.change() as uow:
                    before = uow.now - timedelta(milliseconds=encoding.MAX_WINDOW_MS)
                    gone = await repository.forget_old_activity(uow, before, RETENTION_BATCH)
                forgotten += gone
                if gone < RETENTION_BATCH:
                    break
        except Exception:
            log.exception("history retention failed for a tenant", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)
    return forgotten
