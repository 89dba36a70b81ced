"""ReturnItems: partial or full returns of a committed checkout. The gateway decides which units go
back (checked against what earlier returns took, under the checkout row's lock) and records the
return before any call; each service then reverses its own part from what it recorded at commit:
the ledger the points earned and burned per line (SettleCheckout's lines), promotion the redemptions.
The refund is each line's final price in proportion to the units, by cumulative floors, so returning
every unit refunds exactly what was paid. A retry with the same return id finishes and answers the
same; the same return id with other lines is refused."""

import hashlib

from loyalty.gateway.v1 import checkout_pb2 as pb, checkout_service_pb2 as api, events_pb2
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api
from loyalty.promotion.v1 import promotion_service_pb2 as promotion_api, redemption_pb2
from loyalty_gateway import repository
from loyalty_gateway.customers import Customers
from loyalty_gateway.domain.baskets import share, units_of
from loyalty_gateway.downstream import Downstream, call
from loyalty_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Reason
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitsOfWork


def _fingerprint(request: api.ReturnItemsRequest) -> bytes:
    core = api.ReturnItemsRequest(lines=request.lines, full_return=request.full_return)
    return hashlib.sha256(core.SerializeToString(deterministic=True)).digest()


def _requested(
    request: api.ReturnItemsRequest, units: dict[str, int], returned: dict[str, int]
) -> dict[str, int]:
    if request.full_return:
        if request.lines:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "a full return lists no lines", field="lines")
        wanted = {line: units[line] - returned.get(line, 0) for line in units}
        wanted = {line: n for line, n in wanted.items() if n > 0}
    else:
        wanted = {}
        for n, line in enumerate(request.lines):
            if line.line_id not in units:
                raise InvalidArgument(
                    Reason.CHECKOUT_LINE_NOT_FOUND,
                    "no such line in the checkout",
                    field=f"lines[{n}].line_id",
                )
            count = line.quantity or line.quantity_milli
            if count <= 0 or line.line_id in wanted:
                raise InvalidArgument(
                    Reason.INVALID_ARGUMENT, "each line once, with a positive quantity", field=f"lines[{n}]"
                )
            wanted[line.line_id] = count
    if not wanted:
        raise InvalidArgument(Reason.RETURN_EXCEEDS_LINE, "nothing is left to return", field="lines")
    for line, count in wanted.items():
        if count > units[line] - returned.get(line, 0):
            raise InvalidArgument(
                Reason.RETURN_EXCEEDS_LINE, f"more units of {line} than are left to return", field="lines"
            )
    return wanted


class Returns:
    def __init__(self, units: UnitsOfWork, downstream: Downstream, customers: Customers) -> None:
        self.units = units
        self.downstream = downstream
        self.customers = customers

    async def record(self, request: api.ReturnItemsRequest):
        if not request.return_id:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "a return_id is required", field="return_id")
        async with self.units.change() as uow:
            row = await repository.lock_checkout(uow.connection, uow.tenant, request.checkout_id)
            if row is None:
                raise NotFound(Reason.CHECKOUT_NOT_FOUND, "no such checkout", field="checkout_id")
            if row["state"] != "committed":
                raise FailedPrecondition(
                    Reason.CHECKOUT_STATE_CONFLICT, "only a committed checkout can be returned"
                )
            earlier = await repository.returns_of(uow.connection, uow.tenant, request.checkout_id)
            mine = next((r for r in earlier if r["return_id"] == request.return_id), None)
            if mine is not None:
                if bytes(mine["fingerprint"]) != _fingerprint(request):
                    raise AlreadyExists(
                        Reason.IDEMPOTENCY_KEY_REUSED,
                        "this return_id was used for other lines",
                        field="return_id",
                    )
                return row, mine
            sale = api.ReserveCheckoutRequest.FromString(row["request"])
            units = {line.line_id: units_of(line) for line in sale.basket.lines}
            returned: dict[str, int] = {}
            for other in earlier:
                for line, count in other["units"]["lines"].items():
                    returned[line] = returned.get(line, 0) + count
            wanted = _requested(request, units, returned)
            recorded = {
                "lines": wanted,
                "before": {line: returned.get(line, 0) for line in wanted},
                "units": units,
            }
            mine = await repository.open_return(
                uow.connection,
                uow.tenant,
                request.checkout_id,
                request.return_id,
                _fingerprint(request),
                recorded,
                uow.now,
            )
        return row, mine

    async def finish(self, checkout_row, return_row) -> pb.CheckoutReturn:
        if return_row["state"] == "completed":
            return pb.CheckoutReturn.FromString(return_row["answer"])
        recorded = return_row["units"]
        wanted, before, units = recorded["lines"], recorded["before"], recorded["units"]
        steps = checkout_row["steps"]
        points: dict[str, tuple[int, int]] = {}
        if steps.get("SAGA_STEP_NAME_CAPTURE_POINTS", {}).get("state") == "succeeded":
            returned = await call(
                "ledger",
                self.downstream.ledger.ReturnCheckoutLines,
                ledger_api.ReturnCheckoutLinesRequest(
                    checkout_id=checkout_row["checkout_id"],
                    lines=[
                        ledger_pb2.CheckoutLineReturn(line_id=line, quantity=n) for line, n in wanted.items()
                    ],
                    reason="return",
                    idempotency_key=f"gateway:return:{checkout_row['checkout_id']}:{return_row['return_id']}",
                ),
            )
            points = {line.line_id: (line.earn_reversed, line.burn_restored) for line in returned.lines}
        reinstated: list[str] = []
        if steps.get("SAGA_STEP_NAME_RESERVE_REDEMPTIONS", {}).get("state") == "succeeded":
            reversed_ = await call(
                "promotion",
                self.downstream.promotion.ReverseRedemptions,
                promotion_api.ReverseRedemptionsRequest(
                    checkout_id=checkout_row["checkout_id"],
                    return_id=return_row["return_id"],
                    lines=[redemption_pb2.ReturnLine(line_id=line, quantity=n) for line, n in wanted.items()],
                ),
            )
            # Promotion names the vouchers given back by id.
            reinstated = list(reversed_.reversal.reinstated_voucher_ids)
        answer = self._answer(checkout_row, return_row, wanted, before, units, points, reinstated)
        async with self.units.change() as uow:
            completed = await repository.complete_return(
                uow.connection,
                uow.tenant,
                checkout_row["checkout_id"],
                return_row["return_id"],
                answer.SerializeToString(),
            )
            if completed:  # not already by a concurrent retry: publish once
                event = events_pb2.CheckoutReturned(
                    checkout_id=checkout_row["checkout_id"],
                    return_id=return_row["return_id"],
                    customer_id=checkout_row["customer_id"],
                    refunded_total=answer.refund_amount,
                    points_reversed=answer.points_reversed,
                    points_refunded=answer.points_refunded,
                    return_time=timestamp(uow.now),
                )
                uow.record(event, key=checkout_row["customer_id"] or checkout_row["checkout_id"])
        self.customers.forget(uow.tenant, checkout_row["customer_id"])  # its balance changed
        return answer

    def _answer(
        self, checkout_row, return_row, wanted, before, units, points, reinstated
    ) -> pb.CheckoutReturn:
        result = pb.CheckoutResult.FromString(checkout_row["result"])
        currency = result.total_payable.currency_code
        lines, refund = [], 0
        for line in result.lines:
            if line.line_id not in wanted:
                continue
            n, prior, total = wanted[line.line_id], before[line.line_id], units[line.line_id]
            money = share(line.final_total.amount_minor, prior + n, prior, total)
            refund += money
            earn, burn = points.get(line.line_id, (0, 0))
            lines.append(
                pb.ReturnedLine(
                    line_id=line.line_id,
                    quantity=n,
                    refund_amount={"currency_code": currency, "amount_minor": money},
                    points_reversed=earn,
                    points_refunded=burn,
                )
            )
        return pb.CheckoutReturn(
            return_id=return_row["return_id"],
            state=pb.RETURN_STATE_COMPLETED,
            lines=lines,
            refund_amount={"currency_code": currency, "amount_minor": refund},
            points_reversed=sum(line.points_reversed for line in lines),
            points_refunded=sum(line.points_refunded for line in lines),
            reinstated_codes=reinstated,
            create_time=timestamp(return_row["created_at"]),
        )
