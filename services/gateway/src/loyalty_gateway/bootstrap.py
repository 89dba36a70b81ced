"""Work done outside any call: the first admin user of a tenant (nobody can call CreateAdminUser
before one exists) and the audit log's verify command. Run from the command line (__main__.py)."""

from loyalty_gateway import admin
from loyalty_gateway.domain.audit import Verification
from loyalty_gateway.repository import SCHEMA
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.db import Database
from loyalty_runtime.uow import UnitsOfWork


async def _in_tenant(database_url: str, tenant: str, principal: str, work):
    database = Database(database_url, pool_size=1)
    await database.open()
    bound = bind_call(CallContext(tenant, principal))
    try:
        return await work(UnitsOfWork(database, SCHEMA))
    finally:
        unbind_call(bound)
        await database.close()


async def create_admin_user(database_url: str, tenant: str, username: str, password: str, roles=("admin",)):
    async def create(units: UnitsOfWork):
        async with units.change() as uow:
            return await admin.create_admin_user(uow, admin.NewAdminUser(username, password, tuple(roles)))

    return await _in_tenant(database_url, tenant, "bootstrap", create)


async def verify_audit_log(database_url: str, tenant: str) -> Verification:
    async def verify(units: UnitsOfWork):
        async with units.read() as uow:
            return await admin.verify_audit_log(uow)

    return await _in_tenant(database_url, tenant, "verify", verify)
