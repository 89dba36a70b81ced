"""Codes as CSV (RFC 4180): the export's rows and the import's parsing, pure. An import
row is either a VoucherImport or the reason it is refused; nothing is half-read."""

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.promotion.v1 import voucher_pb2

EXPORT_HEADER = (
    "code",
    "type",
    "state",
    "holder_customer_id",
    "max_redemptions",
    "max_redemptions_per_customer",
    "redemption_count",
    "reserved_count",
    "start_time",
    "end_time",
)
MAX_ROWS = 10_000


def _time(voucher: voucher_pb2.Voucher, name: str) -> str:
    return getattr(voucher, name).ToJsonString() if voucher.HasField(name) else ""


def export_rows(vouchers: list[voucher_pb2.Voucher], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(EXPORT_HEADER)
    for v in vouchers:
        writer.writerow(
            (
                v.code,
                voucher_pb2.VoucherType.Name(v.type).removeprefix("VOUCHER_TYPE_").lower(),
                voucher_pb2.VoucherState.Name(v.state).removeprefix("VOUCHER_STATE_").lower(),
                v.holder_customer_id,
                v.max_redemptions,
                v.max_redemptions_per_customer,
                v.redemption_count,
                v.reserved_count,
                _time(v, "start_time"),
                _time(v, "end_time"),
            )
        )
    return out.getvalue()


@dataclass(frozen=True)
class Row:
    number: int
    code: str
    item: voucher_pb2.VoucherImport | None
    problem: str = ""


class CsvRefused(ValueError):
    pass


def _int(value: str, name: str) -> int:
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"{name} is not a whole number")
    return int(value)


def _stamp(value: str, name: str) -> Timestamp | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} needs a time zone offset")
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def parse_import(text: str) -> list[Row]:
    """Rows of an import, numbered from 1 after the header; CsvRefused for a file that is not
    CSV with a `code` column, or has more than MAX_ROWS rows."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    if not reader.fieldnames or "code" not in [f.strip() for f in reader.fieldnames]:
        raise CsvRefused("the header needs a code column")
    reader.fieldnames = [f.strip() for f in reader.fieldnames]
    rows = []
    try:
        for number, record in enumerate(reader, start=1):
            if number > MAX_ROWS:
                raise CsvRefused(f"at most {MAX_ROWS} rows per call")
            rows.append(_row(number, {k: (v or "").strip() for k, v in record.items() if k}))
    except csv.Error as error:
        raise CsvRefused(f"not CSV: {error}") from None
    return rows


def _row(number: int, record: dict[str, str]) -> Row:
    code = record.get("code", "")
    try:
        item = voucher_pb2.VoucherImport(
            code=code,
            holder_customer_id=record.get("holder_customer_id", ""),
            max_redemptions=_int(record.get("max_redemptions", ""), "max_redemptions"),
            max_redemptions_per_customer=_int(
                record.get("max_redemptions_per_customer", ""), "max_redemptions_per_customer"
            ),
        )
        for name in ("start_time", "end_time"):
            stamp = _stamp(record.get(name, ""), name)
            if stamp is not None:
                getattr(item, name).CopyFrom(stamp)
    except ValueError as error:
        return Row(number, code, None, str(error))
    return Row(number, code, item)
