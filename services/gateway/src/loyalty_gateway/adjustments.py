"""AdjustPoints: a support or admin user credits or debits a customer's points by hand, within the
tenant's limits (domain/adjustments.py), as a saga over the gateway's database and the ledger:

1. Claim, one transaction: the adjustment is stored under its idempotency key and its points are
   counted against the admin user's day by one guarded statement. Beyond a limit nothing is kept
   and nothing is posted.
2. Post: the customer must exist (profile); the ledger transfers the points from the programme's
   adjustment account to the customer's account (a debit: the other way), keyed by the
   adjustment's id, so however often this step runs, the points move once.
3. Finish, one transaction: the answer is stored with the adjustment and the audit log records
   it (ids and field names; the reason text stays with the ledger's entry).

A downstream that refuses for good (an unknown customer, too few points to debit) undoes the claim
and gives its points back to the day. One that does not answer leaves the claim pending: a retry
with the same key resumes at step 2, and until then its points count against the day (the safe
side). A retry of a finished adjustment returns the first answer."""

import asyncio
import uuid

from loyalty.gateway.v1 import admin_service_pb2 as api
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api
from loyalty.profile.v1 import profile_service_pb2 as profile_api
from loyalty_gateway import admin, repository
from loyalty_gateway.customers import Customers, customer_error
from loyalty_gateway.domain import adjustments
from loyalty_gateway.downstream import Downstream, DownstreamError, call
from loyalty_runtime.errors import DomainError, FailedPrecondition, Reason
from loyalty_runtime.uow import UnitsOfWork, fingerprint, require_key


class Adjustments:
    def __init__(self, units: UnitsOfWork, downstream: Downstream, customers: Customers) -> None:
        self.units = units
        self.downstream = downstream
        self.customers = customers

    async def adjust(self, request: api.AdjustPointsRequest) -> api.AdjustPointsResponse:
        key = require_key(request.idempotency_key)
        adjustments.check_request(request.amount, request.reason, request.customer_id)
        claim, adjusted_today, per_day = await self._claim(request, key)
        if claim["state"] == "posted":
            return api.AdjustPointsResponse.FromString(claim["answer"])
        try:
            account_id, entry_id = await self._post(claim, request.reason)
        except DownstreamError as error:
            if not error.transient:
                async with self.units.change() as uow:
                    await repository.abandon_adjustment(uow.connection, uow.tenant, key)
            raise _refusal(error) from None
        answer = api.AdjustPointsResponse(
            adjustment_id=claim["adjustment_id"].hex,
            entry_id=entry_id,
            account_id=account_id,
            adjusted_today_points=adjusted_today,
            daily_limit_points=per_day,
        )
        return await self._finish(request, key, answer)

    async def _claim(self, request: api.AdjustPointsRequest, key: str):
        """Step 1: the adjustment under `key`, what its admin user adjusted that day, and the day's
        limit."""
        digest = fingerprint(request)
        async with self.units.change() as uow:
            settings = await admin.get_tenant_settings(uow)
            limits = adjustments.Limits.of(
                settings["adjustment_limit_points"], settings["daily_adjustment_limit_points"]
            )
            claim = await repository.claim_adjustment(
                uow.connection,
                uow.tenant,
                key,
                {
                    "adjustment_id": uuid.uuid4(),
                    "fingerprint": digest,
                    "principal": uow.call.principal,
                    "day": adjustments.local_day(uow.now, settings["time_zone"]),
                    "customer_id": request.customer_id,
                    "program_id": request.program_id or settings["default_program_id"],
                    "amount": request.amount,
                    "created_at": uow.now,
                },
            )
            if bytes(claim["fingerprint"]) != digest:
                raise FailedPrecondition(
                    Reason.IDEMPOTENCY_KEY_REUSED, "the key was used for another adjustment"
                )
            if not claim["created"]:
                today = await repository.adjusted_points(
                    uow.connection, uow.tenant, claim["principal"], claim["day"]
                )
                return claim, today, limits.per_day
            points = adjustments.counted_points(request.amount, limits)
            today = await repository.count_adjustment(
                uow.connection, uow.tenant, claim["principal"], claim["day"], points, limits.per_day
            )
            if today is None:
                raise adjustments.day_exhausted(limits, uow.now, settings["time_zone"])
            return claim, today, limits.per_day

    async def _post(self, claim, reason: str) -> tuple[str, str]:
        """Step 2: the customer's account id and the ledger's entry id."""
        d = self.downstream
        customer_id, program_id, amount = claim["customer_id"], claim["program_id"], claim["amount"]
        _, program = await asyncio.gather(
            call("profile", d.profile.GetCustomer, profile_api.GetCustomerRequest(customer_id=customer_id)),
            call("ledger", d.ledger.GetProgram, ledger_api.GetProgramRequest(program_id=program_id)),
        )
        account_id = await self.customers.open_account(customer_id, program_id)
        adjustment_account = program.program.system_accounts.adjustment_account_id
        source, destination = (
            (adjustment_account, account_id) if amount > 0 else (account_id, adjustment_account)
        )
        transferred = await call(
            "ledger",
            d.ledger.TransferPoints,
            ledger_api.TransferPointsRequest(
                source_account_id=source,
                destination_account_id=destination,
                amount=abs(amount),
                reason=reason,
                idempotency_key=f"gateway:adjust:{claim['adjustment_id'].hex}",
            ),
        )
        return account_id, transferred.entry.entry_id

    async def _finish(self, request, key: str, answer: api.AdjustPointsResponse) -> api.AdjustPointsResponse:
        """Step 3; a concurrent retry that finished first has the answer."""
        async with self.units.change() as uow:
            stored = answer.SerializeToString(deterministic=True)
            if await repository.post_adjustment(uow.connection, uow.tenant, key, stored):
                await admin.record_forwarded(uow, "AdjustPoints", request, answer)
            else:
                answer = api.AdjustPointsResponse.FromString(
                    await repository.adjustment_answer(uow.connection, uow.tenant, key)
                )
            self.customers.forget(uow.tenant, request.customer_id)
        return answer


def _refusal(error: DownstreamError) -> DomainError:
    """Another tenant's or an unknown customer looks the same (CUSTOMER_NOT_FOUND)."""
    refusal = customer_error(error) if error.service == "profile" else error
    return refusal.error if isinstance(refusal, DownstreamError) else refusal
