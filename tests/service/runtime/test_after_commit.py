"""uow.after_commit against the real database: the callback runs once the change is committed (it
sees the committed row from another connection), never after a rollback, and a unit of work inside
its caller's transaction refuses one, since it cannot see that commit."""

import pytest

from tests.service.runtime.conftest import as_tenant


async def test_a_callback_runs_after_the_commit_and_never_after_a_rollback(units, database, schema):
    seen = []

    async def look() -> None:
        async with database.connection(5) as other:
            seen.append(await other.fetchval(f"SELECT count(*) FROM {schema}.effects"))

    with as_tenant("t1"):
        async with units.change() as uow:
            await uow.connection.execute(f"INSERT INTO {schema}.effects VALUES ('t1', 'k', 1, 0, 'p')")
            uow.after_commit(look)
            assert seen == []
        assert seen == [1]

        with pytest.raises(RuntimeError, match="rolled back"):
            async with units.change() as uow:
                uow.after_commit(look)
                raise RuntimeError("rolled back")
        assert seen == [1]


async def test_a_unit_of_work_in_its_callers_transaction_refuses_a_callback(units, database):
    async def nothing() -> None:
        return None

    with as_tenant("t1") as call:
        async with database.transaction(5) as connection:
            with pytest.raises(RuntimeError, match="cannot see that commit"):
                async with units.within(connection, call) as uow:
                    uow.after_commit(nothing)
