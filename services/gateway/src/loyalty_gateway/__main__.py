"""`loyalty-gateway serve|migrate` (the runtime's), plus the gateway's own commands:

loyalty-gateway create-admin --tenant T --username U   the tenant's first admin user
                                                       (password from GATEWAY_ADMIN_PASSWORD)
loyalty-gateway verify-audit --tenant T                recompute the audit log's hash chain
"""

import asyncio
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from loyalty_gateway.service import DEFINITION
from loyalty_runtime.cli import run_service_cli

app = typer.Typer(add_completion=False, help="The gateway's operator commands.")
console = Console()


@app.command("create-admin")
def create_admin(tenant: str = typer.Option(...), username: str = typer.Option(...)) -> None:
    """Create a tenant's admin user (role admin); its password comes from GATEWAY_ADMIN_PASSWORD."""
    from loyalty_gateway import bootstrap

    password = os.environ.get("GATEWAY_ADMIN_PASSWORD") or typer.prompt("password", hide_input=True)
    settings = DEFINITION.settings()
    row = asyncio.run(bootstrap.create_admin_user(settings.database_url, tenant, username, password))
    console.print(f"admin user [bold]{row['admin_user_id'].hex}[/bold] created in tenant {tenant}")


@app.command("verify-audit")
def verify_audit(tenant: str = typer.Option(...)) -> None:
    """Recompute the tenant's audit chain; exit status 1 when a record was changed."""
    from loyalty_gateway import bootstrap

    result = asyncio.run(bootstrap.verify_audit_log(DEFINITION.settings().database_url, tenant))
    if result.intact:
        console.print(f"[green]intact[/green]: {result.checked} records")
        return
    console.print(f"[red]broken[/red] at record {result.first_broken} ({result.checked} checked)")
    raise typer.Exit(1)


SCOPES = {"checkout": 1, "customer-read": 2, "customer-write": 3, "admin": 4}


def _admin_call(method: str, request):
    """One AdminService call with the operator's token; errors printed with their reason."""
    import grpc
    from grpc_status import rpc_status

    from loyalty.gateway.v1 import admin_service_pb2_grpc
    from loyalty_runtime.errors import error_info

    target = os.environ.get("GATEWAY_ADMIN_TARGET", "localhost:50051")
    metadata = (("authorization", f"Bearer {os.environ.get('GATEWAY_ADMIN_TOKEN', '')}"),)

    async def run():
        async with grpc.aio.insecure_channel(target) as channel:
            return await getattr(admin_service_pb2_grpc.AdminServiceStub(channel), method)(
                request, metadata=metadata, timeout=10
            )

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)
        info = error_info(status) if status else None
        console.print(f"[red]{error.code().name}[/red] {info.reason if info else ''}: {error.details()}")
        raise typer.Exit(1) from None


@app.command("terminal-create")
def terminal_create(store: str = typer.Option(...), name: str = typer.Option(...)) -> None:
    """Register a till in a store."""
    import uuid

    from loyalty.gateway.v1 import admin_service_pb2 as api

    request = api.CreateTerminalRequest(
        idempotency_key=uuid.uuid4().hex, terminal={"display_name": name, "store_id": store}
    )
    console.print(_admin_call("CreateTerminal", request).terminal.terminal_id)


@app.command("key-create")
def key_create(
    name: Annotated[str, typer.Option()],
    scope: Annotated[list[str], typer.Option(help="checkout, customer-read, customer-write, admin")],
    terminal: Annotated[str, typer.Option(help="the till the key acts as")] = "",
) -> None:
    """Create an API key; its secret is printed once."""
    import uuid

    from loyalty.gateway.v1 import admin_service_pb2 as api

    unknown = [s for s in scope if s not in SCOPES]
    if unknown:
        console.print(f"[red]unknown scope[/red]: {', '.join(unknown)}")
        raise typer.Exit(2)
    request = api.CreateApiKeyRequest(
        idempotency_key=uuid.uuid4().hex,
        api_key={"display_name": name, "scopes": [SCOPES[s] for s in scope], "terminal_id": terminal},
    )
    answer = _admin_call("CreateApiKey", request)
    console.print(f"key {answer.api_key.api_key_id}; its secret, shown only now:")
    console.print(answer.secret, highlight=False, soft_wrap=True)


@app.command("key-list")
def key_list() -> None:
    """The tenant's active API keys."""
    from rich.table import Column, Table

    from loyalty.gateway.v1 import admin_pb2, admin_service_pb2 as api

    table = Table(Column("id", no_wrap=True, min_width=32), "name", "prefix", "scopes", "terminal", "state")
    for key in _admin_call("ListApiKeys", api.ListApiKeysRequest(page_size=1000)).api_keys:
        scopes = ", ".join(admin_pb2.ApiScope.Name(s).removeprefix("API_SCOPE_").lower() for s in key.scopes)
        state = admin_pb2.ApiKeyState.Name(key.state).removeprefix("API_KEY_STATE_").lower()
        table.add_row(key.api_key_id, key.display_name, key.key_prefix, scopes, key.terminal_id, state)
    console.print(table)


@app.command("key-revoke")
def key_revoke(api_key_id: str) -> None:
    """Revoke an API key at once and for good."""
    import uuid

    from loyalty.gateway.v1 import admin_service_pb2 as api

    request = api.RevokeApiKeyRequest(idempotency_key=uuid.uuid4().hex, api_key_id=api_key_id)
    _admin_call("RevokeApiKey", request)
    console.print(f"revoked {api_key_id}")


COMMANDS = (
    "create-admin",
    "verify-audit",
    "terminal-create",
    "key-create",
    "key-list",
    "key-revoke",
    "--help",
)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        app()
    else:
        run_service_cli(DEFINITION)


if __name__ == "__main__":
    main()
