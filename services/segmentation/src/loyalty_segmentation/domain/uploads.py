"""Static segment uploads: a CSV file -> the customer ids to add and the rows that cannot be.
Pure: no I/O. A file that is not a usable CSV at all is refused whole; a bad row is reported."""

import csv
import io
from dataclasses import dataclass, field

from loyalty_runtime.errors import InvalidArgument, Reason

MAX_BYTES, MAX_ROWS, MAX_ID = 4_000_000, 100_000, 64
COLUMN = "customer_id"
FIELD = "csv_content"


@dataclass
class ParsedUpload:
    # First row number of each distinct customer id, in file order.
    customers: dict[str, int] = field(default_factory=dict)
    # (row number, customer id, reason); rows are numbered from 1, the header being row 1.
    problems: list[tuple[int, str, str]] = field(default_factory=list)


def _refuse(text: str) -> InvalidArgument:
    return InvalidArgument(Reason.SEGMENT_UPLOAD_INVALID, text, field=FIELD)


def parse(content: bytes) -> ParsedUpload:
    if not content.strip():
        raise _refuse("the file is empty")
    if len(content) > MAX_BYTES:
        raise _refuse(f"a file has at most {MAX_BYTES} bytes")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _refuse("the file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        names = [name.strip().lower() for name in header]
        if COLUMN not in names:
            raise _refuse(f"the header row has no {COLUMN} column")
        column = names.index(COLUMN)
        parsed = ParsedUpload()
        for row in reader:
            _row(parsed, reader.line_num, row, column)
    except csv.Error as error:
        raise _refuse(f"not a CSV file (line {reader.line_num}): {error}") from None
    if not parsed.customers and not parsed.problems:
        raise _refuse("the file has no rows below its header")
    return parsed


def _row(parsed: ParsedUpload, number: int, row: list[str], column: int) -> None:
    if number - 1 > MAX_ROWS:
        raise _refuse(f"a file has at most {MAX_ROWS} rows")
    if not any(cell.strip() for cell in row):
        return  # a blank line, as spreadsheets leave at the end
    customer_id = row[column].strip() if column < len(row) else ""
    if not customer_id:
        parsed.problems.append((number, "", "empty customer id"))
    elif len(customer_id) > MAX_ID:
        parsed.problems.append((number, customer_id[:MAX_ID], "customer id too long"))
    elif customer_id in parsed.customers:
        parsed.problems.append((number, customer_id, "duplicate row"))
    else:
        parsed.customers[customer_id] = number
