"""`customer.birthday`: emitted once a year per customer by this service's scheduler, on the day that
is their birthday in their time zone (else the tenant's), for triggers to listen to.

Promotion keeps the least it needs, copied from profile's `customer.created` / `customer.updated`:
the month and day (never the year) and the time zone; `customer.erased` deletes it. Never logged.
The schedule runs once per period across replicas, and each birthday is marked celebrated for its
year by a guarded update in the transaction that records the event, so it is emitted once even if
two runs overlap."""

import logging
from collections import defaultdict

from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.promotion.v1 import events_pb2
from loyalty_promotion import app, repository_birthdays as repository
from loyalty_promotion.domain import birthdays as rules
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.events import Subscription
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

log = logging.getLogger("loyalty.promotion.birthdays")

BATCH = 5_000


async def remember(uow: UnitOfWork, customer_id: str, birthday: profile_events.Birthday | None) -> None:
    """Keep the customer's birthday, or forget it when they have none."""
    if birthday is None or not 1 <= birthday.month <= 12 or not 1 <= birthday.day <= 31:
        await repository.forget(uow.connection, uow.tenant, customer_id)
        return
    await repository.remember(
        uow.connection, uow.tenant, customer_id, birthday.month, birthday.day, birthday.time_zone
    )


async def on_created(uow: UnitOfWork, event: profile_events.CustomerCreated) -> None:
    if event.HasField("birthday"):
        await remember(uow, event.customer_id, event.birthday)


async def on_updated(uow: UnitOfWork, event: profile_events.CustomerUpdated) -> None:
    if {"birth_date", "time_zone"} & set(event.fields):
        await remember(uow, event.customer_id, event.birthday if event.HasField("birthday") else None)


async def on_erased(uow: UnitOfWork, event: profile_events.CustomerErased) -> None:
    await repository.forget(uow.connection, uow.tenant, event.customer_id)


def subscriptions() -> list[Subscription]:
    """customer.created is the triggers' subscription, which calls on_created."""
    return [
        Subscription("profile.events", profile_events.CustomerUpdated, on_updated),
        Subscription("profile.events", profile_events.CustomerErased, on_erased),
    ]


async def emit_due(units: UnitsOfWork) -> int:
    """The schedule's run: `customer.birthday` for every birthday that is today, once a year; one
    transaction per tenant."""
    now = units.clock()
    async with units.database.connection() as connection:
        found = await repository.candidates(connection, rules.candidate_days(now), now.year + 1, BATCH)
        zones = {
            tenant: (await app.read_settings(connection, tenant)).time_zone
            for tenant in {birthday.tenant_id for birthday in found}
        }
    by_tenant: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for birthday, year in rules.due_today(found, now, zones):
        by_tenant[birthday.tenant_id].append((birthday.customer_id, year))
    emitted = 0
    for tenant, due in by_tenant.items():
        token = bind_call(CallContext(tenant, "promotion-birthdays"))
        try:
            async with units.change() as uow:
                emitted += await _celebrate(uow, due)
        except Exception:
            log.exception("emitting birthdays failed", extra={"fields": {"tenant": tenant}})
        finally:
            unbind_call(token)
    return emitted


async def _celebrate(uow: UnitOfWork, due: list[tuple[str, int]]) -> int:
    marked = await repository.celebrate(
        uow.connection, uow.tenant, [customer_id for customer_id, _ in due], [year for _, year in due]
    )
    for customer_id, year in marked:
        uow.record(events_pb2.CustomerBirthday(customer_id=customer_id, year=year), key=customer_id)
    return len(marked)
