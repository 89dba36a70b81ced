"""AdminService: decodes each request, checks the caller's role, runs one use case of admin.py in a
unit of work (idempotent for changes) and encodes the answer."""

import uuid
from datetime import timedelta

from loyalty.common.v1 import basket_pb2
from loyalty.gateway.v1 import admin_pb2 as pb, admin_service_pb2 as api
from loyalty_gateway import admin, repository
from loyalty_gateway.adjustments import Adjustments
from loyalty_gateway.auth import Authenticator, require
from loyalty_gateway.domain import credentials
from loyalty_gateway.tenants import encode_settings
from loyalty_runtime import paging
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitsOfWork

SCOPES = {
    pb.API_SCOPE_CHECKOUT: credentials.CHECKOUT,
    pb.API_SCOPE_CUSTOMER_READ: credentials.CUSTOMER_READ,
    pb.API_SCOPE_CUSTOMER_WRITE: credentials.CUSTOMER_WRITE,
    pb.API_SCOPE_ADMIN: credentials.ADMIN,
}
SCOPE_VALUES = {name: value for value, name in SCOPES.items()}
ROLES = {
    pb.ADMIN_ROLE_ADMIN: "admin",
    pb.ADMIN_ROLE_MARKETER: "marketer",
    pb.ADMIN_ROLE_SUPPORT: "support",
    pb.ADMIN_ROLE_ANALYST: "analyst",
    pb.ADMIN_ROLE_AUDITOR: "auditor",
}
ROLE_VALUES = {name: value for value, name in ROLES.items()}
DEFAULT_PAGE, MAX_PAGE = 100, 1000
DEFAULT_OVERLAP, MAX_OVERLAP = timedelta(hours=24), timedelta(days=30)


def encode_terminal(row) -> pb.Terminal:
    return pb.Terminal(
        terminal_id=row["terminal_id"].hex,
        display_name=row["display_name"],
        store_id=row["store_id"],
        state=pb.TERMINAL_STATE_ACTIVE if row["state"] == "active" else pb.TERMINAL_STATE_REVOKED,
        labels=row["labels"],
        create_time=timestamp(row["created_at"]),
        revoke_time=timestamp(row["revoked_at"]),
    )


def encode_key(row, now) -> pb.ApiKey:
    if row["state"] == "revoked":
        state = pb.API_KEY_STATE_REVOKED
    elif row["expire_at"] is not None and row["expire_at"] <= now:
        state = pb.API_KEY_STATE_EXPIRED
    else:
        state = pb.API_KEY_STATE_ACTIVE
    return pb.ApiKey(
        api_key_id=row["api_key_id"].hex,
        display_name=row["display_name"],
        scopes=[SCOPE_VALUES[s] for s in row["scopes"]],
        terminal_id=row["terminal_id"].hex if row["terminal_id"] else "",
        key_prefix=row["key_prefix"],
        state=state,
        expire_time=timestamp(row["expire_at"]),
        create_time=timestamp(row["created_at"]),
        revoke_time=timestamp(row["revoked_at"]),
        created_by=row["created_by"],
        channel=row["channel"],
        rotated_from=row["rotated_from"].hex if row["rotated_from"] else "",
    )


def encode_user(row) -> pb.AdminUser:
    return pb.AdminUser(
        admin_user_id=row["admin_user_id"].hex,
        username=row["username"],
        roles=[ROLE_VALUES[r] for r in row["roles"]],
        create_time=timestamp(row["created_at"]),
        disable_time=timestamp(row["disabled_at"]),
    )


def encode_audit(row) -> pb.AuditRecord:
    return pb.AuditRecord(
        sequence=row["sequence"],
        principal=row["principal"],
        action=row["action"],
        resource=row["resource"],
        fields=row["fields"],
        create_time=timestamp(row["created_at"]),
        hash=row["hash"],
    )


def _after(token: str) -> uuid.UUID | None:
    last = paging.decode_token(token)
    if not last:
        return None
    try:
        return uuid.UUID(hex=last)
    except ValueError:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
        ) from None


def _new_key(request: api.CreateApiKeyRequest) -> admin.NewApiKey:
    key = request.api_key
    if any(s not in SCOPES for s in key.scopes):
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "an unknown scope", field="api_key.scopes")
    return admin.NewApiKey(
        display_name=key.display_name,
        scopes=tuple(sorted({SCOPES[s] for s in key.scopes})),
        terminal_id=key.terminal_id,
        # A till's key sells in its store; a key without a terminal serves a web or app backend.
        channel=key.channel or (basket_pb2.CHANNEL_STORE if key.terminal_id else basket_pb2.CHANNEL_WEB),
        expire_at=moment(key, "expire_time"),
    )


class AdminServicer:
    def __init__(
        self,
        units: UnitsOfWork,
        auth: Authenticator,
        throttle: admin.LoginThrottle,
        adjustments: Adjustments,
    ) -> None:
        self.units = units
        self.auth = auth
        self.throttle = throttle
        self.adjustments = adjustments

    # --- terminals ---

    async def CreateTerminal(self, request, context):
        require("CreateTerminal")
        t = request.terminal
        command = admin.NewTerminal(t.display_name, t.store_id, dict(t.labels))
        return await self.units.idempotent(
            request,
            admin.create_terminal,
            command,
            lambda row: api.CreateTerminalResponse(terminal=encode_terminal(row)),
        )

    async def GetTerminal(self, request, context):
        require("GetTerminal")
        async with self.units.read() as uow:
            row = await admin.get_terminal(uow, request.terminal_id)
        return api.GetTerminalResponse(terminal=encode_terminal(row))

    async def ListTerminals(self, request, context):
        require("ListTerminals")
        size = paging.page_size(request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        async with self.units.read() as uow:
            rows = await repository.terminals(
                uow.connection,
                uow.tenant,
                request.store_id,
                request.show_revoked,
                _after(request.page_token),
                size + 1,
            )
        more = len(rows) > size
        rows = rows[:size]
        token = paging.encode_token(rows[-1]["terminal_id"].hex) if more else ""
        return api.ListTerminalsResponse(terminals=[encode_terminal(r) for r in rows], next_page_token=token)

    async def RevokeTerminal(self, request, context):
        require("RevokeTerminal")
        response = await self.units.idempotent(
            request,
            admin.revoke_terminal,
            request.terminal_id,
            lambda row: api.RevokeTerminalResponse(terminal=encode_terminal(row)),
        )
        self.auth.forget_all()  # its keys are revoked too; which ones this replica knows is cheaper to forget
        return response

    # --- API keys ---

    async def CreateApiKey(self, request, context):
        require("CreateApiKey")
        issued: list[admin.IssuedKey] = []

        async def create(uow, command):
            issued.append(await admin.create_api_key(uow, command))
            return issued[-1].row

        response = await self.units.idempotent(
            request,
            create,
            _new_key(request),
            lambda row: api.CreateApiKeyResponse(api_key=encode_key(row, row["created_at"])),
        )
        # The stored answer has no secret: a replay answers without it (the key it created is
        # another than the one this call's rolled-back attempt made).
        if issued and issued[-1].row["api_key_id"].hex == response.api_key.api_key_id:
            response.secret = issued[-1].secret
        return response

    async def GetApiKey(self, request, context):
        require("GetApiKey")
        async with self.units.read() as uow:
            row = await admin.get_api_key(uow, request.api_key_id)
            return api.GetApiKeyResponse(api_key=encode_key(row, uow.now))

    async def ListApiKeys(self, request, context):
        require("ListApiKeys")
        size = paging.page_size(request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        async with self.units.read() as uow:
            terminal = (
                admin.parse_id(request.terminal_id, "terminal_id", Reason.TERMINAL_NOT_FOUND)
                if request.terminal_id
                else None
            )
            rows = await repository.api_keys(
                uow.connection,
                uow.tenant,
                terminal,
                request.show_inactive,
                _after(request.page_token),
                size + 1,
                uow.now,
            )
            now = uow.now
        more = len(rows) > size
        rows = rows[:size]
        token = paging.encode_token(rows[-1]["api_key_id"].hex) if more else ""
        return api.ListApiKeysResponse(api_keys=[encode_key(r, now) for r in rows], next_page_token=token)

    async def RevokeApiKey(self, request, context):
        require("RevokeApiKey")
        response = await self.units.idempotent(
            request,
            admin.revoke_api_key,
            request.api_key_id,
            lambda row: api.RevokeApiKeyResponse(api_key=encode_key(row, row["revoked_at"])),
        )
        self.auth.forget_all()
        return response

    async def RotateApiKey(self, request, context):
        require("RotateApiKey")
        overlap = request.overlap.ToTimedelta() if request.HasField("overlap") else DEFAULT_OVERLAP
        if not timedelta(0) <= overlap <= MAX_OVERLAP:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "an overlap of 0 s to 30 days", field="overlap")
        issued: list[admin.IssuedKey] = []

        async def rotate(uow, command):
            new, previous = await admin.rotate_api_key(uow, command)
            issued.append(new)
            return new.row, previous, uow.now

        def encode(result):
            new, previous, now = result
            return api.RotateApiKeyResponse(
                api_key=encode_key(new, now), previous_api_key=encode_key(previous, now)
            )

        response = await self.units.idempotent(
            request, rotate, admin.Rotation(request.api_key_id, overlap), encode
        )
        if issued and issued[-1].row["api_key_id"].hex == response.api_key.api_key_id:
            response.secret = issued[-1].secret
        self.auth.forget_all()
        return response

    # --- admin users ---

    async def CreateAdminToken(self, request, context):
        require("CreateAdminToken")
        async with self.units.read() as uow:
            token, expires = await admin.sign_in(
                uow, request.username, request.password, self.throttle, self.auth
            )
        return api.CreateAdminTokenResponse(token=token, expire_time=timestamp(expires))

    async def CreateAdminUser(self, request, context):
        require("CreateAdminUser")
        user = request.admin_user
        if any(r not in ROLES for r in user.roles):
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "an unknown role", field="admin_user.roles")
        command = admin.NewAdminUser(
            user.username, request.password, tuple(sorted({ROLES[r] for r in user.roles}))
        )
        return await self.units.idempotent(
            request,
            admin.create_admin_user,
            command,
            lambda row: api.CreateAdminUserResponse(admin_user=encode_user(row)),
        )

    # --- tenant settings and audit ---

    async def GetTenantSettings(self, request, context):
        require("GetTenantSettings")
        async with self.units.read() as uow:
            row = await admin.get_tenant_settings(uow)
        return api.GetTenantSettingsResponse(settings=encode_settings(row))

    async def UpdateTenantSettings(self, request, context):
        require("UpdateTenantSettings")
        s = request.settings
        command = admin.TenantSettings(
            s.default_program_id,
            s.currency_code,
            s.time_zone,
            s.default_locale,
            s.adjustment_limit_points,
            s.daily_adjustment_limit_points,
        )
        return await self.units.idempotent(
            request,
            admin.update_tenant_settings,
            command,
            lambda row: api.UpdateTenantSettingsResponse(settings=encode_settings(row)),
        )

    async def ListAuditRecords(self, request, context):
        require("ListAuditRecords")
        size = paging.page_size(request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        last = paging.decode_token(request.page_token)
        if last and not last.isdigit():
            raise InvalidArgument(
                Reason.INVALID_ARGUMENT, "page_token is not one this service issued", field="page_token"
            )
        async with self.units.read() as uow:
            rows = await repository.audit_records(
                uow.connection, uow.tenant, int(last) if last else None, size + 1
            )
        more = len(rows) > size
        rows = rows[:size]
        token = paging.encode_token(str(rows[-1]["sequence"])) if more else ""
        return api.ListAuditRecordsResponse(records=[encode_audit(r) for r in rows], next_page_token=token)

    async def VerifyAuditLog(self, request, context):
        require("VerifyAuditLog")
        async with self.units.read() as uow:
            result = await admin.verify_audit_log(uow)
        return api.VerifyAuditLogResponse(
            intact=result.intact, records_checked=result.checked, first_broken_sequence=result.first_broken
        )

    # --- manual point adjustments ---

    async def AdjustPoints(self, request, context):
        require("AdjustPoints")
        return await self.adjustments.adjust(request)
