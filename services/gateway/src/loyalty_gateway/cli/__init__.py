"""`loyalty-admin`: the admin CLI over the gateway's admin API (gRPC, with an admin user's token or an
API key with the admin scope). Every command goes through the gateway, so the roles of
domain/admin_api.py and the audit log apply to it as to any other client.

    loyalty-admin login --tenant T --username U            prints a token for LOYALTY_ADMIN_TOKEN
    loyalty-admin campaigns diff|apply -f campaigns/       campaigns as code (docs/campaigns-as-code.md)
    loyalty-admin codes generate|export --campaign KEY     bulk codes with a progress bar; CSV
    loyalty-admin segments export csv|parquet SEGMENT -o F
    loyalty-admin terminals create|list|revoke
    loyalty-admin keys create|list|rotate|revoke
"""

import os
from typing import Annotated

import typer

from loyalty.gateway.v1 import admin_service_pb2 as api
from loyalty_gateway.cli import access, campaigns, codes, segments
from loyalty_gateway.cli.connection import Admin, Connection, output, run

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Administer a loyalty tenant through its gateway."
)
app.add_typer(campaigns.app, name="campaigns")
app.add_typer(codes.app, name="codes")
app.add_typer(segments.app, name="segments")
app.add_typer(access.terminals, name="terminals")
app.add_typer(access.keys, name="keys")


@app.callback()
def connect(
    ctx: typer.Context,
    target: Annotated[str, typer.Option(envvar="LOYALTY_ADMIN_TARGET", help="the gateway's gRPC address")] = (
        "localhost:50051"
    ),
    token: Annotated[
        str,
        typer.Option(
            envvar="LOYALTY_ADMIN_TOKEN", help="an admin token or admin API key", show_default=False
        ),
    ] = "",
    tls: Annotated[bool, typer.Option(envvar="LOYALTY_ADMIN_TLS", help="TLS to the gateway")] = False,
    timeout: Annotated[float, typer.Option(help="seconds per call")] = 30.0,
) -> None:
    ctx.obj = Connection(target, token, tls, timeout)


@app.command()
def login(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="the tenant's id")],
    username: Annotated[str, typer.Option()],
) -> None:
    """Sign in as an admin user (password from LOYALTY_ADMIN_PASSWORD or asked); prints the token."""
    password = os.environ.get("LOYALTY_ADMIN_PASSWORD") or typer.prompt("password", hide_input=True, err=True)

    async def work(admin: Admin) -> str:
        request = api.CreateAdminTokenRequest(username=username, password=password)
        answer = await admin.gateway.CreateAdminToken(
            request, metadata=(("x-loyalty-tenant", tenant),), timeout=ctx.obj.timeout
        )
        return answer.token

    output.print(run(ctx.obj, work), soft_wrap=True)


def main() -> None:
    app()
