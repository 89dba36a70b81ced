"""Use cases of the earning-rule and burn-policy RPCs, one function per RPC. Rules are stored as
their EarningRule message; every change bumps the tenant's catalog version, because the compiled
catalog computes base points from the enabled rules."""

import uuid

from loyalty.promotion.v1 import earning_pb2
from loyalty_promotion import app, engine, repository
from loyalty_promotion.commands import (
    DeleteEarningRule,
    ListEarningRules,
    UpdateBurnPolicy,
    UpdateEarningRule,
)
from loyalty_promotion.domain import earning as rules
from loyalty_promotion.domain.campaigns import EditRefused, Violation
from loyalty_promotion.repository import StoredRule
from loyalty_runtime.errors import FieldViolation, InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork


def _not_found() -> NotFound:
    return NotFound(Reason.EARNING_RULE_NOT_FOUND, "no such earning rule", field="earning_rule_id")


def rule_of(stored: StoredRule) -> earning_pb2.EarningRule:
    rule = earning_pb2.EarningRule.FromString(stored.payload)
    rule.earning_rule_id = stored.earning_rule_id
    rule.etag = str(stored.version)
    return rule


def _payload(message) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField("etag")
    return copy.SerializeToString(deterministic=True)


def _refuse(found: list[Violation], reason: Reason = Reason.INVALID_ARGUMENT) -> None:
    if found:
        violations = [FieldViolation(v.field, v.description) for v in found]
        raise InvalidArgument(reason, violations[0].description, violations=violations)


def _refuse_invalid_rule(rule: earning_pb2.EarningRule) -> None:
    found = rules.rule_violations(rule)
    engine_found = engine.validate_earning_rule(rule)
    found += [Violation("earning_rule." + v.field, v.description) for v in engine_found]
    reason = Reason.INVALID_ARGUMENT
    if engine_found and engine_found[0].reason in Reason._value2member_map_:
        reason = Reason(engine_found[0].reason)
    _refuse(found, reason)


async def create_earning_rule(uow: UnitOfWork, requested: earning_pb2.EarningRule) -> earning_pb2.EarningRule:
    rule = rules.new_rule(requested)
    _refuse_invalid_rule(rule)
    rule.earning_rule_id = str(uuid.uuid4())
    rule.create_time.CopyFrom(timestamp(uow.now))
    rule.update_time.CopyFrom(timestamp(uow.now))
    await repository.insert_earning_rule(
        uow.connection, uow.tenant, rule.earning_rule_id, rule.program_id, rule.priority, _payload(rule)
    )
    await repository.bump_catalog_version(uow.connection, uow.tenant)
    rule.etag = "1"
    return rule


async def get_earning_rule(uow: UnitOfWork, rule_id: str) -> earning_pb2.EarningRule:
    stored = await repository.get_earning_rule(uow.connection, uow.tenant, rule_id)
    if stored is None:
        raise _not_found()
    return rule_of(stored)


async def list_earning_rules(uow: UnitOfWork, command: ListEarningRules) -> list[earning_pb2.EarningRule]:
    """One page (limit + 1 rows read, so the caller knows whether more follow); the state filter
    applies to the page read, so a filtered page may be short while more follow."""
    stored = await repository.list_earning_rules(
        uow.connection, uow.tenant, command.program_id, command.after, command.limit + 1
    )
    return [rule_of(s) for s in stored]


async def update_earning_rule(uow: UnitOfWork, command: UpdateEarningRule) -> earning_pb2.EarningRule:
    stored = await repository.get_earning_rule(uow.connection, uow.tenant, command.earning_rule_id, lock=True)
    if stored is None:
        raise _not_found()
    app.check_etag(command.etag, stored.version)
    try:
        updated = rules.apply_rule_mask(rule_of(stored), command.changes, command.mask)
    except EditRefused as refused:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, refused.description, field=refused.field) from None
    _refuse_invalid_rule(updated)
    updated.update_time.CopyFrom(timestamp(uow.now))
    version = await repository.update_earning_rule(
        uow.connection, uow.tenant, command.earning_rule_id, updated.priority, _payload(updated)
    )
    await repository.bump_catalog_version(uow.connection, uow.tenant)
    updated.etag = str(version)
    return updated


async def delete_earning_rule(uow: UnitOfWork, command: DeleteEarningRule) -> None:
    stored = await repository.get_earning_rule(uow.connection, uow.tenant, command.earning_rule_id, lock=True)
    if stored is None:
        raise _not_found()
    app.check_etag(command.etag, stored.version)
    await repository.delete_earning_rule(uow.connection, uow.tenant, command.earning_rule_id)
    await repository.bump_catalog_version(uow.connection, uow.tenant)


async def enabled_rules(connection, tenant: str) -> list[earning_pb2.EarningRule]:
    """What the catalog compiles: the tenant's enabled rules."""
    found = [rule_of(s) for s in await repository.list_earning_rules(connection, tenant, "", None, None)]
    return [r for r in found if r.state != earning_pb2.EARNING_RULE_STATE_DISABLED]


# --- burn policies ---


async def _burn_policy(uow: UnitOfWork, program_id: str, *, lock: bool = False) -> earning_pb2.BurnPolicy:
    stored = await repository.get_burn_policy(uow.connection, uow.tenant, program_id, lock=lock)
    if stored is None:
        return earning_pb2.BurnPolicy(program_id=program_id, enabled=False, etag="0")
    version, payload = stored
    policy = earning_pb2.BurnPolicy.FromString(payload)
    policy.etag = str(version)
    return policy


async def get_burn_policy(uow: UnitOfWork, program_id: str) -> earning_pb2.BurnPolicy:
    """A programme without a policy has burning disabled (etag "0")."""
    return await _burn_policy(uow, program_id)


async def update_burn_policy(uow: UnitOfWork, command: UpdateBurnPolicy) -> earning_pb2.BurnPolicy:
    current = await _burn_policy(uow, command.program_id, lock=True)
    app.check_etag(command.etag, int(current.etag))
    try:
        updated = rules.apply_burn_mask(current, command.changes, command.mask)
    except EditRefused as refused:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, refused.description, field=refused.field) from None
    _refuse(rules.burn_violations(updated))
    updated.program_id = command.program_id
    updated.update_time.CopyFrom(timestamp(uow.now))
    version = await repository.save_burn_policy(
        uow.connection, uow.tenant, command.program_id, _payload(updated)
    )
    await repository.bump_catalog_version(uow.connection, uow.tenant)
    updated.etag = str(version)
    return updated
