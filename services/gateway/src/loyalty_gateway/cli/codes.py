"""`loyalty-admin codes generate|export`: bulk generation as promotion's background job, its progress
polled into a progress bar, and a campaign's codes exported as CSV page by page (a file or stdout)."""

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeElapsedColumn

from loyalty.promotion.v1 import promotion_service_pb2 as api, voucher_pb2
from loyalty_gateway.cli.campaigns import campaign_id_of
from loyalty_gateway.cli.connection import Admin, console, run

app = typer.Typer(no_args_is_help=True, help="Voucher codes: bulk generation and export.")
Campaign = Annotated[str, typer.Option("--campaign", "-c", help="campaign id or manifest key")]
POLL_SECONDS = 0.25
EXPORT_PAGE = 10_000


def _progress() -> Progress:
    return Progress(
        "{task.description}",
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def _follow(admin: Admin, batch: voucher_pb2.VoucherBatch) -> voucher_pb2.VoucherBatch:
    """Polls the batch until it is done, moving the bar with its created count."""
    with _progress() as progress:
        task = progress.add_task("generating", total=batch.requested_count, completed=batch.created_count)
        while batch.state == voucher_pb2.VOUCHER_BATCH_STATE_RUNNING:
            await asyncio.sleep(POLL_SECONDS)
            request = api.GetVoucherBatchRequest(batch_id=batch.batch_id)
            batch = (await admin.call(admin.promotion.GetVoucherBatch, request)).batch
            progress.update(task, completed=batch.created_count)
        progress.update(task, completed=batch.created_count)
    return batch


@app.command()
def generate(
    ctx: typer.Context,
    campaign: Campaign,
    count: Annotated[int, typer.Option(min=1, max=1_000_000, help="codes to generate")],
    pattern: Annotated[str, typer.Option(help="e.g. SUMMER-####-####; default: the campaign's")] = "",
    charset: Annotated[str, typer.Option(help="characters for '#'; default without 0/O/1/I")] = "",
    max_redemptions: Annotated[int, typer.Option(min=0, help="uses per code; 0 = 1")] = 0,
) -> None:
    """Generate unique codes in a VOUCHER campaign, with a progress bar until the job is done."""

    async def work(admin: Admin) -> voucher_pb2.VoucherBatch:
        request = api.GenerateVouchersRequest(
            idempotency_key=uuid.uuid4().hex,
            campaign_id=await campaign_id_of(admin, campaign),
            count=count,
            max_redemptions=max_redemptions,
        )
        if pattern or charset:
            request.pattern.pattern, request.pattern.charset = pattern, charset
        started = (await admin.call(admin.promotion.GenerateVouchers, request)).batch
        return await _follow(admin, started)

    batch = run(ctx.obj, work)
    if batch.state != voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED:
        console.print(f"[red]batch {batch.batch_id} failed: {batch.error_message}[/red]")
        raise typer.Exit(1)
    console.print(f"batch {batch.batch_id}: {batch.created_count} codes created")


@app.command()
def export(
    ctx: typer.Context,
    campaign: Campaign,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="a file; default stdout")] = None,
) -> None:
    """Export a campaign's codes as CSV (header first), written page by page as they come."""

    async def work(admin: Admin) -> int:
        campaign_id = await campaign_id_of(admin, campaign)
        rows = 0
        sink = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            token = ""
            while True:
                request = api.ExportVouchersRequest(
                    campaign_id=campaign_id, page_size=EXPORT_PAGE, page_token=token
                )
                page = await admin.call(admin.promotion.ExportVouchers, request)
                sink.write(page.csv)
                rows += page.row_count
                token = page.next_page_token
                if not token:
                    return rows
        finally:
            if output:
                sink.close()
            else:
                sink.flush()

    rows = run(ctx.obj, work)
    console.print(f"{rows} codes exported{f' to {output}' if output else ''}")
