"""Use cases of bulk code generation and import: GenerateVouchers, the job that makes a large batch
chunk by chunk, GetVoucherBatch and ImportVouchers.

Small batches are made inside the request; larger ones by a chain of jobs, each making CHUNK codes
in its own transaction (COPY into a staging table, one INSERT ... ON CONFLICT DO NOTHING into
vouchers), recording the batch's progress and enqueueing the next; a code that collides with one
the tenant has is drawn again, so the batch ends with exactly the count asked for and no
duplicate. A job that dies is retried by the worker with its chunk's effects rolled back."""

import secrets
import uuid

from loyalty.promotion.v1 import jobs_pb2, voucher_pb2
from loyalty_promotion import app_codes, repository_codes as sql
from loyalty_promotion.commands import GenerateVouchers, ImportVouchers, ListVouchers
from loyalty_promotion.domain import codegen, csvcodes, vouchers as rules
from loyalty_promotion.repository_codes import CodeTerms
from loyalty_runtime.errors import InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitOfWork

GENERATE_JOB = "promotion.generate-vouchers"
# Batches up to this size are made within the request.
INLINE_COUNT = 10_000
CHUNK = 100_000
MAX_HOLDERS = 10_000
MAX_IMPORT = 1000
# Draws after collisions before a chunk gives up (a nearly full space; refused up front normally).
MAX_DRAWS = 5


def _batch_not_found() -> NotFound:
    return NotFound(Reason.VOUCHER_BATCH_NOT_FOUND, "no such batch", field="batch_id")


def _refuse_pattern(refused: codegen.PatternRefused) -> InvalidArgument:
    reason = Reason.CODE_PATTERN_TOO_SMALL if refused.too_small else Reason.INVALID_ARGUMENT
    return InvalidArgument(reason, refused.description, field=refused.field)


def _terms(job: jobs_pb2.GenerateVouchersJob, now) -> CodeTerms:
    return CodeTerms(
        job.campaign_id,
        job.batch_id,
        moment(job, "start_time"),
        moment(job, "end_time"),
        job.max_redemptions or 1,
        job.max_redemptions_per_customer,
        dict(job.metadata),
        now,
    )


async def _make(uow: UnitOfWork, job: jobs_pb2.GenerateVouchersJob, count: int, holders: list[str]) -> int:
    """Makes `count` new codes of the job's pattern (one per holder when holders are given)."""
    pattern = codegen.parse(job.pattern.pattern, job.pattern.charset)
    terms = _terms(job, uow.now)
    ignore_dashes = await app_codes.ignoring_dashes(uow)
    wanted: list[str | None] = list(holders) if holders else [None] * count
    for _ in range(MAX_DRAWS):
        codes = [
            rules.normalize(c, ignore_dashes)
            for c in codegen.generate(pattern, len(wanted), secrets.token_bytes)
        ]
        rows = list(zip(codes, wanted, strict=True))
        skipped = set(await sql.copy_codes(uow.connection, uow.tenant, terms, rows))
        wanted = [holder for code, holder in rows if code in skipped]
        if not wanted:
            return count
    raise InvalidArgument(
        Reason.CODE_PATTERN_TOO_SMALL, "the pattern's space is nearly used up", field="pattern.pattern"
    )


async def generate_vouchers(uow: UnitOfWork, command: GenerateVouchers) -> voucher_pb2.VoucherBatch:
    campaign = await app_codes.voucher_campaign(uow, command.campaign_id, "campaign_id")
    holders = list(dict.fromkeys(command.holders))
    count = len(holders) or command.count
    if len(holders) > MAX_HOLDERS:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"up to {MAX_HOLDERS} holders per call", field="holder_customer_ids"
        )
    if not 1 <= count <= codegen.MAX_COUNT:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, f"count is 1 to {codegen.MAX_COUNT}", field="count")
    requested = command.pattern if command.pattern.pattern else campaign.code_pattern
    try:
        pattern = codegen.parse(requested.pattern, requested.charset)
        codegen.check_space(pattern, count)
    except codegen.PatternRefused as refused:
        raise _refuse_pattern(refused) from None
    job = jobs_pb2.GenerateVouchersJob(
        batch_id=str(uuid.uuid4()),
        campaign_id=command.campaign_id,
        pattern=voucher_pb2.CodePattern(pattern=requested.pattern.strip().upper(), charset=pattern.charset),
        remaining=count,
        max_redemptions=command.max_redemptions,
        max_redemptions_per_customer=command.max_redemptions_per_customer,
        metadata=command.metadata,
    )
    for name in ("start_time", "end_time"):
        if command.source.HasField(name):
            getattr(job, name).CopyFrom(getattr(command.source, name))
    if (
        job.HasField("start_time")
        and job.HasField("end_time")
        and job.end_time.ToNanoseconds() <= job.start_time.ToNanoseconds()
    ):
        raise InvalidArgument(
            Reason.INVALID_WINDOW, "the codes' validity ends before it starts", field="end_time"
        )
    batch = voucher_pb2.VoucherBatch(
        batch_id=job.batch_id,
        campaign_id=command.campaign_id,
        kind=voucher_pb2.VOUCHER_BATCH_KIND_GENERATED,
        state=voucher_pb2.VOUCHER_BATCH_STATE_RUNNING,
        requested_count=count,
        create_time=timestamp(uow.now),
    )
    await sql.insert_batch(
        uow.connection, uow.tenant, job.batch_id, command.campaign_id, batch.SerializeToString()
    )
    if holders or count <= INLINE_COUNT:
        batch.created_count = await _make(uow, job, count, holders)
        batch.state = voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED
        batch.complete_time.CopyFrom(timestamp(uow.now))
        await sql.save_batch(uow.connection, uow.tenant, job.batch_id, batch.SerializeToString())
        return batch
    await uow.enqueue(GENERATE_JOB, job, dedupe_key=f"{job.batch_id}:0")
    return batch


async def run_generation(uow: UnitOfWork, job: jobs_pb2.GenerateVouchersJob) -> None:
    """One chunk of a batch (the job worker's run: its own transaction, bound to the tenant)."""
    payload = await sql.get_batch(uow.connection, uow.tenant, job.batch_id, lock=True)
    if payload is None:
        return  # its campaign was deleted with the batch
    batch = voucher_pb2.VoucherBatch.FromString(payload)
    size = min(CHUNK, job.remaining)
    batch.created_count += await _make(uow, job, size, [])
    if job.remaining > size:
        following = jobs_pb2.GenerateVouchersJob()
        following.CopyFrom(job)
        following.remaining, following.chunk = job.remaining - size, job.chunk + 1
        await uow.enqueue(GENERATE_JOB, following, dedupe_key=f"{job.batch_id}:{following.chunk}")
    else:
        batch.state = voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED
        batch.complete_time.CopyFrom(timestamp(uow.now))
    await sql.save_batch(uow.connection, uow.tenant, job.batch_id, batch.SerializeToString())


async def get_batch(uow: UnitOfWork, batch_id: str) -> voucher_pb2.VoucherBatch:
    payload = await sql.get_batch(uow.connection, uow.tenant, batch_id)
    if payload is None:
        raise _batch_not_found()
    return voucher_pb2.VoucherBatch.FromString(payload)


async def import_vouchers(
    uow: UnitOfWork, command: ImportVouchers
) -> tuple[voucher_pb2.VoucherBatch, list[tuple[int, str, str]]]:
    """Valid codes are imported, each rejected one reported (its position, code and why: bad
    characters or values, a duplicate in the request or of a code the tenant has); nothing of a
    rejected row is written."""
    await app_codes.voucher_campaign(uow, command.campaign_id, "campaign_id")
    if not 1 <= len(command.vouchers) <= command.limit:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"1 to {command.limit} codes per call", field="vouchers"
        )
    batch_id = str(uuid.uuid4())
    ignore_dashes = await app_codes.ignoring_dashes(uow)
    rejections: list[tuple[int, str, str]] = list(command.refused)
    seen: set[str] = set()
    created = 0
    for number, item in command.vouchers:
        code = rules.normalize(item.code, ignore_dashes)
        problem = rules.code_problem(code) or ("duplicate code in this request" if code in seen else "")
        seen.add(code)
        if problem:
            rejections.append((number, item.code, problem))
            continue
        requested = voucher_pb2.Voucher(
            code=code,
            type=voucher_pb2.VOUCHER_TYPE_UNIQUE,
            holder_customer_id=item.holder_customer_id,
            max_redemptions=item.max_redemptions,
            max_redemptions_per_customer=item.max_redemptions_per_customer,
            metadata=item.metadata,
        )
        for name in ("start_time", "end_time"):
            if item.HasField(name):
                getattr(requested, name).CopyFrom(getattr(item, name))
        try:
            voucher = app_codes.new_voucher(requested, command.campaign_id, uow.now, batch_id=batch_id)
        except InvalidArgument as refused:
            rejections.append((number, item.code, refused.description))
            continue
        if await sql.insert_voucher(uow.connection, uow.tenant, voucher):
            created += 1
        else:
            rejections.append((number, item.code, "the tenant has this code already"))
    rejections.sort()
    batch = voucher_pb2.VoucherBatch(
        batch_id=batch_id,
        campaign_id=command.campaign_id,
        kind=voucher_pb2.VOUCHER_BATCH_KIND_IMPORTED,
        state=voucher_pb2.VOUCHER_BATCH_STATE_SUCCEEDED,
        requested_count=len(command.vouchers) + len(command.refused),
        created_count=created,
        rejected_count=len(rejections),
        create_time=timestamp(uow.now),
        complete_time=timestamp(uow.now),
    )
    await sql.insert_batch(
        uow.connection, uow.tenant, batch_id, command.campaign_id, batch.SerializeToString()
    )
    return batch, rejections


async def export_vouchers(
    uow: UnitOfWork, campaign_id: str, after: str | None, limit: int
) -> tuple[str, int, str | None]:
    """One page of the campaign's codes as CSV (the header on the first page only)."""
    command = ListVouchers(campaign_id, 0, "", None, after, limit)
    vouchers, last = await app_codes.list_vouchers(uow, command)
    return csvcodes.export_rows(vouchers, header=after is None), len(vouchers), last
