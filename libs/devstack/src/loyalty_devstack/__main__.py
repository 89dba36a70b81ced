"""`python -m loyalty_devstack run | migration SERVICE MESSAGE`."""

import argparse
import asyncio
import importlib
import uuid
from pathlib import Path

from loyalty_devstack.infra import create_database, drop_database, ensure_infra
from loyalty_runtime.migrations import autogenerate_revision

DATA_DIR = Path(".data")


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="loyalty-dev")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start PostgreSQL, Redis and every service")
    migration = commands.add_parser("migration", help="autogenerate a migration for one service")
    migration.add_argument("service")
    migration.add_argument("message")
    args = parser.parse_args()
    if args.command == "migration":
        asyncio.run(new_migration(args.service, args.message))
    else:
        from loyalty_devstack.run import run

        run(DATA_DIR / "run")


if __name__ == "__main__":
    main()
