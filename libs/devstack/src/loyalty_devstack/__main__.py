"""`python -m loyalty_devstack run | migration SERVICE MESSAGE | bench [SCRIPT ...]`."""

import argparse
import asyncio
import importlib
import os
import sys
import uuid
from pathlib import Path

from loyalty_devstack.infra import create_database, drop_database, ensure_infra, plain_url
from loyalty_runtime.migrations import autogenerate_revision

DATA_DIR = Path(".data")
BENCH_DATABASE = "loyalty_bench"


async def new_migration(service: str, message: str) -> None:
    """Autogenerate a revision for `service` against a scratch database."""
    definition = importlib.import_module(f"loyalty_{service}.service").DEFINITION
    infra = ensure_infra(DATA_DIR / "dev")
    scratch = f"loyalty_scratch_{uuid.uuid4().hex[:8]}"
    await create_database(infra, scratch)
    try:
        await autogenerate_revision(
            infra.database_url(scratch), definition.migrations, definition.schema, message
        )
    finally:
        await drop_database(infra, scratch)
        infra.stop()


async def run_benchmarks(scripts: list[str]) -> None:
    """Each benchmark gets a fresh database on the same PostgreSQL and Redis the tests would use."""
    infra = ensure_infra(DATA_DIR / "bench")
    try:
        for script in scripts:
            await create_database(infra, BENCH_DATABASE)
            env = {
                **os.environ,
                "DATABASE_URL": plain_url(infra.postgres_url, BENCH_DATABASE),
                "REDIS_URL": infra.redis_url,
            }
            print(f"== {script}", flush=True)
            process = await asyncio.create_subprocess_exec(sys.executable, script, env=env)
            if await process.wait():
                raise SystemExit(f"{script} failed")
            await drop_database(infra, BENCH_DATABASE)
    finally:
        infra.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="loyalty-dev")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start PostgreSQL, Redis and every service")
    migration = commands.add_parser("migration", help="autogenerate a migration for one service")
    migration.add_argument("service")
    migration.add_argument("message")
    bench = commands.add_parser("bench", help="run the benchmarks under bench/ (all, or the scripts named)")
    bench.add_argument("scripts", nargs="*")
    args = parser.parse_args()
    if args.command == "migration":
        asyncio.run(new_migration(args.service, args.message))
    elif args.command == "bench":
        asyncio.run(
            run_benchmarks(args.scripts or sorted(str(p) for p in Path("bench").glob("*/bench_*.py")))
        )
    else:
        from loyalty_devstack.run import run

        run(DATA_DIR / "run")


if __name__ == "__main__":
    main()
