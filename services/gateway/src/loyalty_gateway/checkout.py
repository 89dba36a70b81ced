"""The checkout: preview (no side effects), reserve, commit (the saga of DESIGN.md step 4), cancel and
returns.

The saga row (gateway.checkouts) is keyed by the till's checkout id and stores the sale as requested,
its fingerprint, the evaluation applied, each step's progress and a lease. Whoever holds the lease
advances the saga and saves after every step; a replica that dies leaves a lease that runs out, and
the next CommitCheckout with the same id (on any replica) resumes where the row says. Every
downstream call is idempotent on the checkout id (fraud and promotion by the id itself, the ledger by
keys derived from it), so re-running a step whose answer was lost is harmless. A concurrent call for
the same id waits for the lease holder and answers what it recorded.

A step refused for good (a downstream's FAILED_PRECONDITION, ...) is compensated: the hold released,
the redemptions rolled back; the checkout ends FAILED and every retry answers the same error. A
downstream that does not answer leaves the saga PROCESSING and the caller is told UNAVAILABLE.
"""

import asyncio
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from loyalty.fraud.v1 import assessment_pb2, fraud_service_pb2 as fraud_api
from loyalty.gateway.v1 import checkout_pb2 as pb, checkout_service_pb2 as api, events_pb2
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api
from loyalty.promotion.v1 import evaluation_pb2, promotion_service_pb2 as promotion_api
from loyalty_gateway import repository
from loyalty_gateway.auth import KeyCaller
from loyalty_gateway.codes import CodeGuard
from loyalty_gateway.customers import Customers
from loyalty_gateway.domain.baskets import check_basket, units_of
from loyalty_gateway.downstream import Downstream, DownstreamError, call
from loyalty_gateway.encoding import checkout_result
from loyalty_gateway.fraud_policy import effective_decision
from loyalty_gateway.tenants import Tenants
from loyalty_runtime import errors
from loyalty_runtime.context import current_call
from loyalty_runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Reason,
)
from loyalty_runtime.protobuf import moment, timestamp
from loyalty_runtime.uow import UnitsOfWork

STEP = pb.SagaStepName
STATE = pb.SagaStepState
CHECKOUT_STATES = {
    "processing": pb.CHECKOUT_STATE_PROCESSING,
    "reserved": pb.CHECKOUT_STATE_RESERVED,
    "committed": pb.CHECKOUT_STATE_COMMITTED,
    "declined": pb.CHECKOUT_STATE_DECLINED,
    "failed": pb.CHECKOUT_STATE_FAILED,
    "cancelled": pb.CHECKOUT_STATE_CANCELLED,
}
FINAL = frozenset({"committed", "declined", "failed", "cancelled"})
DEFAULT_TTL, MAX_TTL = timedelta(minutes=15), timedelta(hours=1)
WAIT_STEP_SECONDS = 0.02


def sale_of(request) -> api.ReserveCheckoutRequest:
    """The sale a Reserve or Commit request describes, as the saga row stores it."""
    sale = api.ReserveCheckoutRequest(
        checkout_id=request.checkout_id,
        customer=request.customer,
        basket=request.basket,
        codes=request.codes,
        points_to_burn=request.points_to_burn,
        signals=request.signals,
        locale=request.locale,
    )
    if isinstance(request, api.ReserveCheckoutRequest) and request.HasField("ttl"):
        sale.ttl.CopyFrom(request.ttl)
    return sale


def reservation_ttl(sale: api.ReserveCheckoutRequest) -> timedelta:
    """How long a reservation holds, as asked (1 s to 1 h; 15 min when not asked)."""
    ttl = sale.ttl.ToTimedelta() if sale.HasField("ttl") else DEFAULT_TTL
    return min(max(ttl, timedelta(seconds=1)), MAX_TTL)


def fingerprint(sale: api.ReserveCheckoutRequest) -> bytes:
    """What must be the same for the same checkout id: who, what, which codes, how many points."""
    core = api.ReserveCheckoutRequest(
        customer=sale.customer, basket=sale.basket, codes=sale.codes, points_to_burn=sale.points_to_burn
    )
    return hashlib.sha256(core.SerializeToString(deterministic=True)).digest()


@dataclass
class Saga:
    """The saga row's mutable part, as the lease holder advances it."""

    checkout_id: str
    owner: str
    state: str
    customer_id: str
    account_id: str
    hold_id: str
    evaluation: bytes | None
    result: bytes | None
    steps: dict
    rewards_withheld: bool
    expire_at: datetime | None
    committed_at: datetime | None
    receipt_number: str
    purchase_at: datetime
    row: dict = field(repr=False)

    @classmethod
    def of(cls, row, owner: str) -> "Saga":
        return cls(
            row["checkout_id"],
            owner,
            *(row[c] for c in repository.SAGA_COLUMNS[:4]),
            row["evaluation"],
            row["result"],
            dict(row["steps"]),
            row["rewards_withheld"],
            row["expire_at"],
            row["committed_at"],
            row["receipt_number"],
            row["purchase_at"],
            row=dict(row),
        )

    def step(self, name: int) -> dict:
        return self.steps.get(STEP.Name(name), {"state": "pending", "attempts": 0})

    def mark(self, name: int, state: str, *, error: errors.DomainError | None = None) -> None:
        step = self.step(name)
        step = {**step, "state": state}
        if error is not None:
            step |= {"reason": error.reason.name, "message": error.description[:200]}
        self.steps[STEP.Name(name)] = step

    def done(self, name: int) -> bool:
        return self.step(name)["state"] in ("succeeded", "skipped")

    def evaluated(self) -> evaluation_pb2.EvaluationResult:
        return evaluation_pb2.EvaluationResult.FromString(self.evaluation or b"")


class Checkouts:
    def __init__(
        self,
        units: UnitsOfWork,
        downstream: Downstream,
        customers: Customers,
        tenants: Tenants,
        code_guard: CodeGuard,
        settings,
    ) -> None:
        self.units = units
        self.code_guard = code_guard
        self.downstream = downstream
        self.customers = customers
        self.tenants = tenants
        self.settings = settings
        self.owner = uuid.uuid4().hex

    # --- preview ---

    async def preview(self, caller: KeyCaller, request: api.PreviewCheckoutRequest) -> pb.CheckoutResult:
        tenant = current_call().tenant_id
        settings = await self.tenants.get(tenant)
        basket = self._basket(caller, request.basket, settings.currency_code)
        context = await self._context(
            tenant, request.customer if request.HasField("customer") else None, settings
        )
        identities = {
            "terminal": caller.terminal_id or f"key:{caller.api_key_id}",
            "customer": context.customer_id if context else "",
            "device": request.signals.device_id,
            "ip": request.signals.ip_address,
        }
        codes = await self.code_guard.check(tenant, identities, request.codes)
        evaluated = await call(
            "promotion",
            self.downstream.promotion.EvaluateBasket,
            promotion_api.EvaluateBasketRequest(
                customer=context.for_promotion(request.locale) if context else None,
                basket=basket,
                codes=codes.allowed,
                points_to_burn=request.points_to_burn if context else 0,
            ),
        )
        result = checkout_result(
            evaluated.result,
            customer_id=context.customer_id if context else "",
            balance_before=context.available_points if context else 0,
            pending=False,
            degraded=context.degraded if context else (),
        )
        codes.report(result)
        await codes.count(result)
        return result

    def _basket(self, caller: KeyCaller, basket, currency: str):
        if caller.store_id and basket.store_id and basket.store_id != caller.store_id:
            raise PermissionDenied(
                Reason.PERMISSION_DENIED, "this terminal belongs to another store", field="basket.store_id"
            )
        check_basket(basket, currency)
        copy = type(basket)()
        copy.CopyFrom(basket)
        copy.store_id = copy.store_id or caller.store_id
        copy.channel = copy.channel or caller.channel
        return copy

    async def _context(self, tenant: str, lookup, settings):
        if lookup is None or lookup.WhichOneof("kind") is None:
            return None
        customer_id = await self.customers.resolve(tenant, lookup)
        return await self.customers.context(tenant, customer_id, settings.default_program_id)

    # --- reserve, commit, cancel ---

    async def reserve(self, caller: KeyCaller, request: api.ReserveCheckoutRequest) -> pb.Checkout:
        return await self._run(caller, sale_of(request), commit=False, request=request)

    async def commit(self, caller: KeyCaller, request: api.CommitCheckoutRequest) -> pb.Checkout:
        return await self._run(caller, sale_of(request), commit=True, request=request)

    async def _run(self, caller: KeyCaller, sale, *, commit: bool, request) -> pb.Checkout:
        if not sale.checkout_id:
            raise errors.InvalidArgument(
                Reason.INVALID_ARGUMENT, "a checkout_id is required", field="checkout_id"
            )
        call_ = current_call()
        settings = await self.tenants.get(call_.tenant_id)
        basket = self._basket(caller, sale.basket, settings.currency_code)
        sale.basket.CopyFrom(basket)
        # A reserve works on a saga not reserved yet; a commit on one not final yet.
        states = ["processing", "reserved"] if commit else ["processing"]
        digest = fingerprint(sale)
        row, saga = await self._open(caller, sale, request, digest, states)
        while saga is None:  # another call has it, or had it and finished
            if row["fingerprint"] != digest:
                raise AlreadyExists(
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    "this checkout_id was used for another sale",
                    field="checkout_id",
                )
            if row["state"] not in states:
                return await self._answer(row)
            row = await self._wait(sale.checkout_id)
            if row["fingerprint"] == digest and row["state"] in states:
                saga = await self._claim(sale.checkout_id, states, digest)
        if commit:  # a till numbers the receipt as it commits its reservation
            saga.receipt_number = request.receipt_number or saga.receipt_number
            saga.purchase_at = moment(request, "purchase_time") or saga.purchase_at
        event = None
        try:
            event = await self._advance(
                saga, sale, settings, commit=commit, expected=getattr(request, "expected_total_payable", None)
            )
        finally:
            row = await self._save(saga, release=True, event=event)
        if event is not None:
            self.customers.forget(call_.tenant_id, saga.customer_id)
        return await self._answer(row)

    async def _open(self, caller: KeyCaller, sale, request, digest: bytes, states: list[str]):
        """(row, saga): a new checkout's row is created with its lease already taken (its saga); an
        existing one is claimed right away when it can be. A commit usually follows its reservation,
        so it tries the claim first, a reserve the insert: the usual call costs one statement."""
        commit = isinstance(request, api.CommitCheckoutRequest)
        purchase_at = moment(request, "purchase_time") if commit else None
        lease = self._lease()
        async with self.units.read() as uow:
            values = {
                "fingerprint": digest,
                "request": sale.SerializeToString(),
                "api_key_id": caller.api_key_id,
                "terminal_id": caller.terminal_id,
                "store_id": sale.basket.store_id,
                "receipt_number": getattr(request, "receipt_number", ""),
                "purchase_at": purchase_at or uow.now,
            }
            taken = (lease, uow.now + timedelta(seconds=self.settings.saga_lease_seconds))

            def insert():
                return repository.open_checkout(
                    uow.connection, uow.tenant, sale.checkout_id, values, taken, uow.now
                )

            def claim():
                return repository.claim_checkout(
                    uow.connection,
                    uow.tenant,
                    sale.checkout_id,
                    taken,
                    uow.now,
                    states=states,
                    fingerprint=digest,
                )

            for attempt in (claim, insert) if commit else (insert, claim):
                row = await attempt()
                if row is not None:
                    return row, Saga.of(row, lease)
            return await repository.checkout(uow.connection, uow.tenant, sale.checkout_id), None

    def _lease(self) -> str:
        """A lease token per call: two calls of one replica never hold a saga's lease together."""
        return f"{self.owner[:16]}{uuid.uuid4().hex[:16]}"

    async def _claim(self, checkout_id: str, states: list[str], digest: bytes | None) -> Saga | None:
        lease = self._lease()
        async with self.units.read() as uow:
            until = uow.now + timedelta(seconds=self.settings.saga_lease_seconds)
            claimed = await repository.claim_checkout(
                uow.connection,
                uow.tenant,
                checkout_id,
                (lease, until),
                uow.now,
                states=states,
                fingerprint=digest,
            )
        return Saga.of(claimed, lease) if claimed else None

    async def _wait(self, checkout_id: str):
        """Another call holds the saga: wait for it to let go, within this call's deadline."""
        while True:
            remaining = current_call().remaining_seconds()
            if remaining is not None and remaining < 2 * WAIT_STEP_SECONDS:
                raise Aborted(Reason.CONCURRENT_MODIFICATION, "this checkout is being processed; retry")
            await asyncio.sleep(WAIT_STEP_SECONDS)
            async with self.units.read() as uow:
                row = await repository.checkout(uow.connection, uow.tenant, checkout_id)
                if row["lease_owner"] is None or row["lease_until"] < uow.now:
                    return row

    def _columns(self, saga: Saga) -> dict:
        return {c: getattr(saga, c) for c in repository.SAGA_COLUMNS}

    async def _save(self, saga: Saga, *, release: bool = False, event=None):
        """Store the saga's progress (with `event`, in one transaction with it: the outbox); the row
        as stored, which is what every answer is encoded from."""
        async with self.units.change() if event is not None else self.units.read() as uow:
            values = self._columns(saga) | {"updated_at": uow.now}
            row = await repository.save_checkout(
                uow.connection, uow.tenant, saga.checkout_id, saga.owner, values, release=release
            )
            if row is None:
                raise Aborted(Reason.CONCURRENT_MODIFICATION, "the checkout was taken over; retry")
            if event is not None:
                uow.record(event, key=saga.customer_id or saga.checkout_id)
        return row

    async def _advance(self, saga: Saga, sale, settings, *, commit: bool, expected):
        """Runs the saga as far as this call takes it; a commit's purchase event (stored with the
        final save) when it committed."""
        if saga.steps.get("failure"):
            await self._compensate(saga, "failed")
            raise _stored_error(saga.steps["failure"])
        if saga.state == "reserved" and saga.expire_at is not None and saga.expire_at <= self.units.clock():
            await self._compensate(saga, "cancelled")
            raise FailedPrecondition(Reason.RESERVATION_EXPIRED, "the reservation expired; reserve again")
        if saga.state == "processing":
            await self._reserve_phase(saga, sale, settings, expected if commit else None)
            if saga.state == "declined" or not commit:
                return None
        else:  # reserved earlier: the commit's expected total is held against what was reserved
            await self._expect(saga, expected)
        return await self._commit_phase(saga, sale)

    async def _step(self, saga: Saga, name: int, work, *, save: bool = True) -> None:
        """Run one step unless done; record how it went (saved at once unless `save` is False: the
        next save is the final one, and the step's call is idempotent, so a crash before it only
        makes the retry call again); compensate a permanent failure."""
        if saga.done(name):
            return
        step = saga.step(name)
        saga.steps[STEP.Name(name)] = step | {"attempts": step.get("attempts", 0) + 1}
        try:
            outcome = await work()
        except DownstreamError as failure:
            await self._failed(saga, name, failure.error, transient=failure.transient)
        except errors.DomainError as refusal:
            await self._failed(saga, name, refusal, transient=False)
        saga.mark(name, "skipped" if outcome is False else "succeeded")
        if save and outcome is not False:  # a skipped step called nothing: a resumed saga decides alike
            await self._save(saga)

    async def _failed(self, saga: Saga, name: int, error: errors.DomainError, *, transient: bool):
        saga.mark(name, "pending" if transient else "failed", error=error)
        if transient:
            await self._save(saga)
            raise error
        await self._refuse(saga, error)

    async def _refuse(self, saga: Saga, error: errors.DomainError):
        """A permanent refusal: remembered (every retry answers it), then compensated."""
        saga.steps["failure"] = {
            "code": error.code.name,
            "reason": error.reason.name,
            "message": error.description[:200],
        }
        await self._save(saga)
        await self._compensate(saga, "failed")
        raise error

    async def _reserve_phase(self, saga: Saga, sale, settings, expected) -> None:
        # The reservation's expiry is fixed before anything is held: each hold below (the codes' uses,
        # the points) is given the same time to live from a later start, so it outlives the
        # expiry the gateway enforces, and a commit the gateway still accepts finds them held.
        saga.expire_at = saga.expire_at or self.units.clock() + reservation_ttl(sale)
        if saga.evaluation is None:
            await self._evaluate(saga, sale, settings)
        result = saga.evaluated()
        await self._step(saga, STEP.SAGA_STEP_NAME_ASSESS_FRAUD, lambda: self._assess(saga, sale, result))
        if saga.state == "declined":
            return
        await self._step(
            saga,
            STEP.SAGA_STEP_NAME_RESERVE_REDEMPTIONS,
            lambda: self._reserve_redemptions(saga, sale, settings),
        )
        await self._expect(saga, expected)
        await self._step(saga, STEP.SAGA_STEP_NAME_HOLD_POINTS, lambda: self._hold(saga, sale))
        saga.state = "reserved"  # saved by the call's final save

    async def _expect(self, saga: Saga, expected) -> None:
        """The till's total from its preview, when it sends one, must be the total reserved."""
        if (
            expected is not None
            and expected.currency_code
            and expected.amount_minor != saga.evaluated().total_payable.amount_minor
        ):
            await self._refuse(
                saga,
                FailedPrecondition(
                    Reason.CONDITIONS_NOT_MET,
                    "the total changed since the preview",
                    field="expected_total_payable",
                ),
            )

    async def _evaluate(self, saga: Saga, sale, settings) -> None:
        tenant = current_call().tenant_id
        try:
            context = await self._context(
                tenant, sale.customer if sale.HasField("customer") else None, settings
            )
            if context is not None:
                saga.customer_id = context.customer_id
                saga.account_id = context.account_id or await self.customers.open_account(
                    context.customer_id, context.program_id
                )
            evaluated = await call(
                "promotion",
                self.downstream.promotion.EvaluateBasket,
                promotion_api.EvaluateBasketRequest(
                    customer=context.for_promotion(sale.locale) if context else None,
                    basket=sale.basket,
                    codes=sale.codes,
                    points_to_burn=sale.points_to_burn if context else 0,
                ),
            )
        except DownstreamError as failure:
            raise failure.error from None
        # Saved with the fraud step's outcome: evaluating again after a crash is harmless.
        saga.evaluation = evaluated.result.SerializeToString()
        saga.row["balance_before"] = context.available_points if context else 0

    async def _assess(self, saga: Saga, sale, result) -> None:
        assessed = await call(
            "fraud",
            self.downstream.fraud.AssessCheckout,
            fraud_api.AssessCheckoutRequest(
                checkout_id=saga.checkout_id,
                customer_id=saga.customer_id,
                basket=sale.basket,
                codes=sale.codes,
                discount_total=result.total_discount,
                points_to_earn=result.points_earning.total_points,
                points_to_burn=result.points_burn.applied_points,
                signals=self._signals(saga, sale),
            ),
        )
        decision = effective_decision(assessed.assessment)  # the tenant's policy when degraded
        if decision == assessment_pb2.DECISION_DECLINE:
            saga.state = "declined"
        saga.rewards_withheld = decision == assessment_pb2.DECISION_REVIEW

    def _signals(self, saga: Saga, sale) -> assessment_pb2.RiskSignals:
        """Raw card, device and IP values are keyed-hashed per tenant before they leave the gateway."""
        tenant = current_call().tenant_id
        secret = self.settings.signal_hash_secret.get_secret_value().encode()

        def digest(value: str) -> str:
            if not value:
                return ""
            return hmac.new(secret, f"{tenant}:{value}".encode(), hashlib.sha256).hexdigest()

        s = sale.signals
        return assessment_pb2.RiskSignals(
            card_hash=digest(s.card_fingerprint),
            device_hash=digest(s.device_id),
            ip_hash=digest(s.ip_address),
            terminal_id=saga.row["terminal_id"],
            store_id=sale.basket.store_id,
            channel=sale.basket.channel,
        )

    async def _reserve_redemptions(self, saga: Saga, sale, settings):
        result = saga.evaluated()
        if not sale.codes and not result.applied_promotions:
            return False
        # Promotion evaluates the basket again as it reserves: with the same customer context as
        # the evaluation (cached by then), or tier offers and the points burn would be dropped.
        context = evaluation_pb2.CustomerContext()
        if saga.customer_id:
            known = await self.customers.context(
                current_call().tenant_id, saga.customer_id, settings.default_program_id
            )
            context = known.for_promotion(sale.locale)
        reserved = await call(
            "promotion",
            self.downstream.promotion.ReserveRedemptions,
            promotion_api.ReserveRedemptionsRequest(
                checkout_id=saga.checkout_id,
                customer=context,
                basket=sale.basket,
                codes=sale.codes,
                points_to_burn=sale.points_to_burn,
            ),
        )
        saga.evaluation = reserved.reservation.result.SerializeToString()
        return None

    async def _hold(self, saga: Saga, sale):
        burn = saga.evaluated().points_burn.applied_points
        if burn <= 0 or not saga.account_id:
            return False
        ttl = Duration()
        ttl.FromTimedelta(reservation_ttl(sale))
        held = await call(
            "ledger",
            self.downstream.ledger.HoldPoints,
            ledger_api.HoldPointsRequest(
                account_id=saga.account_id,
                amount=burn,
                reason="checkout",
                source_ref=saga.checkout_id,
                ttl=ttl,
                idempotency_key=f"gateway:hold:{saga.checkout_id}",
            ),
        )
        saga.hold_id = held.hold.hold_id
        return None

    async def _commit_phase(self, saga: Saga, sale) -> events_pb2.PurchaseCommitted:
        """Both steps are idempotent downstream calls, so only the final save records them."""
        reserved = saga.step(STEP.SAGA_STEP_NAME_RESERVE_REDEMPTIONS)["state"] == "succeeded"
        await self._step(
            saga,
            STEP.SAGA_STEP_NAME_COMMIT_REDEMPTIONS,
            lambda: self._commit_redemptions(saga, reserved),
            save=False,
        )
        settled: list = []
        await self._step(
            saga, STEP.SAGA_STEP_NAME_CAPTURE_POINTS, lambda: self._settle(saga, sale, settled), save=False
        )
        saga.mark(STEP.SAGA_STEP_NAME_EARN_POINTS, saga.step(STEP.SAGA_STEP_NAME_CAPTURE_POINTS)["state"])
        # Receipts and points messages follow from the purchase event, not from a call here.
        saga.mark(STEP.SAGA_STEP_NAME_NOTIFY, "skipped")
        result = saga.evaluated()
        before = saga.row.get("balance_before", 0)
        if settled and settled[0].HasField("account"):
            # The ledger's balance after this checkout's burn and earn, and so the one before it (a
            # commit after a reservation runs in another call than the evaluation that read it).
            earned = 0 if saga.rewards_withheld else result.points_earning.total_points
            before = settled[0].account.balance.available + result.points_burn.applied_points - earned
        receipt = checkout_result(
            result, customer_id=saga.customer_id, balance_before=before, pending=saga.rewards_withheld
        )
        saga.result = receipt.SerializeToString()
        saga.state = "committed"
        saga.committed_at = self.units.clock()
        return self._purchase(saga, sale, result)

    def _purchase(self, saga: Saga, sale, result) -> events_pb2.PurchaseCommitted:
        return events_pb2.PurchaseCommitted(
            checkout_id=saga.checkout_id,
            customer_id=saga.customer_id,
            store_id=sale.basket.store_id,
            terminal_id=saga.row["terminal_id"],
            net_total=result.total_payable,
            basket=sale.basket,
            program_id=result.points_earning.program_id or result.points_burn.program_id,
            points_earned=result.points_earning.total_points,
            points_burned=result.points_burn.applied_points,
            codes=[c.code for c in result.codes if c.accepted],
            rewards_withheld=saga.rewards_withheld,
            purchase_time=timestamp(saga.purchase_at),
            receipt_number=saga.receipt_number,
        )

    async def _commit_redemptions(self, saga: Saga, reserved: bool):
        if not reserved:
            return False
        await call(
            "promotion",
            self.downstream.promotion.CommitRedemptions,
            promotion_api.CommitRedemptionsRequest(checkout_id=saga.checkout_id),
        )
        return None

    async def _settle(self, saga: Saga, sale, settled: list):
        """Burn and earn in one ledger call."""
        result = saga.evaluated()
        if not saga.account_id or (not saga.hold_id and result.points_earning.total_points <= 0):
            return False
        units = {line.line_id: units_of(line) for line in sale.basket.lines}
        lines = [
            ledger_pb2.CheckoutLine(
                line_id=line.line_id,
                quantity=units[line.line_id],
                earn_points=line.points_to_earn,
                burn_points=line.points_burned,
            )
            for line in result.lines
        ]
        request = ledger_api.SettleCheckoutRequest(
            account_id=saga.account_id,
            checkout_id=saga.checkout_id,
            hold_id=saga.hold_id,
            lines=lines,
            reason="checkout",
            idempotency_key=f"gateway:settle:{saga.checkout_id}",
        )
        if saga.hold_id:
            request.burn_amount = result.points_burn.applied_points
        if saga.rewards_withheld:
            request.available_time.CopyFrom(
                timestamp(self.units.clock() + timedelta(days=self.settings.review_hold_days))
            )
        settled.append(await call("ledger", self.downstream.ledger.SettleCheckout, request))
        return None

    async def _compensate(self, saga: Saga, final: str) -> None:
        """Give back what the saga holds: the points hold, the redemptions. Each call is idempotent;
        one that does not answer leaves the saga to be compensated by the next call."""
        try:
            if saga.hold_id and not saga.done(STEP.SAGA_STEP_NAME_CAPTURE_POINTS):
                await self._release(saga)
                saga.mark(STEP.SAGA_STEP_NAME_HOLD_POINTS, "compensated")
            if saga.step(STEP.SAGA_STEP_NAME_RESERVE_REDEMPTIONS)["state"] == "succeeded":
                await call(
                    "promotion",
                    self.downstream.promotion.RollbackRedemptions,
                    promotion_api.RollbackRedemptionsRequest(
                        checkout_id=saga.checkout_id, reason=f"checkout {final}"
                    ),
                )
                saga.mark(STEP.SAGA_STEP_NAME_RESERVE_REDEMPTIONS, "compensated")
        except DownstreamError as failure:
            await self._save(saga)
            raise (
                failure.error
                if failure.transient
                else errors.Unavailable(Reason.UNAVAILABLE, "compensation pending; retry")
            ) from None
        saga.state = final
        self.customers.forget(current_call().tenant_id, saga.customer_id)

    async def _release(self, saga: Saga) -> None:
        try:
            await call(
                "ledger",
                self.downstream.ledger.ReleaseHold,
                ledger_api.ReleaseHoldRequest(
                    hold_id=saga.hold_id, idempotency_key=f"gateway:release:{saga.checkout_id}"
                ),
            )
        except DownstreamError as failure:
            if failure.error.reason is not Reason.HOLD_NOT_ACTIVE:  # voided at its expiry already
                raise

    async def cancel(self, request: api.CancelCheckoutRequest) -> pb.Checkout:
        """Claims the saga only while it is not final (see claim_checkout), so a commit finishing
        first is never compensated afterwards."""
        while True:
            async with self.units.read() as uow:
                row = await repository.checkout(uow.connection, uow.tenant, request.checkout_id)
            if row is None:
                raise NotFound(Reason.CHECKOUT_NOT_FOUND, "no such checkout", field="checkout_id")
            if row["state"] == "committed":
                raise FailedPrecondition(
                    Reason.CHECKOUT_ALREADY_COMMITTED, "a committed checkout is returned, not cancelled"
                )
            if row["state"] in FINAL:
                return await self._answer(row)
            saga = await self._claim(request.checkout_id, ["processing", "reserved"], None)
            if saga is not None:
                break
            await self._wait(request.checkout_id)
        try:
            await self._compensate(saga, "cancelled")
        finally:
            row = await self._save(saga, release=True)
        return await self._answer(row)

    async def get(self, checkout_id: str) -> pb.Checkout:
        async with self.units.read() as uow:
            row = await repository.checkout(uow.connection, uow.tenant, checkout_id)
            returns = await repository.returns_of(uow.connection, uow.tenant, checkout_id) if row else []
        if row is None:
            raise NotFound(Reason.CHECKOUT_NOT_FOUND, "no such checkout", field="checkout_id")
        done = [pb.CheckoutReturn.FromString(r["answer"]) for r in returns if r["answer"]]
        pending = [
            pb.CheckoutReturn(return_id=r["return_id"], state=pb.RETURN_STATE_PROCESSING)
            for r in returns
            if not r["answer"]
        ]
        return encode_checkout(row, done + pending)

    async def _answer(self, row) -> pb.Checkout:
        failure = row["steps"].get("failure")
        if row["state"] == "failed" and failure:
            raise _stored_error(failure)
        return encode_checkout(row)


def _stored_error(failure: dict) -> errors.DomainError:
    kind = next(
        (c for c in errors.DomainError.__subclasses__() if c.code.name == failure["code"]), FailedPrecondition
    )
    return kind(Reason[failure["reason"]], failure["message"])


def encode_checkout(row, returns=()) -> pb.Checkout:
    steps = []
    for name, step in row["steps"].items():
        if name == "failure":
            continue
        steps.append(
            pb.SagaStep(
                name=STEP.Value(name),
                state=STATE.Value(f"SAGA_STEP_STATE_{step['state'].upper()}"),
                attempts=step.get("attempts", 0),
                last_error_reason=f"ERROR_REASON_{step['reason']}" if step.get("reason") else 0,
                last_error_message=step.get("message", ""),
            )
        )
    result = pb.CheckoutResult.FromString(row["result"]) if row["result"] else None
    if result is None and row["evaluation"]:
        evaluation = evaluation_pb2.EvaluationResult.FromString(row["evaluation"])
        result = checkout_result(
            evaluation, customer_id=row["customer_id"], balance_before=0, pending=row["rewards_withheld"]
        )
        result.points.ClearField("balance_before")
        result.points.ClearField("balance_after")
    return pb.Checkout(
        checkout_id=row["checkout_id"],
        state=CHECKOUT_STATES[row["state"]],
        customer_id=row["customer_id"],
        terminal_id=row["terminal_id"],
        store_id=row["store_id"],
        receipt_number=row["receipt_number"],
        result=result,
        steps=steps,
        rewards_withheld=row["rewards_withheld"],
        returns=list(returns),
        purchase_time=timestamp(row["purchase_at"]),
        create_time=timestamp(row["created_at"]),
        commit_time=timestamp(row["committed_at"]),
        update_time=timestamp(row["updated_at"]),
        expire_time=timestamp(row["expire_at"]),
    )
