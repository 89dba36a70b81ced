"""`loyalty-admin terminals ...` and `loyalty-admin keys ...`: the gateway's tills and API keys. A key's
secret is printed once, on stdout, when it is made (create, rotate); lists never show it."""

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import typer
from google.protobuf import duration_pb2
from rich.table import Column, Table

from loyalty.common.v1 import basket_pb2
from loyalty.gateway.v1 import admin_pb2, admin_service_pb2 as api
from loyalty.gateway.v1.admin_service_pb2_grpc import AdminServiceStub
from loyalty_gateway.cli.connection import Admin, console, output, print_table, run

terminals = typer.Typer(no_args_is_help=True, help="Tills: register, list, revoke.")
keys = typer.Typer(no_args_is_help=True, help="API keys: create, list, rotate, revoke.")
SCOPES = {
    "checkout": admin_pb2.API_SCOPE_CHECKOUT,
    "customer-read": admin_pb2.API_SCOPE_CUSTOMER_READ,
    "customer-write": admin_pb2.API_SCOPE_CUSTOMER_WRITE,
    "admin": admin_pb2.API_SCOPE_ADMIN,
}
CHANNELS = {
    "": basket_pb2.CHANNEL_UNSPECIFIED,
    "store": basket_pb2.CHANNEL_STORE,
    "app": basket_pb2.CHANNEL_APP,
}
PAGE = 1000


def _enum_name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def _call(ctx: typer.Context, method: Callable[[AdminServiceStub], Any], request):
    async def work(admin: Admin):
        return await admin.call(method(admin.gateway), request)

    return run(ctx.obj, work)


@terminals.command("create")
def terminal_create(
    ctx: typer.Context,
    store: Annotated[str, typer.Option(help="the store it stands in")],
    name: Annotated[str, typer.Option(help="a name people recognise")],
) -> None:
    """Register a till; prints its id."""
    request = api.CreateTerminalRequest(
        idempotency_key=uuid.uuid4().hex, terminal={"display_name": name, "store_id": store}
    )
    output.print(_call(ctx, lambda gateway: gateway.CreateTerminal, request).terminal.terminal_id)


@terminals.command("list")
def terminal_list(
    ctx: typer.Context,
    store: Annotated[str, typer.Option(help="only this store's")] = "",
    revoked: Annotated[bool, typer.Option("--revoked", help="include revoked ones")] = False,
) -> None:
    """The tenant's tills."""
    request = api.ListTerminalsRequest(page_size=PAGE, store_id=store, show_revoked=revoked)
    table = Table(Column("id", no_wrap=True, min_width=32), "name", "store", "state")
    for terminal in _call(ctx, lambda gateway: gateway.ListTerminals, request).terminals:
        state = _enum_name(admin_pb2.TerminalState, terminal.state, "TERMINAL_STATE_")
        table.add_row(terminal.terminal_id, terminal.display_name, terminal.store_id, state)
    print_table(table)


@terminals.command("revoke")
def terminal_revoke(
    ctx: typer.Context, terminal_id: str, reason: Annotated[str, typer.Option(help="for the audit log")] = ""
) -> None:
    """Revoke a till and every key bound to it, at once and for good."""
    request = api.RevokeTerminalRequest(
        idempotency_key=uuid.uuid4().hex, terminal_id=terminal_id, reason=reason
    )
    _call(ctx, lambda gateway: gateway.RevokeTerminal, request)
    console.print(f"revoked terminal {terminal_id} and its keys")


def _print_secret(key: admin_pb2.ApiKey, secret: str) -> None:
    console.print(f"key {key.api_key_id}; its secret, shown only now:")
    output.print(secret, soft_wrap=True)


@keys.command("create")
def key_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="a name people recognise")],
    scope: Annotated[list[str], typer.Option(help=", ".join(SCOPES))],
    terminal: Annotated[str, typer.Option(help="the till the key acts as")] = "",
    channel: Annotated[str, typer.Option(help="store or app; default from the terminal")] = "",
) -> None:
    """Create an API key; its secret is printed once."""
    unknown = [s for s in scope if s not in SCOPES] + ([channel] if channel not in CHANNELS else [])
    if unknown:
        console.print(f"[red]unknown scope or channel[/red]: {', '.join(unknown)}")
        raise typer.Exit(2)
    key = admin_pb2.ApiKey(
        display_name=name, scopes=[SCOPES[s] for s in scope], terminal_id=terminal, channel=CHANNELS[channel]
    )
    answer = _call(
        ctx,
        lambda gateway: gateway.CreateApiKey,
        api.CreateApiKeyRequest(idempotency_key=uuid.uuid4().hex, api_key=key),
    )
    _print_secret(answer.api_key, answer.secret)


@keys.command("list")
def key_list(
    ctx: typer.Context,
    terminal: Annotated[str, typer.Option(help="only keys of this till")] = "",
    inactive: Annotated[bool, typer.Option("--inactive", help="include revoked and expired keys")] = False,
) -> None:
    """The tenant's API keys (never their secrets)."""
    request = api.ListApiKeysRequest(page_size=PAGE, terminal_id=terminal, show_inactive=inactive)
    table = Table(Column("id", no_wrap=True, min_width=32), "name", "prefix", "scopes", "terminal", "state")
    for key in _call(ctx, lambda gateway: gateway.ListApiKeys, request).api_keys:
        scopes = ", ".join(_enum_name(admin_pb2.ApiScope, s, "API_SCOPE_") for s in key.scopes)
        state = _enum_name(admin_pb2.ApiKeyState, key.state, "API_KEY_STATE_")
        table.add_row(key.api_key_id, key.display_name, key.key_prefix, scopes, key.terminal_id, state)
    print_table(table)


@keys.command("rotate")
def key_rotate(
    ctx: typer.Context,
    api_key_id: str,
    overlap_hours: Annotated[int, typer.Option(min=0, max=720, help="how long the old key still works")] = 24,
) -> None:
    """Create the key's successor (same scopes, terminal, channel); the old one expires after the overlap."""
    request = api.RotateApiKeyRequest(
        idempotency_key=uuid.uuid4().hex,
        api_key_id=api_key_id,
        overlap=duration_pb2.Duration(seconds=overlap_hours * 3600),
    )
    answer = _call(ctx, lambda gateway: gateway.RotateApiKey, request)
    _print_secret(answer.api_key, answer.secret)
    console.print(f"the old key {api_key_id} expires {answer.previous_api_key.expire_time.ToJsonString()}")


@keys.command("revoke")
def key_revoke(
    ctx: typer.Context, api_key_id: str, reason: Annotated[str, typer.Option(help="for the audit log")] = ""
) -> None:
    """Revoke an API key at once and for good."""
    request = api.RevokeApiKeyRequest(idempotency_key=uuid.uuid4().hex, api_key_id=api_key_id, reason=reason)
    _call(ctx, lambda gateway: gateway.RevokeApiKey, request)
    console.print(f"revoked {api_key_id}")
