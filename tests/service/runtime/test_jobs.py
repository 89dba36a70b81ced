"""Durable jobs and schedules on the real PostgreSQL: a job exists if and only if its change commits,
runs once however many workers compete, runs again after a worker dies mid-job, waits for its time,
is retried with backoff and then dead; a schedule runs once per period across schedulers."""

import asyncio
import itertools
import logging
import types
from datetime import timedelta

import pytest

from loyalty.profile.v1 import events_pb2
from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.db import Database, as_domain_error
from loyalty_runtime.errors import Unavailable
from loyalty_runtime.jobs import Job, JobWorker, Schedule, Scheduler
from loyalty_runtime.uow import UnitsOfWork, utcnow
from tests.proxy import TcpProxy
from tests.service.runtime.conftest import as_tenant, eventually


def counting(effects, name: str = "count", **options) -> Job:
    async def run(uow, payload: echo_pb2.EchoRequest) -> None:
        await effects.count(uow, payload.text)

    return Job(name, echo_pb2.EchoRequest, run, **options)


async def enqueue(units, name: str, key: str, *, tenant: str = "t1", **options) -> None:
    with as_tenant(tenant):
        async with units.change() as uow:
            await uow.enqueue(name, echo_pb2.EchoRequest(text=key), **options)


def worker(units, schema, *jobs, **options) -> JobWorker:
    return JobWorker(units, schema, jobs, **{"poll_seconds": 0.05, "retry_seconds": 0.05, **options})


async def job_rows(database, schema) -> list:
    async with database.connection() as connection:
        return await connection.fetch(
            f"SELECT name, state, attempts, last_error, finished_at FROM {schema}.jobs"
        )


async def drain(workers, stop_when) -> None:
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stopping)) for w in workers]
    try:
        await eventually(stop_when)
    finally:
        stopping.set()
        await asyncio.gather(*tasks)


async def test_a_job_runs_once_after_its_change_commits_in_the_enqueuers_tenant(
    units, database, schema, effects
):
    await enqueue(units, "count", "a", tenant="t-a")
    await enqueue(units, "count", "b", tenant="t-b")
    jobs = worker(units, schema, counting(effects), principal="svc-jobs")

    assert await jobs.run_one() and await jobs.run_one()
    assert not await jobs.run_one()
    assert await effects.read(database) == {
        ("t-a", "a"): (1, 0, "svc-jobs"),
        ("t-b", "b"): (1, 0, "svc-jobs"),
    }
    assert await job_rows(database, schema) == []  # done, and nothing needs to remember it


async def test_a_job_enqueued_by_a_change_that_rolls_back_never_runs(units, database, schema, effects):
    with as_tenant("t1"), pytest.raises(RuntimeError):
        async with units.change() as uow:
            await uow.enqueue("count", echo_pb2.EchoRequest(text="never"))
            raise RuntimeError("the use case failed")
    assert not await worker(units, schema, counting(effects)).run_one()
    assert await job_rows(database, schema) == []


async def test_competing_workers_never_run_a_job_twice(units, database, schema, effects):
    async def run(uow, payload) -> None:
        await effects.count(uow, "shared")
        await asyncio.sleep(0.001)  # widen the window in which another worker could take it too

    with as_tenant("t1"):
        async with units.change() as uow:
            for n in range(200):
                await uow.enqueue("count", echo_pb2.EchoRequest(text=str(n)))
    workers = [worker(units, schema, Job("count", echo_pb2.EchoRequest, run)) for _ in range(4)]

    async def all_done() -> bool:
        return not await job_rows(database, schema)

    await drain(workers, all_done)
    assert (await effects.read(database))[("t1", "shared")][0] == 200


async def test_a_worker_cancelled_mid_job_rolls_back_and_the_job_runs_again(units, database, schema, effects):
    started, calls = asyncio.Event(), []

    async def run(uow, payload) -> None:
        calls.append(payload.text)
        await effects.count(uow, payload.text)
        if len(calls) == 1:
            started.set()
            await asyncio.sleep(30)  # the worker is stopped here

    job = Job("count", echo_pb2.EchoRequest, run)
    await enqueue(units, "count", "k")
    first = asyncio.create_task(worker(units, schema, job).run_one())
    await started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    assert await worker(units, schema, job).run_one()
    assert calls == ["k", "k"]
    assert (await effects.read(database))[("t1", "k")][0] == 1  # the first attempt's write rolled back


async def test_a_worker_whose_connection_dies_mid_job_lets_it_run_again_without_counting_an_attempt(
    units, database, schema, effects
):
    pids: list[int] = []
    sleeping = asyncio.Event()

    async def run(uow, payload) -> None:
        await effects.count(uow, payload.text)
        if not pids:
            pids.append(uow.connection.get_server_pid())
            sleeping.set()
            await uow.connection.execute("SELECT pg_sleep(30)")

    job = Job("count", echo_pb2.EchoRequest, run, max_attempts=1)
    await enqueue(units, "count", "k", dedupe_key="k")
    first = asyncio.create_task(worker(units, schema, job).run_one())
    await sleeping.wait()
    async with database.connection() as connection:
        await connection.execute("SELECT pg_terminate_backend($1)", pids[0])
    with pytest.raises(Exception) as lost:
        await first
    assert isinstance(as_domain_error(lost.value), Unavailable)  # an outage: the worker's loop backs off

    assert await worker(units, schema, job).run_one()
    assert (await effects.read(database))[("t1", "k")][0] == 1
    [row] = await job_rows(database, schema)
    assert (row["state"], row["attempts"]) == ("done", 1)


async def test_a_delayed_job_waits_for_its_time(units, database, schema, effects):
    await enqueue(units, "count", "later", run_at=utcnow() + timedelta(seconds=0.5))
    jobs = worker(units, schema, counting(effects))

    assert not await jobs.run_one()
    assert 0 < await jobs.seconds_until_due() <= 0.5
    await asyncio.sleep(0.6)
    assert await jobs.seconds_until_due() == 0.0
    assert await jobs.run_one()
    assert (await effects.read(database))[("t1", "later")][0] == 1


async def test_a_failing_job_is_retried_with_growing_delays_then_dead(units, database, schema, caplog):
    loop = asyncio.get_running_loop()
    attempts: list[float] = []

    async def run(uow, payload) -> None:
        attempts.append(loop.time())
        raise ValueError(f"cannot reach {payload.text}")

    await enqueue(units, "flaky", "jane.doe@example.com")
    caplog.set_level(logging.INFO, logger="loyalty.jobs")

    async def dead() -> bool:
        return [r["state"] for r in await job_rows(database, schema)] == ["dead"]

    await drain(
        [worker(units, schema, Job("flaky", echo_pb2.EchoRequest, run, max_attempts=3), retry_seconds=0.2)],
        dead,
    )
    [row] = await job_rows(database, schema)
    assert (row["attempts"], row["last_error"]) == (3, "ValueError")
    assert row["finished_at"] is not None
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.1 and attempts[2] - attempts[1] >= 0.2  # 50-100% of 0.2 s, 0.4 s
    # Only this job's: other servers of the worker run their own jobs in this process.
    [warning] = [
        r
        for r in caplog.records
        if r.getMessage() == "job dead after its last attempt" and r.fields["job"] == "flaky"
    ]
    assert warning.fields["attempts"] == 3 and warning.fields["error_type"] == "ValueError"
    assert "jane" not in caplog.text


async def test_a_payload_that_is_not_the_jobs_message_is_dead_at_once(units, database, schema, effects):
    async with database.connection() as connection:
        await connection.execute(
            f"INSERT INTO {schema}.jobs (tenant_id, name, payload) VALUES ('t1', 'count', '\\xffff'::bytea)"
        )
    assert await worker(units, schema, counting(effects)).run_one()
    [row] = await job_rows(database, schema)
    assert (row["state"], row["attempts"], row["last_error"]) == ("dead", 1, "UndecodablePayload")


async def test_a_dedupe_key_makes_one_job_while_the_first_is_kept(units, database, schema, effects):
    await enqueue(units, "count", "k", dedupe_key="welcome:k")
    await enqueue(units, "count", "k", dedupe_key="welcome:k")
    jobs = worker(units, schema, counting(effects))
    while await jobs.run_one():
        pass
    await enqueue(units, "count", "k", dedupe_key="welcome:k")  # done, and still remembered
    assert not await jobs.run_one()
    assert (await effects.read(database))[("t1", "k")][0] == 1

    assert await worker(units, schema, counting(effects), retention_hours=0).prune() == 1
    await enqueue(units, "count", "k", dedupe_key="welcome:k")
    assert await jobs.run_one()


async def test_jobs_a_worker_does_not_know_are_left_for_one_that_does(units, database, schema, effects):
    await enqueue(units, "introduced-in-the-next-release", "k")
    assert not await worker(units, schema, counting(effects)).run_one()
    [row] = await job_rows(database, schema)
    assert (row["state"], row["attempts"]) == ("queued", 0)


async def test_events_a_job_records_are_written_with_its_commit(units, database, schema):
    async def run(uow, payload) -> None:
        uow.record(events_pb2.CustomerUpdated(customer_id=payload.text), key=payload.text)

    woken = []
    await enqueue(units, "announce", "c1", tenant="t-x")
    jobs = worker(
        units, schema, Job("announce", echo_pb2.EchoRequest, run), on_events=lambda: woken.append(1)
    )
    assert await jobs.run_one()
    async with database.connection() as connection:
        rows = await connection.fetch(f"SELECT tenant_id, event_type, key FROM {schema}.outbox")
    assert [tuple(r) for r in rows] == [("t-x", "customer.updated", "c1")]
    assert woken == [1]


async def test_a_database_outage_is_waited_out_and_counts_no_attempt(
    units, database, database_url, schema, effects, caplog
):
    proxy = await TcpProxy.to(database_url).start(cut=True)
    behind_proxy = Database(proxy.url_for(database_url), pool_size=2)
    await enqueue(units, "count", "k", dedupe_key="k")
    jobs = worker(UnitsOfWork(behind_proxy, schema), schema, counting(effects, max_attempts=1))
    caplog.set_level(logging.WARNING, logger="loyalty.jobs")
    stopping = asyncio.Event()
    running = asyncio.create_task(jobs.run(stopping))
    try:
        await asyncio.sleep(1.0)
        # One line for the outage (other servers of the worker log their own jobs' ends meanwhile).
        outage = "background work failing; backing off"
        assert len([r for r in caplog.records if r.name == "loyalty.jobs" and r.getMessage() == outage]) == 1
        await proxy.restore()
        await eventually(lambda: effects.read(database))
    finally:
        stopping.set()
        await running
        await proxy.close()
        await behind_proxy.close()
    [row] = await job_rows(database, schema)
    assert (row["state"], row["attempts"]) == ("done", 1)


def scheduler(database, schema, schedule: Schedule) -> Scheduler:
    return Scheduler(database, schema, [schedule], types.SimpleNamespace(settings=None))


async def test_a_schedule_runs_once_per_period_across_replicas(database, schema):
    loop = asyncio.get_running_loop()
    runs: list[float] = []

    async def run(resources) -> None:
        runs.append(loop.time())

    schedule = Schedule("tick", lambda _settings: 0.3, run)
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(scheduler(database, schema, schedule).run(stopping)) for _ in range(2)]
    await asyncio.sleep(1.65)
    stopping.set()
    await asyncio.gather(*tasks)

    # At most once per period (at 0, 0.3, ..., 1.5 s: 6 runs, fewer on a loaded machine), never two
    # replicas in the same period (that would make up to 12 runs, some a moment apart). The periods
    # are claimed on the database's clock; a loaded replica may start its run 0.1 s after its claim.
    assert 3 <= len(runs) <= 6
    assert min(b - a for a, b in itertools.pairwise(runs)) >= 0.15


async def test_a_failing_schedule_is_logged_once_and_runs_again_next_period(database, schema, caplog):
    runs: list[int] = []

    async def run(resources) -> None:
        runs.append(1)
        raise OSError("the export bucket is not there")

    caplog.set_level(logging.WARNING, logger="loyalty.jobs")
    stopping = asyncio.Event()
    task = asyncio.create_task(
        scheduler(database, schema, Schedule("export", lambda _s: 0.2, run)).run(stopping)
    )

    async def three_runs() -> bool:
        return len(runs) >= 3

    await eventually(three_runs)
    stopping.set()
    await task
    assert len([r for r in caplog.records if r.name == "loyalty.jobs"]) == 1


async def test_a_schedule_with_no_period_is_off(database, schema):
    async def run(resources) -> None:
        raise AssertionError("an idle schedule ran")

    stopping = asyncio.Event()
    stopping.set()
    off = scheduler(database, schema, Schedule("off", lambda _s: 0, run))
    assert off.schedules == {}
    await off.run(stopping)
