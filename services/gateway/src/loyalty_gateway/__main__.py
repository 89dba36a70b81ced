"""`loyalty-gateway serve|migrate` (the runtime's), plus the gateway's own commands:

loyalty-gateway create-admin --tenant T --username U   the tenant's first admin user
                                                       (password from GATEWAY_ADMIN_PASSWORD)
loyalty-gateway verify-audit --tenant T                recompute the audit log's hash chain

Everything else an operator does goes through the gateway's API: `loyalty-admin` (loyalty_gateway.cli).
"""

import asyncio
import os
import sys

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


COMMANDS = (
    "create-admin",
    "verify-audit",
    "--help",
)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        app()
    else:
        run_service_cli(DEFINITION)


if __name__ == "__main__":
    main()
