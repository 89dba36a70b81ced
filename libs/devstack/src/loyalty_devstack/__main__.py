"""`python -m loyalty_devstack run | services | new-service NAME | migration SERVICE MESSAGE | bench [SCRIPT ...]`."""

import argparse
import asyncio
import os
import sys
from pathlib import Path

from loyalty_devstack.infra import create_database, drop_database, ensure_infra, plain_url
from loyalty_devstack.revisions import new_migration
from loyalty_devstack.scaffold import new_service
from loyalty_runtime.catalogue import PORTS, SERVICES

DATA_DIR = Path(".data")
BENCH_DATABASE = "loyalty_bench"


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


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loyalty-dev")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start PostgreSQL, Redis and every service")
    commands.add_parser("services", help="print the catalogue's service names")
    new = commands.add_parser(
        "new-service", help="scaffold a service (`make service NAME=...` also re-locks)"
    )
    new.add_argument("name")
    new.add_argument("--description", default="", help="one line for the README's table")
    new.add_argument("--root", type=Path, default=Path("."), help="the repository (default: here)")
    migration = commands.add_parser("migration", help="autogenerate the next migration of one service")
    migration.add_argument("service", choices=sorted(PORTS))
    migration.add_argument("message")
    bench = commands.add_parser("bench", help="run the benchmarks under bench/ (all, or the scripts named)")
    bench.add_argument("scripts", nargs="*")
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.command == "services":
        print(*(entry.name for entry in SERVICES))
    elif args.command == "new-service":
        for path in new_service(args.root, args.name, args.description):
            print(f"wrote {path}")
    elif args.command == "migration":
        print(f"wrote {asyncio.run(new_migration(args.service, args.message, DATA_DIR / 'dev'))}")
    elif args.command == "bench":
        asyncio.run(
            run_benchmarks(args.scripts or sorted(str(p) for p in Path("bench").glob("*/bench_*.py")))
        )
    else:
        from loyalty_devstack.run import run

        run(DATA_DIR / "run")


if __name__ == "__main__":
    main()
