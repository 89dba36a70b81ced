"""The operator commands (Typer) against a running gateway: a terminal, a key shown once, listed,
revoked; a bad token is told UNAUTHENTICATED; verify-audit exits 0 on an intact log."""

import asyncio
import re

from typer.testing import CliRunner

from loyalty_gateway.__main__ import app


async def invoke(*args, env=None):
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_terminals_and_keys_from_the_command_line(gateway, tenant):
    env = {"GATEWAY_ADMIN_TARGET": f"127.0.0.1:{gateway.server.port}", "GATEWAY_ADMIN_TOKEN": tenant.token}
    created = await invoke("terminal-create", "--store", "s9", "--name", "till 9", env=env)
    assert created.exit_code == 0, created.output
    terminal_id = created.output.strip()
    key = await invoke(
        "key-create", "--name", "till 9", "--scope", "checkout", "--terminal", terminal_id, env=env
    )
    assert key.exit_code == 0, key.output
    key_id = re.search(r"key ([0-9a-f]{32})", key.output).group(1)
    assert re.search(r"lk_[0-9a-f]{32}_\S+", key.output)
    listed = await invoke("key-list", env=env)
    assert key_id in listed.output and "lk_" + key_id not in listed.output
    revoked = await invoke("key-revoke", key_id, env=env)
    assert revoked.exit_code == 0
    assert key_id not in (await invoke("key-list", env=env)).output
    bad = await invoke("key-list", env=env | {"GATEWAY_ADMIN_TOKEN": "nope"})
    assert bad.exit_code == 1 and "UNAUTHENTICATED" in bad.output
    unknown = await invoke("key-create", "--name", "x", "--scope", "everything", env=env)
    assert unknown.exit_code == 2


async def test_verify_audit_from_the_command_line(gateway, tenant):
    env = {"GATEWAY_DATABASE_URL": gateway.server.settings.database_url}
    result = await invoke("verify-audit", "--tenant", tenant.tenant_id, env=env)
    assert result.exit_code == 0 and "intact" in result.output
