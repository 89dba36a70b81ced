"""The gateway's own operator commands (Typer): verify-audit exits 0 on an intact log. The admin CLI
over the API (`loyalty-admin`) is tested in test_gateway_cli_admin.py."""

import asyncio

from typer.testing import CliRunner

from loyalty_gateway.__main__ import app


async def invoke(*args, env=None):
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_verify_audit_from_the_command_line(gateway, tenant):
    env = {"GATEWAY_DATABASE_URL": gateway.server.settings.database_url}
    result = await invoke("verify-audit", "--tenant", tenant.tenant_id, env=env)
    assert result.exit_code == 0 and "intact" in result.output
