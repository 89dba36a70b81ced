"""`loyalty-admin segments export csv|parquet`: a segment's members as segmentation streams the file,
piece by piece, into a file (or stdout for CSV)."""

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from loyalty.segmentation.v1 import segmentation_service_pb2 as api
from loyalty_gateway.cli.connection import Admin, console, run

app = typer.Typer(no_args_is_help=True, help="Segments: member exports.")
EXPORT_SECONDS = 600.0


class Format(StrEnum):
    csv = "csv"
    parquet = "parquet"


FORMATS = {Format.csv: api.EXPORT_FORMAT_CSV, Format.parquet: api.EXPORT_FORMAT_PARQUET}


@app.command()
def export(
    ctx: typer.Context,
    file_format: Annotated[Format, typer.Argument(metavar="csv|parquet")],
    segment: Annotated[str, typer.Argument(help="the segment's id")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="a file; default stdout")] = None,
) -> None:
    """Export a segment's members."""
    if output is None and file_format is Format.parquet:
        console.print("[red]a Parquet export needs --output[/red]")
        raise typer.Exit(2)

    async def work(admin: Admin) -> int:
        request = api.ExportSegmentMembersRequest(segment_id=segment, format=FORMATS[file_format])
        written = 0
        sink = output.open("wb") if output else sys.stdout.buffer
        try:
            async for piece in admin.stream(admin.segmentation.ExportSegmentMembers, request, EXPORT_SECONDS):
                sink.write(piece.data)
                written += len(piece.data)
        finally:
            if output:
                sink.close()
            else:
                sink.flush()
        return written

    written = run(ctx.obj, work)
    console.print(f"{written} bytes exported{f' to {output}' if output else ''}")
