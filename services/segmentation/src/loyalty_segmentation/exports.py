"""Exports as files analysts load straight into pandas, Power BI or a warehouse: CSV (UTF-8, header
row) or Parquet (pyarrow), written page by page so a million members never sit in memory at once;
each page read in its own short transaction, in key order (pages stay consistent while membership
changes: a customer joining or leaving between pages is in or out of the file, never twice)."""

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

PAGE = 20_000


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType


class _Sink:
    """Where pyarrow writes: bytes are taken as soon as they are written (streamed, not kept)."""

    closed = False

    def __init__(self) -> None:
        self.pending, self.position = bytearray(), 0

    def write(self, data) -> int:
        self.pending += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        taken = bytes(self.pending)
        self.pending.clear()
        return taken


async def csv_file(columns: Sequence[Column], pages: AsyncIterator[list]) -> AsyncIterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column.name for column in columns])
    async for rows in pages:
        for row in rows:
            writer.writerow([_cell(row[column.name]) for column in columns])
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def _cell(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


async def parquet_file(columns: Sequence[Column], pages: AsyncIterator[list]) -> AsyncIterator[bytes]:
    """One row group per page."""
    schema = pa.schema([(column.name, column.type) for column in columns])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    async for rows in pages:
        table = pa.table(
            {column.name: [row[column.name] for row in rows] for column in columns}, schema=schema
        )
        writer.write_table(table)
        yield sink.take()
    writer.close()
    yield sink.take()


async def keyset_pages(read: Callable[[str, int], Awaitable[list]], key: str) -> AsyncIterator[list]:
    """Pages of `read(after, limit)` until one comes back short."""
    after = ""
    while True:
        rows = await read(after, PAGE)
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        after = rows[-1][key]
