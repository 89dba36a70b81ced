"""Use cases of the admin API: terminals, API keys, admin users and their tokens, tenant settings and
the audit log. Every change appends its audit record in the same transaction (ids and field names,
never personal values)."""

import asyncio
import contextlib
import hashlib
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty.gateway.v1 import events_pb2
from loyalty_gateway import repository
from loyalty_gateway.auth import Authenticator
from loyalty_gateway.domain import adjustments, admin_api, audit, credentials, tenant_settings
from loyalty_gateway.tenants import encode_settings
from loyalty_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from loyalty_runtime.uow import UnitOfWork

PASSWORDS = PasswordHasher()
# Verified when the username is unknown, so a login takes as long either way.
_DUMMY_HASH = PASSWORDS.hash("not a password anybody has")
MIN_PASSWORD_LENGTH = 12
AUDIT_RESOURCE_LENGTH = 300  # audit_log.resource


async def record(uow: UnitOfWork, action: str, resource: str, fields) -> None:
    await repository.append_audit(
        uow.connection, uow.tenant, uow.call.principal, action, resource, sorted(fields), uow.now
    )


async def record_forwarded(uow: UnitOfWork, method: str, request, response) -> None:
    """A change made through the admin API's forwarding (proxy.py), once it succeeded: the method,
    the ids it named and the names of the fields it set."""
    resource = admin_api.audit_resource(request, response, AUDIT_RESOURCE_LENGTH)
    await record(uow, method, resource, admin_api.audit_fields(request))


def parse_id(value: str, field: str, reason: Reason) -> uuid.UUID:
    """An id this gateway issued; anything else is unknown (NOT_FOUND), like another tenant's."""
    try:
        return uuid.UUID(hex=value)
    except ValueError:
        raise NotFound(reason, f"no such {field.removesuffix('_id')}", field=field) from None


# --- terminals ---


@dataclass(frozen=True)
class NewTerminal:
    display_name: str
    store_id: str
    labels: dict[str, str]


async def create_terminal(uow: UnitOfWork, command: NewTerminal):
    if not command.store_id:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a terminal stands in a store", field="terminal.store_id"
        )
    row = await repository.insert_terminal(
        uow.connection,
        uow.tenant,
        uuid.uuid4(),
        command.display_name,
        command.store_id,
        command.labels,
        uow.now,
    )
    await record(
        uow, "CreateTerminal", f"terminals/{row['terminal_id'].hex}", ["display_name", "store_id", "labels"]
    )
    return row


async def get_terminal(uow: UnitOfWork, terminal_id: str):
    row = await repository.terminal(
        uow.connection, uow.tenant, parse_id(terminal_id, "terminal_id", Reason.TERMINAL_NOT_FOUND)
    )
    if row is None:
        raise NotFound(Reason.TERMINAL_NOT_FOUND, "no such terminal", field="terminal_id")
    return row


async def revoke_terminal(uow: UnitOfWork, terminal_id: str):
    parsed = parse_id(terminal_id, "terminal_id", Reason.TERMINAL_NOT_FOUND)
    row = await repository.revoke_terminal(uow.connection, uow.tenant, parsed, uow.now)
    if row is None:
        raise NotFound(Reason.TERMINAL_NOT_FOUND, "no such terminal", field="terminal_id")
    await record(uow, "RevokeTerminal", f"terminals/{parsed.hex}", ["state"])
    return row


# --- API keys ---


@dataclass(frozen=True)
class NewApiKey:
    display_name: str
    scopes: tuple[str, ...]
    terminal_id: str
    channel: int
    expire_at: datetime | None


@dataclass
class IssuedKey:
    row: object
    secret: str


async def create_api_key(uow: UnitOfWork, command: NewApiKey, *, rotated_from=None) -> IssuedKey:
    if not command.scopes:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a key needs at least one scope", field="api_key.scopes"
        )
    terminal_id = None
    if command.terminal_id:
        terminal = await get_terminal(uow, command.terminal_id)
        if terminal["state"] != "active":
            raise FailedPrecondition(
                Reason.PERMISSION_DENIED, "the terminal is revoked", field="api_key.terminal_id"
            )
        terminal_id = terminal["terminal_id"]
    if command.expire_at is not None and command.expire_at <= uow.now:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "expire_time is in the past", field="api_key.expire_time"
        )
    key = credentials.new_key()
    fields = {
        "display_name": command.display_name,
        "scopes": list(command.scopes),
        "terminal_id": terminal_id,
        "channel": command.channel,
        "expire_at": command.expire_at,
        "created_by": uow.call.principal,
        "rotated_from": rotated_from,
    }
    row = await repository.insert_key(uow.connection, uow.tenant, key, fields, uow.now)
    await record(
        uow,
        "CreateApiKey",
        f"api_keys/{key.api_key_id.hex}",
        ["display_name", "scopes", "terminal_id", "channel", "expire_time"],
    )
    return IssuedKey(row, key.secret)


async def get_api_key(uow: UnitOfWork, api_key_id: str):
    row = await repository.api_key(
        uow.connection, uow.tenant, parse_id(api_key_id, "api_key_id", Reason.API_KEY_NOT_FOUND)
    )
    if row is None:
        raise NotFound(Reason.API_KEY_NOT_FOUND, "no such API key", field="api_key_id")
    return row


async def revoke_api_key(uow: UnitOfWork, api_key_id: str):
    parsed = parse_id(api_key_id, "api_key_id", Reason.API_KEY_NOT_FOUND)
    row = await repository.revoke_key(uow.connection, uow.tenant, parsed, uow.now)
    if row is None:
        raise NotFound(Reason.API_KEY_NOT_FOUND, "no such API key", field="api_key_id")
    await record(uow, "RevokeApiKey", f"api_keys/{parsed.hex}", ["state"])
    return row


@dataclass(frozen=True)
class Rotation:
    api_key_id: str
    overlap: timedelta


async def rotate_api_key(uow: UnitOfWork, command: Rotation) -> tuple[IssuedKey, object]:
    old = await get_api_key(uow, command.api_key_id)
    if old["state"] != "active" or (old["expire_at"] is not None and old["expire_at"] <= uow.now):
        raise FailedPrecondition(
            Reason.PERMISSION_DENIED, "only an active key can be rotated", field="api_key_id"
        )
    successor = NewApiKey(
        old["display_name"],
        tuple(old["scopes"]),
        old["terminal_id"].hex if old["terminal_id"] else "",
        old["channel"],
        old["expire_at"],
    )
    issued = await create_api_key(uow, successor, rotated_from=old["api_key_id"])
    previous = await repository.expire_key(
        uow.connection, uow.tenant, old["api_key_id"], uow.now + command.overlap
    )
    await record(uow, "RotateApiKey", f"api_keys/{old['api_key_id'].hex}", ["expire_time"])
    return issued, previous


# --- admin users and their tokens ---


@dataclass(frozen=True)
class NewAdminUser:
    username: str
    password: str
    roles: tuple[str, ...]


async def create_admin_user(uow: UnitOfWork, command: NewAdminUser):
    if not command.username:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "a username is required", field="admin_user.username")
    if len(command.password) < MIN_PASSWORD_LENGTH:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT,
            f"a password has at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
        )
    if not command.roles:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "at least one role", field="admin_user.roles")
    password_hash = await asyncio.to_thread(PASSWORDS.hash, command.password)
    row = await repository.insert_admin_user(
        uow.connection,
        uow.tenant,
        uuid.uuid4(),
        command.username,
        password_hash,
        list(command.roles),
        uow.now,
    )
    if row is None:
        raise AlreadyExists(Reason.ADMIN_USER_TAKEN, "the username is taken", field="admin_user.username")
    await record(
        uow, "CreateAdminUser", f"admin_users/{row['admin_user_id'].hex}", ["username", "roles", "password"]
    )
    return row


class LoginThrottle:
    """Failed logins per (tenant, username) in Redis: after `limit` failures within `window`
    seconds, logins for that username are refused until the window ends."""

    def __init__(self, redis: Redis, limit: int, window: float) -> None:
        self.redis, self.limit, self.window = redis, limit, window

    def _key(self, tenant: str, username: str) -> str:
        # Hashed: a username can be an e-mail address, which has no place in Redis keys.
        return f"gateway:logins:{tenant}:{hashlib.sha256(username.encode()).hexdigest()[:32]}"

    async def check(self, tenant: str, username: str) -> None:
        try:
            failures = int(await self.redis.get(self._key(tenant, username)) or 0)
            wait = await self.redis.pttl(self._key(tenant, username)) if failures >= self.limit else 0
        except (RedisError, OSError):
            return
        if failures >= self.limit:
            raise ResourceExhausted(
                Reason.LOGIN_THROTTLED,
                "too many failed logins; try again later",
                retry_after_seconds=max(wait, 0) / 1000,
            )

    async def failed(self, tenant: str, username: str) -> None:
        key = self._key(tenant, username)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                # The window starts with the first failure (SET NX, not EXPIRE NX: Redis 6.2 has none).
                await pipe.set(key, 0, ex=int(self.window), nx=True).incr(key).execute()
        except (RedisError, OSError):
            pass

    async def succeeded(self, tenant: str, username: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self._key(tenant, username))


async def sign_in(
    uow: UnitOfWork, username: str, password: str, throttle: LoginThrottle, auth: Authenticator
) -> tuple[str, datetime]:
    await throttle.check(uow.tenant, username)
    row = await repository.admin_user_by_name(uow.connection, uow.tenant, username) if username else None
    try:
        await asyncio.to_thread(PASSWORDS.verify, row["password_hash"] if row else _DUMMY_HASH, password)
        valid = row is not None and row["disabled_at"] is None
    except (VerificationError, InvalidHashError):
        valid = False
    if not valid:
        await throttle.failed(uow.tenant, username)
        raise Unauthenticated(Reason.UNAUTHENTICATED, "unknown username or wrong password")
    await throttle.succeeded(uow.tenant, username)
    return auth.issue_token(uow.tenant, row["admin_user_id"].hex, list(row["roles"]), uow.now)


# --- tenant settings and the audit log ---


@dataclass(frozen=True)
class TenantSettings:
    default_program_id: str
    currency_code: str
    time_zone: str
    default_locale: str
    adjustment_limit_points: int = 0
    daily_adjustment_limit_points: int = 0


async def update_tenant_settings(uow: UnitOfWork, command: TenantSettings):
    if len(command.currency_code) != 3 or not command.currency_code.isupper():
        raise InvalidArgument(Reason.UNKNOWN_CURRENCY, "an ISO 4217 code", field="settings.currency_code")
    if not command.default_program_id:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a programme is required", field="settings.default_program_id"
        )
    for field, problem in (
        ("time_zone", tenant_settings.time_zone_problem(command.time_zone)),
        ("default_locale", tenant_settings.locale_problem(command.default_locale)),
    ):
        if problem:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, problem, field=f"settings.{field}")
    adjustments.check_limits(command.adjustment_limit_points, command.daily_adjustment_limit_points)
    values = asdict(command)
    row = await repository.put_tenant_settings(uow.connection, uow.tenant, values, uow.now)
    await record(uow, "UpdateTenantSettings", "settings", values)
    # The services that keep a copy (segmentation, promotion, notification) learn of every change.
    uow.record(
        events_pb2.TenantSettingsChanged(settings=encode_settings(row), version=row["version"]),
        key=uow.tenant,
    )
    return row


async def get_tenant_settings(uow: UnitOfWork):
    row = await repository.tenant_settings(uow.connection, uow.tenant)
    if row is None:
        raise FailedPrecondition(Reason.TENANT_NOT_PROVISIONED, "the tenant has no settings yet")
    return row


async def verify_audit_log(uow: UnitOfWork) -> audit.Verification:
    async with uow.connection.transaction(readonly=True):
        check = audit.ChainCheck()
        async for row in repository.audit_chain(uow.connection, uow.tenant):
            if not check.add(repository.audit_entry(row), row["hash"]):
                break
    return check.result()
